"""PostgreSQL for the tests: a server, and a fresh database per test that wants one.

Where the server comes from, first found wins:

1. ``CALLWATCH_TEST_PG`` (a ``postgresql://`` URL of a role that may create databases);
2. the server at ``127.0.0.1:5432``, user ``postgres`` (the project's machines and CI);
3. a private cluster started from the installed server binaries
   (``/usr/lib/postgresql/*/bin/initdb`` and ``pg_ctl``) in a temporary folder, stopped and
   removed at the end of the session, as pytest-postgresql does. initdb refuses to run as
   root: as root the cluster is run as the ``postgres`` OS user.

With none of them the PostgreSQL tests are skipped with one line saying how to enable them,
except with ``CI=true``: there missing PostgreSQL fails the run, so a green CI means they ran.

Every test gets its own database (``cw_<random>``), created and dropped here: nothing depends
on what an earlier run left behind. ``pg_url`` is empty; ``pg_migrated_url`` holds the current
schema, copied from a template migrated once per session by the store's own migrations.
CREATE and DROP DATABASE cost the server a few hundred milliseconds each (template1 copied
through the WAL; a checkpoint), so a thread makes the next database ahead and drops used
ones behind while the tests run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_ENABLE = ("PostgreSQL tests skipped: no server at 127.0.0.1:5432 and no initdb under "
                 "/usr/lib/postgresql/*/bin; start PostgreSQL or set "
                 "CALLWATCH_TEST_PG=postgresql://USER@HOST:PORT/DB to run them")


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A throw-away cluster in a temporary folder, run as ``postgres`` when we are root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="callwatch-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("PostgreSQL tests skipped: running as root and there is no "
                            "'postgres' OS user to run initdb as; set CALLWATCH_TEST_PG")
            self.user = "postgres"
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, timeout=120)

    def start(self) -> str:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "-A", "trust", "--no-sync")
        self.resume()
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pause(self) -> None:
        """Stop the server (as a restart or a failover does), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the paused server again, on the same port."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                  str(self.root / "log"), "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.root} -F", "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _installed_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return found[0].parent if found else None


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI: a green CI run must mean the PostgreSQL tests ran."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and PostgreSQL is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server whose role may create databases."""
    wanted = os.environ.get("CALLWATCH_TEST_PG")
    if wanted:
        if not _reachable(wanted):
            _unavailable(f"CALLWATCH_TEST_PG is set but the server does not answer "
                         f"({_redact(wanted)})")
        yield wanted
        return
    if _reachable(DEFAULT_URL):
        yield DEFAULT_URL
        return
    bindir = _installed_bindir()
    if bindir is None:
        _unavailable(HOW_TO_ENABLE)
        return
    cluster = PrivateCluster(bindir)
    try:
        yield cluster.start()
    except subprocess.CalledProcessError as exc:
        _unavailable(f"PostgreSQL tests skipped: the private cluster did not start: "
                     f"{exc.stderr.decode(errors='replace').strip()[:200]}")
    finally:
        cluster.stop()


def _new_name() -> str:
    return f"cw_{uuid.uuid4().hex[:12]}"


class Databases:
    """New databases copied from ``template``: one made ahead on a thread, used ones dropped
    behind on another (so a test waits for neither); ``close`` drops what is left."""

    def __init__(self, server: str, template: str = "template1") -> None:
        self.server, self.template = server, template
        self._made: queue.Queue[str | psycopg.Error] = queue.Queue()
        self._creates: queue.Queue[str | None] = queue.Queue()
        self._drops: queue.Queue[str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._work, args=(jobs,), daemon=True,
                                          name=f"pg-{template}")
                         for jobs in (self._creates, self._drops)]
        for thread in self._threads:
            thread.start()
        self._creates.put(_new_name())

    def _work(self, jobs: queue.Queue[str | None]) -> None:
        while (name := jobs.get()) is not None:
            try:
                with psycopg.connect(self.server, autocommit=True) as admin:
                    if jobs is self._creates:
                        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                        self._made.put(name)
                    else:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                if jobs is self._creates:
                    self._made.put(exc)

    def take(self) -> str:
        """The name of a new database nobody has used; the next one is started meanwhile."""
        made = self._made.get(timeout=120)
        self._creates.put(_new_name())
        if isinstance(made, psycopg.Error):
            raise made
        return made

    def drop(self, name: str) -> None:
        self._drops.put(name)

    def close(self) -> None:
        self._creates.put(None)
        self._threads[0].join(timeout=120)
        while not self._made.empty():
            made = self._made.get()
            if isinstance(made, str):
                self._drops.put(made)
        self._drops.put(None)
        self._threads[1].join(timeout=120)


@pytest.fixture(scope="session")
def pg_databases(pg_server: str) -> Iterator[Databases]:
    """Empty databases for ``pg_url``."""
    databases = Databases(pg_server)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def pg_migrated_databases(pg_server: str, pg_databases: Databases) -> Iterator[Databases]:
    """Databases for ``pg_migrated_url``: copies of one this session migrated with the
    store's own migrations (so always the current schema)."""
    import anyio

    from worker.database_url import parse_postgres_url
    from worker.store.postgres import PostgresStore

    template = pg_databases.take()

    async def migrate() -> None:
        store = await PostgresStore.open(parse_postgres_url(_with_database(pg_server, template)))
        await store.close()

    failed: list[BaseException] = []

    def run() -> None:  # a thread of its own: the test's event loop may be running here
        try:
            anyio.run(migrate)
        except BaseException as exc:  # raised again below, in the test
            failed.append(exc)

    try:
        migrating = threading.Thread(target=run)
        migrating.start()
        migrating.join()
        if failed:
            raise failed[0]
        databases = Databases(pg_server, template)
        try:
            yield databases
        finally:
            databases.close()
    finally:
        pg_databases.drop(template)


@pytest.fixture
def pg_url(pg_server: str, pg_databases: Databases) -> Iterator[str]:
    """A fresh, empty database of its own for one test; dropped afterwards."""
    name = pg_databases.take()
    try:
        yield _with_database(pg_server, name)
    finally:
        pg_databases.drop(name)


@pytest.fixture
def pg_migrated_url(pg_server: str, pg_migrated_databases: Databases) -> Iterator[str]:
    """A fresh database of its own with the current schema, for tests of what the store
    does rather than of its migrations; dropped afterwards."""
    name = pg_migrated_databases.take()
    try:
        yield _with_database(pg_server, name)
    finally:
        pg_migrated_databases.drop(name)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
