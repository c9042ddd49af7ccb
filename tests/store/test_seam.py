"""The seam stays a seam: only ``worker/store/`` knows which database it talks to."""

from __future__ import annotations

import ast
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "worker"
BACKEND_MODULES = ("sqlite3", "aiosqlite", "asyncpg", "psycopg", "worker.store.sqlite",
                   "worker.store.sqlite_db", "worker.store.jobs", "worker.store.rows",
                   "worker.store.deliveries", "worker.store.downloads",
                   "worker.store.deliveries_sql", "worker.store.postgres")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_module_outside_the_store_imports_a_backend() -> None:
    """Entry points open stores through ``store.factory``; nothing else names a driver or a
    backend module (the simulator and benchmarks are not production code)."""
    offenders = sorted(
        f"{path.relative_to(WORKER.parent)}: {name}"
        for path in WORKER.rglob("*.py")
        if "store" not in path.relative_to(WORKER).parts[:1]
        for name in imports(path)
        if name in BACKEND_MODULES or name.startswith(tuple(f"{m}." for m in BACKEND_MODULES)))
    assert offenders == []
