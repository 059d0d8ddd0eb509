"""The package layout is part of the design (DESIGN.md, "Packages"): walk every module's
imports (including ones inside functions and TYPE_CHECKING blocks) and fail on an import
against the package direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "caravanserai"

# Never imported by anything under caravanserai/: the dev cluster starts the agent as a
# program, controllers are entry points, the CLI sits on top.
OUTSIDE = ("agent", "controllers", "cli")

# For the library's own sub-packages: which of ours each may import (besides itself and the
# top-level helper modules caravanserai.logging / caravanserai.streaming).
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "store": {"api"},
    "registry": {"api", "store"},
    "client": {"api"},
    "informer": {"api", "client"},
}
# Third-party modules a sub-package must not use (only store talks SQL).
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "informer": {"psycopg", "psycopg_pool"},
    "client": {"psycopg", "psycopg_pool"},
    "registry": {"psycopg", "psycopg_pool", "aiohttp"},
    "api": {"psycopg", "psycopg_pool", "aiohttp"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = (path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).with_suffix("").parts
    package = parts[:-1]  # for __init__.py too: its package is its folder
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join((*base, node.module)) if node.module else ".".join(base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_finds_the_package() -> None:
    assert len(MODULES) > 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_caravanserai_imports_nothing_outside_it(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in imported_modules(path)
        if name.split(".")[0] in OUTSIDE
    ]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sub_packages_import_only_what_the_design_allows(path: Path) -> None:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) < 2 or parts[0] not in ALLOWED:
        return
    own = parts[0]
    allowed = ALLOWED[own] | {own, "logging", "streaming"}
    bad = []
    for line, name in imported_modules(path):
        top = name.split(".")
        if top[0] == "caravanserai" and len(top) > 1 and top[1] not in allowed:
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        if top[0] in FORBIDDEN_THIRD_PARTY.get(own, set()):
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "; ".join(bad)


def test_the_checker_sees_late_and_hidden_imports(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import psycopg\n"
        "def plan():\n    from agent.config import load_config\n"
    )
    names = {name for _, name in imported_modules(module)}
    assert {"psycopg", "agent.config"} <= names
