"""The package's layout rules, read from the code (the import graph and module sizes).

- No library module imports the CLI (``olla_onnx.cli``): the CLI is a thin layer over the library.
- No module imports a private name (leading underscore) from another package.
- No module of the package, the benchmarks or the investigations is over 450 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "olla_onnx"
MAX_LINES = 450


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(path: Path) -> list[tuple[str, str]]:
    """(module imported from, name) for every ``from X import name`` and ``import X`` in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, "") for a in node.names)
    return out


def test_the_library_never_imports_the_cli():
    bad = [
        f"{module_name(p)} imports {mod}"
        for p in modules()
        if not module_name(p).startswith(("olla_onnx.cli", "olla_onnx.__main__"))  # __main__ is the CLI entry
        for mod, _ in imports(p)
        if mod == "olla_onnx.cli" or mod.startswith("olla_onnx.cli.")
    ]
    assert bad == []


def test_no_private_name_crosses_a_package():
    bad = []
    for p in modules():
        here = package_of(module_name(p), p)
        for mod, name in imports(p):
            if not mod.startswith("olla_onnx") or not name.startswith("_") or name.startswith("__"):
                continue
            target = ROOT / Path(*mod.split("."))
            there = mod if (target / "__init__.py").exists() else mod.rpartition(".")[0]
            if there != here:
                bad.append(f"{module_name(p)} imports {mod}.{name}")
    assert bad == []


@pytest.mark.parametrize("folder", ["olla_onnx", "benchmarks", "tests", "docs/investigations"])
def test_no_module_is_over_450_lines(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_checks_see_a_violation(tmp_path):
    # the rules above are not vacuous: they find what they look for in a module written to break them
    p = tmp_path / "m.py"
    p.write_text("from olla_onnx.cli.common import fail\nfrom olla_onnx.ir.memory import _secret\n")
    assert ("olla_onnx.cli.common", "fail") in imports(p) and ("olla_onnx.ir.memory", "_secret") in imports(p)
