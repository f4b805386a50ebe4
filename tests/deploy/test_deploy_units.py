"""The shipped deployment files say what docs/deploy.md promises: the systemd units (parsed,
and checked by `systemd-analyze verify` where it can run) and the xinetd service file."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import INSTALLED_CONFIG, INSTALLED_SCRIPT, REPO, SHIPPED_XINETD, parse_xinetd

SYSTEMD = REPO / "systemd"
UNITS = ["mailserver.socket", "mailserver@.service", "mailserver-queue.service", "mailserver-queue.timer"]
VENV_PYTHON = "/opt/mailserver/.venv/bin/python3"
SPOOL = "/var/spool/mailserver"


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}: systemd keys may repeat, so each keeps a list."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{name}: {line!r} outside a section"
        assert "=" in line, f"{name}: not key=value: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def setting(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key} is not set"
    return values[-1]


def test_every_unit_parses_as_an_ini_file() -> None:
    for name in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string((SYSTEMD / name).read_text(), source=name)
        assert parser.sections(), name


def test_socket_accepts_one_process_per_connection_on_port_25_with_limits() -> None:
    socket = read_unit("mailserver.socket")
    assert setting(socket, "Socket", "ListenStream") == "25"
    assert setting(socket, "Socket", "Accept") == "yes"
    total = int(setting(socket, "Socket", "MaxConnections"))
    per_source = int(setting(socket, "Socket", "MaxConnectionsPerSource"))
    assert 10 <= per_source < total
    assert setting(socket, "Install", "WantedBy") == "sockets.target"


def test_socket_trigger_limit_cannot_take_port_25_down_for_good() -> None:
    # systemd's default trigger limit (200 per 2 s for Accept=yes) leaves the socket failed
    # until restarted; it must be off or far above what MaxConnections lets through.
    socket = read_unit("mailserver.socket")["Socket"]
    interval = socket.get("TriggerLimitIntervalSec", ["2s"])[-1]
    burst = int(socket.get("TriggerLimitBurst", ["200"])[-1])
    assert interval in ("0", "0s") or burst >= 1000


def test_session_service_speaks_smtp_on_the_socket_and_logs_to_the_journal() -> None:
    service = read_unit("mailserver@.service")
    assert setting(service, "Service", "StandardInput") == "socket"
    assert setting(service, "Service", "StandardOutput") == "socket"
    assert setting(service, "Service", "StandardError") == "journal"  # never the socket


def test_session_service_runs_the_fast_start_command_line() -> None:
    service = read_unit("mailserver@.service")
    assert setting(service, "Service", "ExecStart").split() == [
        VENV_PYTHON,
        "-I",
        "-S",
        INSTALLED_SCRIPT,
        "--config",
        INSTALLED_CONFIG,
    ]


def test_session_service_runs_as_the_unprivileged_mailserver_user() -> None:
    service = read_unit("mailserver@.service")["Service"]
    assert service["User"] == ["mailserver"]
    assert service["Group"] == ["mailserver"]
    assert "DynamicUser" not in service  # a dedicated user owns the spool (see the unit's comment)


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("name", ["mailserver@.service", "mailserver-queue.service"])
def test_services_are_hardened_and_may_write_only_the_spool(name: str) -> None:
    service = read_unit(name)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key, [None])[-1] == value, f"{name}: {key}"
    assert service["ReadWritePaths"] == [SPOOL]
    for writable in ("StateDirectory", "CacheDirectory", "LogsDirectory", "ReadWriteDirectories"):
        assert writable not in service, f"{name}: {writable} makes more than the spool writable"
    families = set(service["RestrictAddressFamilies"][-1].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}  # replies, DNS, svnsync need the network
    assert "PrivateNetwork" not in service
    assert "MemoryDenyWriteExecute" not in service  # would break JIT runtimes of handler programs


def test_session_service_has_a_wall_clock_bound() -> None:
    service = read_unit("mailserver@.service")
    bound = setting(service, "Service", "RuntimeMaxSec")
    assert bound not in ("", "infinity")


def test_failed_sessions_do_not_pile_up_as_failed_units() -> None:
    assert setting(read_unit("mailserver@.service"), "Unit", "CollectMode") == "inactive-or-failed"


def test_queue_service_retries_as_the_same_user_with_the_same_command() -> None:
    queue = read_unit("mailserver-queue.service")
    session = read_unit("mailserver@.service")
    assert setting(queue, "Service", "Type") == "oneshot"
    command = setting(queue, "Service", "ExecStart").split()
    assert command[:4] == [VENV_PYTHON, "-I", "-S", INSTALLED_SCRIPT]
    assert command[4:6] == ["queue", "--run"]
    assert command[6:] == ["--config", INSTALLED_CONFIG]
    for key in ("User", "Group"):
        assert setting(queue, "Service", key) == setting(session, "Service", key)


def test_queue_timer_runs_every_few_minutes() -> None:
    timer = read_unit("mailserver-queue.timer")
    interval = setting(timer, "Timer", "OnUnitInactiveSec")
    assert interval.endswith("min") and 1 <= int(interval[:-3]) <= 15
    assert setting(timer, "Install", "WantedBy") == "timers.target"


def verify(analyze: str, folder: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", *(str(folder / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def analyze(tmp_path_factory: pytest.TempPathFactory) -> str:
    """systemd-analyze, when `verify` works in this container (a unit that is surely right
    tells); else the tests that need it are skipped with the reason."""
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.service").write_text(f"[Service]\nType=oneshot\nExecStart={sys.executable} -c pass\n")
    probe = verify(path, folder, ["probe.service"])
    if probe.returncode != 0 or probe.stderr.strip():
        pytest.skip(f"systemd-analyze verify cannot run here: {probe.stderr.strip()[:300]}")
    return path


def copy_units(folder: Path) -> None:
    """The shipped units, with the interpreter they name (not installed here) swapped for ours."""
    for name in UNITS:
        (folder / name).write_text((SYSTEMD / name).read_text().replace(VENV_PYTHON, sys.executable))


def test_systemd_analyze_verify_accepts_the_units(analyze: str, tmp_path: Path) -> None:
    copy_units(tmp_path)
    result = verify(analyze, tmp_path, UNITS)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", output  # unknown keys and bad values are only warnings: none allowed


def test_systemd_analyze_verify_would_catch_a_typo(analyze: str, tmp_path: Path) -> None:
    copy_units(tmp_path)
    timer = tmp_path / "mailserver-queue.timer"
    timer.write_text(timer.read_text().replace("OnUnitInactiveSec", "OnUnitInactivSec"))
    result = verify(analyze, tmp_path, ["mailserver-queue.timer"])
    assert "OnUnitInactivSec" in result.stderr


# -- xinetd ---------------------------------------------------------------------------


def xinetd_service() -> tuple[str, dict[str, str]]:
    return parse_xinetd(SHIPPED_XINETD.read_text())


def test_xinetd_service_is_smtp_on_port_25_one_process_per_connection() -> None:
    name, attrs = xinetd_service()
    assert name == "smtp"
    assert attrs["port"] == "25"
    assert attrs["socket_type"] == "stream"
    assert attrs["protocol"] == "tcp"
    assert attrs["wait"] == "no"
    assert attrs["disable"] == "no"


def test_xinetd_service_runs_unprivileged_with_the_fast_start_command_line() -> None:
    _, attrs = xinetd_service()
    assert attrs["user"] == "mailserver" and attrs["group"] == "mailserver"
    assert attrs["server"] == VENV_PYTHON
    assert attrs["server_args"].split() == ["-I", "-S", INSTALLED_SCRIPT, "--config", INSTALLED_CONFIG]


def test_xinetd_service_limits_sessions_and_survives_a_burst() -> None:
    _, attrs = xinetd_service()
    instances, per_source = int(attrs["instances"]), int(attrs["per_source"])
    assert 10 <= per_source < instances
    rate, pause = (int(n) for n in attrs["cps"].split())
    assert rate >= 100, "a burst above cps disables the whole service"
    assert pause <= 5, "...for this many seconds"


def test_xinetd_service_logs_sessions_and_failures_and_listens_dual_stack() -> None:
    _, attrs = xinetd_service()
    assert {"PID", "HOST", "DURATION", "EXIT"} <= set(attrs["log_on_success"].split())
    assert {"HOST", "ATTEMPT"} <= set(attrs["log_on_failure"].split())
    assert set(attrs["flags"].split()) == {"REUSE", "IPv6"}


def test_xinetd_service_gives_handlers_a_clean_environment() -> None:
    _, attrs = xinetd_service()
    assert attrs["passenv"] == ""
    env = dict(item.split("=", 1) for item in attrs["env"].split())
    assert env["HOME"] == SPOOL
    # xinetd passes a bare argv[0] ("python3") and Python locates itself (so its stdlib and
    # the venv) by looking that up in PATH: the venv's bin must come first.
    path = env["PATH"].split(":")
    assert path[0] == str(Path(VENV_PYTHON).parent) and "/usr/bin" in path


def test_every_xinetd_setting_is_commented() -> None:
    lines = SHIPPED_XINETD.read_text().splitlines()
    for number, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith("#") or text in ("{", "}"):
            continue
        assert lines[number - 1].strip().startswith("#"), f"line {number + 1} has no comment above: {text}"


def test_xinetd_and_systemd_install_the_same_way() -> None:
    _, attrs = xinetd_service()
    service = read_unit("mailserver@.service")
    assert setting(service, "Service", "ExecStart").split() == [
        attrs["server"],
        *attrs["server_args"].split(),
    ]
    assert setting(service, "Service", "User") == attrs["user"]
    socket = read_unit("mailserver.socket")
    assert setting(socket, "Socket", "MaxConnections") == attrs["instances"]
    assert setting(socket, "Socket", "MaxConnectionsPerSource") == attrs["per_source"]
