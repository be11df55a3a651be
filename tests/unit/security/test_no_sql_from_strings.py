"""No SQL built from strings: every query meter sends is a constant, values go as $n parameters.

The scan reads the source (ast) of meter/, aggregator/ and reporter/ and flags every call of a
database method (execute, fetch*, copy*, …) whose SQL argument is an f-string, a `%` format, a
`+` concatenation or a `.format()` call — directly, or through a local variable assigned so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("meter", "aggregator", "reporter")
# Methods of asyncpg connections/pools (and psycopg-style cursors) that take SQL first.
SQL_METHODS = frozenset(
    {
        "execute",
        "executemany",
        "fetch",
        "fetchrow",
        "fetchval",
        "fetchmany",
        "prepare",
        "cursor",
        "copy_from_query",
        "copy_expert",
    }
)
# (file, function): why building SQL there is safe. Identifiers cannot be bind parameters, so
# they are quoted; none of them comes from a request.
ALLOWED = {
    ("meter/dev.py", "_prepare"): "CREATE DATABASE of the dev database, whose name is the "
    "module constant _DEV_DB",
}


def _is_built(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def _sql_arg(call: ast.Call) -> ast.AST | None:
    if call.args:
        return call.args[0]
    for kw in call.keywords:
        if kw.arg in {"query", "sql", "command"}:
            return kw.value
    return None


class _Scan(ast.NodeVisitor):
    """Visits each function on its own: a call is judged with its own function's names."""

    def __init__(self) -> None:
        self.scope = ["<module>"]
        self.built: list[set[str]] = [set()]
        self.found: set[tuple[str, int, str]] = set()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.built.append(set())
        self.generic_visit(node)
        self.scope.pop()
        self.built.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_built(node.value):
            self.built[-1].update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and (
            func.attr in SQL_METHODS or func.attr.startswith("copy_")
        ):
            arg = _sql_arg(node)
            if arg is not None and (
                _is_built(arg) or (isinstance(arg, ast.Name) and arg.id in self.built[-1])
            ):
                self.found.add((self.scope[-1], node.lineno, func.attr))
        self.generic_visit(node)


def violations(path: Path, source: str) -> list[tuple[str, int, str]]:
    """(function, line, method) of each call that sends SQL built from strings."""
    scan = _Scan()
    scan.visit(ast.parse(source, filename=str(path)))
    return sorted(scan.found)


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_the_scan_covers_the_packages() -> None:
    files = {p.relative_to(REPO).parts[0] for p in sources()}
    assert files == set(PACKAGES)
    assert len(sources()) > 50


def test_no_query_is_built_from_strings() -> None:
    offenders = []
    for path in sources():
        rel = path.relative_to(REPO).as_posix()
        for fn, line, method in violations(path, path.read_text()):
            if (rel, fn) not in ALLOWED:
                offenders.append(f"{rel}:{line} {fn}() calls {method} with SQL built from strings")
    assert offenders == [], "\n".join(offenders)


def test_every_allowance_is_still_needed() -> None:
    used = {
        (path.relative_to(REPO).as_posix(), fn)
        for path in sources()
        for fn, _, _ in violations(path, path.read_text())
    }
    assert set(ALLOWED) <= used, f"stale allowances: {set(ALLOWED) - used}"


@pytest.mark.parametrize(
    "code",
    [
        'async def f(c, t): await c.execute(f"DROP TABLE {t}")',
        'async def f(c, t): await c.fetch("SELECT * FROM " + t)',
        'async def f(c, t): await c.fetchval("SELECT %s" % t)',
        'async def f(c, t): await c.fetchrow("SELECT {}".format(t))',
        'async def f(c, t): await c.copy_records_to_table(f"{t}", records=[])',
        'async def f(c, t):\n    q = f"DELETE FROM {t}"\n    await c.execute(q)',
        'async def f(c, t): await c.execute(query="SELECT " + t)',
    ],
)
def test_the_scan_catches_each_form(code: str) -> None:
    assert violations(Path("x.py"), code) != []


@pytest.mark.parametrize(
    "code",
    [
        'async def f(c, t): await c.execute("SELECT $1", t)',
        "async def f(c, q): await c.fetch(q.SELECT_ALL, 1)",
        'async def f(c): await c.execute(f"SELECT 1")',  # no placeholder: a constant
        'async def f(r, t): await r.xadd(f"stream:{t}", {})',  # not a database call
    ],
)
def test_the_scan_lets_constant_sql_through(code: str) -> None:
    assert violations(Path("x.py"), code) == []
