"""The domain is pure: every module of ``penpay_domain`` imports only the standard library (from an explicit
allow-list), never an I/O library, and no annotation in it mentions ``float``. Checked on the source with ``ast``,
so a lazy import inside a function is caught too."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import penpay_domain

DOMAIN_DIR = Path(penpay_domain.__file__).parent
MODULES = sorted(DOMAIN_DIR.glob("*.py"))

STDLIB_ALLOWED = {
    "__future__",
    "abc",
    "collections",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "math",
    "operator",
    "re",
    "secrets",
    "types",
    "typing",
    "uuid",
    "zoneinfo",
}
FORBIDDEN = {
    "sqlalchemy",
    "asyncmy",
    "alembic",
    "redis",
    "httpx",
    "fastapi",
    "starlette",
    "grpc",
    "websockets",
    "aiosmtplib",
    "pydantic",
    "pydantic_settings",
    "structlog",
    "asyncio",
    "socket",
    "penpay",
}


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def parse(module: Path) -> ast.Module:
    return ast.parse(module.read_text(encoding="utf-8"), filename=str(module))


def test_the_domain_package_has_modules() -> None:
    assert {m.stem for m in MODULES} >= {"money", "fx", "ledger", "transaction", "events", "ports"}


def test_the_allow_list_is_standard_library() -> None:
    assert sys.stdlib_module_names >= STDLIB_ALLOWED
    assert not FORBIDDEN & STDLIB_ALLOWED


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_a_domain_module_imports_only_allowed_stdlib_and_the_domain(module: Path) -> None:
    roots = imported_roots(parse(module)) - {"penpay_domain"}
    assert not roots & FORBIDDEN, f"{module.name} imports I/O: {sorted(roots & FORBIDDEN)}"
    assert roots <= STDLIB_ALLOWED, f"{module.name} imports outside the allow-list: {sorted(roots - STDLIB_ALLOWED)}"


def float_annotations(tree: ast.AST) -> list[str]:
    """Every annotation (of a variable, parameter or return) that names ``float``, quoted or not."""
    found: list[str] = []
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations.extend(a.annotation for a in every if a is not None)
            annotations.append(node.returns)
        for annotation in filter(None, annotations):
            names = {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)}
            for const in ast.walk(annotation):  # a quoted annotation is source code too
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    quoted = ast.parse(const.value, mode="eval")
                    names |= {n.id for n in ast.walk(quoted) if isinstance(n, ast.Name)}
            if "float" in names:
                found.append(f"{annotation.lineno}: {ast.unparse(annotation)}")
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_annotation_in_the_domain_mentions_float(module: Path) -> None:
    assert float_annotations(parse(module)) == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_float_call_or_literal_in_the_domain(module: Path) -> None:
    """Money must never pass through binary floating point: no ``float(...)`` and no float literals."""
    offenders = [
        f"{module.name}:{node.lineno}"
        for node in ast.walk(parse(module))
        if (isinstance(node, ast.Name) and node.id == "float")
        or (isinstance(node, ast.Constant) and isinstance(node.value, float))
    ]
    assert offenders == []


def test_the_checker_sees_a_forbidden_import_and_a_float_annotation() -> None:
    tree = ast.parse(
        "import asyncio\nfrom sqlalchemy.orm import Session\n"
        "rate: float | None = None\ndef f(x: 'list[float]', *, y: int) -> Decimal | float: ..."
    )
    assert imported_roots(tree) == {"asyncio", "sqlalchemy"}
    assert float_annotations(tree) == ["3: float | None", "4: 'list[float]'", "4: Decimal | float"]
