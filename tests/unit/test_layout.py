"""The house by stage: the package map matches the tree, imports flow one way, rooms stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "inbound"
MAX_LINES = 450  # "~400": the Session class, one method per verb, is the one near it


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every inbound module NAME imports at run time (function-level too; TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # names for type checkers only
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("inbound"):
                    for alias in child.names:
                        candidate = f"{base}.{alias.name}"
                        found.add(candidate if candidate in modules() else base)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("inbound"))
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    done: set[str] = set()

    def walk(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = trail[trail.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in graph.get(name, ()):
            # a package's __init__ is what a submodule import runs first; it is not a cycle
            if name.startswith(target + "."):
                continue
            walk(target, [*trail, name])
        done.add(name)

    for name in graph:
        walk(name, [])


def test_the_envelope_knows_nothing_later_in_the_flow() -> None:
    later = {"inbound.autoreply", "inbound.delivery", "inbound.policy", "inbound.inetd", "inbound.cli"}
    imported = imports_of("inbound.envelope", PACKAGE / "envelope.py")
    assert not {m for m in imported if any(m == p or m.startswith(p + ".") for p in later)}


def test_no_module_is_a_big_room() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def test_every_module_starts_with_its_docstring() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in modules().values()
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def test_the_package_map_names_every_room() -> None:
    text = (PACKAGE / "__init__.py").read_text()
    listed = set(re.findall(r"^\s{4}([a-z_/]+(?:\.py|/))", text, re.MULTILINE))
    rooms = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py" and p.name != "__init__.py"}
    rooms |= {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert listed == rooms


def test_subpackage_inits_import_almost_nothing() -> None:
    # the inetd hot path pays for every __init__ it passes through
    for sub in ("smtp", "delivery", "cli"):
        tree = ast.parse((PACKAGE / sub / "__init__.py").read_text())
        assert [n for n in tree.body if not isinstance(n, ast.Expr)] == [], sub
