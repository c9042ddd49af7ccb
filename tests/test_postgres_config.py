"""PostgreSQL as ``[worker] database``: the URL, its password kept out of sight, the CLI."""

# ruff: noqa: S105, S106 - the passwords here are test values whose leaking is what is tested

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.cli import main
from worker.config import ConfigError, parse
from worker.database_url import is_postgres, parse_postgres_url, redact
from worker.store.postgres_db import SCHEMA_VERSION

UUID = "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b"
PROVIDERS = {"providers": {"ultravox": {"api_key_env": "UV_KEY"}}}


def worker_config(tmp_path: Path, environ: dict[str, str] | None = None, **worker: object
                  ) -> object:
    return parse({"worker": worker, **PROVIDERS}, tmp_path / "callwatch.toml",
                 {"UV_KEY": "k", **(environ or {})}).worker


def test_a_url_selects_postgresql_and_its_password_is_held_apart(tmp_path: Path) -> None:
    """The URL keeps everything but the password; the password comes back only for the
    driver, and repr() of the config never shows it."""
    worker = worker_config(tmp_path, database="postgres://cw:pa%40ss@db.example:6543/calls",
                           lease_seconds=12)
    assert worker.database == "postgres://cw@db.example:6543/calls"  # type: ignore[attr-defined]
    assert worker.database_password == "pa@ss"  # type: ignore[attr-defined]
    assert worker.lease_seconds == 12.0  # type: ignore[attr-defined]
    assert "pa@ss" not in repr(worker) and "pa%40ss" not in repr(worker)


def test_the_password_env_wins_and_a_sqlite_path_is_still_a_path(tmp_path: Path) -> None:
    """database_password_env fills the password; a plain value stays a SQLite file."""
    worker = worker_config(tmp_path, {"DBPW": "s3cret"}, database="postgresql://cw@db/calls",
                           database_password_env="DBPW")
    assert worker.database_password == "s3cret"  # type: ignore[attr-defined]
    sqlite = worker_config(tmp_path, database="state/cw.db")
    assert sqlite.database == tmp_path / "state" / "cw.db"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("worker", "needle"), [
    ({"database": "postgresql://cw@:notaport/x"}, "not a valid PostgreSQL URL"),
    ({"database": "postgresql:///calls"}, "needs a host"),
    ({"database": "state.db", "database_password_env": "DBPW"}, "only used with a postgresql"),
    ({"database": "postgresql://h/x", "lease_seconds": 1}, "between 5 and 3600"),
    ({"database": "postgresql://h/x", "database_password_env": "NOPE"}, "NOPE is not set"),
])
def test_bad_database_settings_are_one_line_each(tmp_path: Path, worker: dict[str, object],
                                                 needle: str) -> None:
    """Each mistake is reported on its own line, naming the key."""
    with pytest.raises(ConfigError) as caught:
        worker_config(tmp_path, {"DBPW": "x"}, **worker)
    assert any(needle in problem for problem in caught.value.problems), caught.value.problems


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
               min_size=1, max_size=30))
def test_no_password_survives_redaction_or_the_clean_url(password: str) -> None:
    """Whatever the password, the printable URL and a redacted message never contain it."""
    from urllib.parse import quote

    where = parse_postgres_url(f"postgresql://cw:{quote(password, safe='')}@db:5432/x")
    assert where.password == password
    assert "@db:5432" in where.url and ":" + quote(password, safe="") + "@" not in where.url
    message = f"failed for {where.dsn()} ({password})"
    assert password not in redact(message, password).replace("***", "")


def test_is_postgres_reads_only_the_scheme() -> None:
    """postgresql:// and postgres:// (any case) are servers; anything else is a path."""
    assert is_postgres("postgresql://h/x") and is_postgres("POSTGRES://h/x")
    assert not is_postgres("postgresql.db") and not is_postgres("/var/lib/postgres://x")


@pytest.fixture
def pg_config(tmp_path: Path, pg_url: str) -> Path:
    path = tmp_path / "callwatch.toml"
    path.write_text(f'[worker]\ndatabase = "{pg_url}"\n\n[providers.ultravox]\n'
                    'api_key_env = "UV_KEY"\n')
    return path


