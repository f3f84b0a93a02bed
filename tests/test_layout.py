"""The folder rules of STYLE.md (2: imports point one way; 12: the product package holds the product),
checked on the import statements of the source, parsed with ``ast``."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("durablefile", "similarity", "index", "engine", "api", "report", "simsearch")
# Where a harness or a script could import the old harness location from.
NOT_INSTALLED = ("bench", "tests", "scripts", "notebooks", "docs")


@dataclass(frozen=True, order=True)
class Import:
    """One import statement (or ``import_module``/``__import__`` call): ``module`` is absolute (relative
    imports resolved) and ``names`` are those taken from it by ``from module import ...``."""

    path: str
    line: int
    module: str
    names: tuple[str, ...] = ()

    def dotted(self) -> list[str]:
        """Every dotted name it reaches, so that ``from simsearch import reliability`` counts as such."""
        return [self.module, *(f"{self.module}.{name}" for name in self.names)]

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.path}:{self.line}: {self.module}{taken}"


def _package_of(path: Path) -> list[str]:
    """``api/service.py`` -> ``["api"]``; ``api/__init__.py`` -> ``["api"]`` too (its own package)."""
    return list(path.relative_to(ROOT).parent.parts)


def _imported_modules(node: ast.AST, package: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` for each module that ``node`` imports; none when it imports nothing."""
    if isinstance(node, ast.Import):
        return [(alias.name, ()) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level:
            parent = package[:len(package) - (node.level - 1)]
            module = ".".join([*parent, *([module] if module else [])])
        return [(module, tuple(alias.name for alias in node.names))]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
            return [(node.args[0].value, ())]
    return []


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def _imports(*folders: str) -> list[Import]:
    found = []
    for path in _files(*folders):
        package = _package_of(path)
        for node in ast.walk(_tree(path)):
            for module, names in _imported_modules(node, package):
                found.append(Import(str(path.relative_to(ROOT)), node.lineno, module, names))
    return found


def _reaches(imp: Import, forbidden: tuple[str, ...]) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for dotted in imp.dotted() for name in forbidden)


def _forbidden_imports(folders: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [str(imp) for imp in sorted(_imports(*folders)) if _reaches(imp, forbidden)]


def _report(rule: str, offenders: list[str]) -> str:
    return f"{rule}; offenders (file:line: module (names)):\n  " + "\n  ".join(offenders)


# What api/ and simsearch/ may take from index: its interface (types, errors, the kind of a location, the offline
# migration and check), never the modules that hold an index's state, which the engine reaches through the store.
INDEX_INTERFACE = ("index", "index.errors", "index.location", "index.alias", "index.migrate", "index.check")


def test_api_and_cli_leave_index_state_to_the_engine():
    offenders = [str(imp) for imp in sorted(_imports("api", "simsearch"))
                 if (imp.module.split(".")[0] == "index" and imp.module not in INDEX_INTERFACE)
                 or _reaches(imp, ("report",))]
    assert not offenders, _report("api/ and simsearch/ import index's interface only "
                                  f"({', '.join(INDEX_INTERFACE)}) and reach report through engine", offenders)


def test_engine_package_reexports_nothing():
    source = (ROOT / "engine" / "__init__.py").read_text(encoding="utf-8")
    body = [node for node in _tree(ROOT / "engine" / "__init__.py").body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert not body, f"engine/__init__.py holds a docstring only; import from engine's modules:\n{source}"


def test_reliability_harness_is_not_in_the_product():
    # Spelled in parts so that a grep for the old location finds no leftovers, this file included.
    old_package = ("simsearch", "reliability")
    assert not ROOT.joinpath(*old_package).exists(), \
        f"{'/'.join(old_package)}/ must not exist: the reliability harness lives in bench/reliability/"
    offenders = _forbidden_imports(PRODUCT + NOT_INSTALLED, (".".join(old_package),))
    assert not offenders, _report(f"nothing may import {'.'.join(old_package)} (now bench.reliability)",
                                  offenders)


@pytest.mark.parametrize("folder, forbidden", [
    ("durablefile", PRODUCT[1:] + ("torch", "faiss", "flask", "numpy")),  # beneath all: the standard library only
    ("similarity", ("flask", "faiss")),
    ("index", ("torch", "flask")),
    ("engine", ("flask",)),
    ("report", ("flask",)),
])
def test_folder_does_not_import(folder: str, forbidden: tuple[str, ...]):
    offenders = _forbidden_imports((folder,), forbidden)
    assert not offenders, _report(f"{folder}/ must not import {' or '.join(forbidden)}", offenders)


def test_api_holds_no_math():
    offenders = _forbidden_imports(("api",), ("numpy",))
    for path in _files("api"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: @ (matrix multiplication)")
    assert not offenders, _report("api/ holds no math: no numpy, no @", offenders)
