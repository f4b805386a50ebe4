"""mailserver.py finds its packages under `-I -S` (no site): the interpreter's own venv
wherever it lives, or the checkout's .venv when another interpreter of the same version
runs it; never the base interpreter's site-packages, which could shadow pinned packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import MAILSERVER, ROOT

SHOW_PATH = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('probe', sys.argv[1]); "
    "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
    "import dkim; print(repr(sys.path)); print(dkim.__file__)"
)
BASE_SITE = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"]


def venv_of_tests() -> Path:
    bindir = Path(sys.executable).parent
    for candidate in (bindir, bindir.parent):
        if (candidate / "pyvenv.cfg").exists():
            return candidate
    pytest.skip("the tests do not run in a venv")


def probe(python: str, script: Path) -> tuple[list[str], str]:
    result = subprocess.run(
        [python, "-I", "-S", "-c", SHOW_PATH, str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    path_line, dkim_file = result.stdout.splitlines()[-2:]
    return eval(path_line), dkim_file  # noqa: S307 - our own repr()


def test_a_venv_anywhere_is_found_from_its_own_interpreter(tmp_path: Path) -> None:
    venv = venv_of_tests()
    checkout = tmp_path / "elsewhere"  # a copy of the code with no .venv beside it
    checkout.mkdir()
    shutil.copy(MAILSERVER, checkout / "mailserver.py")
    shutil.copytree(ROOT / "inbound", checkout / "inbound", ignore=shutil.ignore_patterns("__pycache__"))
    path, dkim_file = probe(str(venv / "bin" / "python"), checkout / "mailserver.py")
    assert dkim_file.startswith(str(venv))
    assert BASE_SITE not in path


def test_the_checkouts_venv_is_found_by_another_interpreter_of_the_same_version() -> None:
    venv = venv_of_tests()
    if venv.resolve() != (ROOT / ".venv").resolve():
        pytest.skip("the tests' venv is not the checkout's .venv")
    base = getattr(sys, "_base_executable", "") or shutil.which(
        f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    if not base or not os.path.exists(base):
        pytest.skip("no base interpreter of this version")
    path, dkim_file = probe(base, MAILSERVER)
    assert str(ROOT / ".venv") in "".join(path) and dkim_file.startswith(str(ROOT / ".venv"))
    assert BASE_SITE not in path