def test_migrate_track_and_status_work_on_postgresql(pg_config: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's commands behave on PostgreSQL exactly as on SQLite."""
    assert main(["--config", str(pg_config), "migrate"]) == 0
    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["--config", str(pg_config), "track", "ultravox", UUID]) == 0
    assert main(["--config", str(pg_config), "track", "ultravox", UUID]) == 0
    assert "already tracked" in capsys.readouterr().out
    assert main(["--config", str(pg_config), "status", "ultravox", UUID, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "pending"


def test_postgresql_down_at_start_is_one_line_naming_the_host(tmp_path: Path) -> None:
    """No server: `run` exits 1 with one line naming host and port, never the password."""
    path = tmp_path / "callwatch.toml"
    path.write_text('[worker]\ndatabase = "postgresql://cw:hunter2@127.0.0.1:1/x"\n\n'
                    '[providers.ultravox]\napi_key_env = "UV_KEY"\n')
    done = subprocess.run([sys.executable, "-m", "worker", "--config", str(path), "run"],
                          capture_output=True, text=True, timeout=60,
                          env={"UV_KEY": "k", "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


async def _history(path: Path) -> None:
    """A SQLite database with a live call, a finished one, events and a delivery made."""
    from tests.store.support import T0, ended_with_recording, live, poll, tracked
    from tests.webhooks.support import hook, make_config
    from worker.store.sqlite import SQLiteStore
    from worker.webhooks.endpoints import Endpoints

    store = await SQLiteStore.open(path)
    try:
        await tracked(store, "live")
        await tracked(store, "done", provider="apifycloud")
        await poll(store, "live", live(), T0 + 1)
        await poll(store, "done", ended_with_recording(), T0 + 1, provider="apifycloud")
        routes = Endpoints(make_config(path.parent, [hook("https://hooks.example/a")]))
        await store.fan_out(routes.route, T0 + 2)
    finally:
        await store.close()


def test_migrate_from_sqlite_moves_calls_and_history(tmp_path: Path, pg_config: Path,
                                                      pg_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """migrate --from sqlite:PATH copies calls, events and deliveries with their ids; a
    second run is refused (the database is no longer empty)."""
    import anyio

    from worker.database_url import parse_postgres_url
    from worker.store.postgres import PostgresStore

    old = tmp_path / "old.db"
    anyio.run(_history, old)
    assert main(["--config", str(pg_config), "migrate", "--from", f"sqlite:{old}"]) == 0
    assert "2 calls" in capsys.readouterr().out

    async def moved() -> tuple[list[str], list[str], int]:
        store = await PostgresStore.open(parse_postgres_url(pg_url))
        try:
            calls = await store.list_calls(limit=10, include_terminal=True)
            events = await store.events_after(0, 100)
            return ([c.call_id for c in calls], [e.type for e in events],
                    len(await store.list_deliveries(limit=100)))
        finally:
            await store.close()

    calls, types, deliveries = anyio.run(moved)
    assert sorted(calls) == ["done", "live"]
    assert "call.started" in types and "recording.available" in types
    assert deliveries == len(types)
    assert main(["--config", str(pg_config), "migrate", "--from", f"sqlite:{old}"]) == 1
    assert "already holds calls" in capsys.readouterr().err


async def _pruned_history(path: Path) -> int:
    """A SQLite database whose only call settled, was delivered and was pruned; the number
    of events it had written."""
    from tests.store.test_retention import LATER, deliver_all, settled
    from worker.store.sqlite import SQLiteStore

    store = await SQLiteStore.open(path)
    try:
        await settled(store, "gone")
        await deliver_all(store, LATER - 1)
        assert len(await store.prune_settled(LATER, limit=10)) == 1
        return (await store.counts()).events
    finally:
        await store.close()


def test_migrate_from_a_pruned_sqlite_never_hands_out_an_event_seq_again(
        tmp_path: Path, pg_config: Path, pg_url: str) -> None:
    """Events pruned before the move still count as written, and new events follow them."""
    import anyio

    from tests.store.support import T0, live, poll, tracked
    from worker.database_url import parse_postgres_url
    from worker.store.postgres import PostgresStore

    old = tmp_path / "old.db"
    written = anyio.run(_pruned_history, old)
    assert written >= 2
    assert main(["--config", str(pg_config), "migrate", "--from", f"sqlite:{old}"]) == 0

    async def after_the_move() -> tuple[int, list[int]]:
        store = await PostgresStore.open(parse_postgres_url(pg_url))
        try:
            counted = (await store.counts()).events
            await tracked(store, "new")
            await poll(store, "new", live(), T0 + 1)
            return counted, [e.seq for e in await store.events_after(0, 100)]
        finally:
            await store.close()

    counted, seqs = anyio.run(after_the_move)
    assert counted == written
    assert seqs and min(seqs) > written
