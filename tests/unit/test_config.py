"""config.ini: every SPEC key, defaults, and one-line errors naming file, section and key."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from conftest import ROOT, Server

from inbound.config import SCHEMA, ConfigError, load


def test_the_shipped_config_lists_every_key_commented_at_its_default() -> None:
    text = (ROOT / "config.ini").read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key, (_, default) in keys.items():
            if key == "domains":  # required: the one key set, to the example domain
                assert "\ndomains = example.org\n" in text
                continue
            assert f";{key} = {default}".rstrip() in text, f"[{section}] {key}"


def test_the_shipped_config_loads() -> None:
    config = load(str(ROOT / "config.ini"))
    assert config.server.domains == ("example.org",)
    assert config.server.max_message_size == 26214400
    assert config.handlers.dir == str(ROOT / "handlers")
    assert config.checks.dmarc_reject is False
    assert config.reply.transport == "sendmail"


def test_relative_paths_are_relative_to_the_config_file(server: Server) -> None:
    config = load(str(server.config))
    assert config.server.spool == str(server.root / "spool")
    assert config.handlers.dir == str(server.root / "handlers")


def test_dns_servers_take_host_and_port(server: Server) -> None:
    server.write_config(checks={"dns_servers": "127.0.0.1:5353, [::1]:53, 192.0.2.53"})
    assert load(str(server.config)).checks.dns_servers == (
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("192.0.2.53", 53),
    )


def test_handler_sections_and_routes_are_read(server: Server) -> None:
    server.write_config(routes={"*@lists.example.org": "sink"}, handler__svnsync={"mirror": "file:///m"})
    config = load(str(server.config))
    assert config.routes == (("*@lists.example.org", "sink"),)
    assert config.settings_for("svnsync") == {"mirror": "file:///m"}


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("server", "max_recipients", "many", "[server] max_recipients: expected an integer"),
        ("server", "colour", "blue", "[server] colour: unknown key"),
        ("checks", "spf", "perhaps", "[checks] spf: expected yes or no"),
        ("checks", "dns_servers", "127.0.0.1:99999", "[checks] dns_servers: expected HOST or HOST:PORT"),
        ("reply", "transport", "pigeon", "[reply] transport: expected one of sendmail, smtp, mx, outbox"),
        ("handlers", "timeout", "-1", "[handlers] timeout: expected a finite number >= 0"),
        ("handlers", "timeout", "inf", "[handlers] timeout: expected a finite number >= 0"),
        ("server", "command_timeout", "0", "[server] command_timeout: expected a number of seconds > 0"),
        ("server", "command_timeout", "1e400", "[server] command_timeout: expected a finite number"),
        ("server", "max_recipients", "\u00b2", "[server] max_recipients: expected an integer"),
        ("server", "domains", "example.org example.net", "[server] domains: expected domain names"),
        ("server", "hostname", "mx\n  injected", "[server] hostname: expected a host name"),
        ("checks", "dns_servers", "127.0.0.1:\u00b2", "[checks] dns_servers: expected HOST or HOST:PORT"),
        ("reply", "smtp_port", "70000", "[reply] smtp_port: expected a port number 1-65535"),
        ("nonsense", "a", "b", "[nonsense]: unknown section"),
    ],
)
def test_bad_values_give_one_line_naming_file_section_and_key(
    server: Server, section: str, key: str, value: str, message: str
) -> None:
    parser = configparser.ConfigParser()
    parser.read(server.config)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, key, value)
    with open(server.config, "w") as f:
        parser.write(f)
    with pytest.raises(ConfigError) as error:
        load(str(server.config))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(str(server.config) + ": ")
    assert message in text


def test_missing_domains_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[server]\nhostname = x\n")
    with pytest.raises(ConfigError, match=r"\[server\] domains"):
        load(str(path))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "absent.ini"))


def test_config_comes_from_the_environment_when_not_given(server: Server) -> None:
    import os
    import subprocess
    import sys

    from conftest import MAILSERVER

    result = subprocess.run(
        [sys.executable, str(MAILSERVER), "check"],
        capture_output=True,
        env={**os.environ, "MAILSERVER_CONFIG": str(server.config)},
    )
    assert result.returncode == 0, result.stderr
    assert f"config:   {server.config}".encode() in result.stdout


def test_check_exits_78_with_file_section_and_key_on_bad_config(server: Server) -> None:
    server.write_config(server={"max_message_size": "big"})
    result = server.run("check")
    assert result.returncode == 78
    assert result.stderr.decode().count("\n") == 1
    assert "[server] max_message_size" in result.stderr.decode()


def test_usage_errors_exit_64(server: Server) -> None:
    result = server.run("bogus-command")
    assert result.returncode == 64
    assert b"usage:" in result.stderr


def test_check_notes_a_script_without_the_executable_bit(server: Server) -> None:
    script = server.handlers / "forgot"
    script.write_text("#!/bin/sh\nexit 0\n")
    result = server.run("check")
    assert result.returncode == 0
    assert (
        f"note: {script}: a script without the executable bit is not a handler (chmod +x)"
        in result.stderr.decode()
    )


def test_an_unwritable_spool_is_one_line_not_a_traceback(server: Server) -> None:
    (server.root / "spool").rmdir()
    (server.root / "spool").write_text("a file where the spool folder should be")
    eml = server.root / "m.eml"
    eml.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    result = server.run("deliver", "--to", "sink@example.org", str(eml))
    assert result.returncode == 74
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode().count("\n") == 1
