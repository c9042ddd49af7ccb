"""``open_store``: the one way into the database, whichever backend the config names.

Every entry point (the daemon, ``track``, ``status``, ``deliveries``/``replay``, the demo)
opens its store here, so nothing outside ``worker/store/`` knows which database it talks to.
``[worker] database`` selects the backend: a value starting with ``postgresql://`` or
``postgres://`` is PostgreSQL, anything else a SQLite file.

A backend registers by scheme in ``BACKENDS``: the name of a module with
``async def open_backend(url: str, *, owner: str, lease_seconds: float) -> Store``. A build
without that module (or without its driver) answers with a clear ``BackendUnavailableError``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from worker.config import DATABASE_URL_SCHEMES, Config
from worker.store.base import Store
from worker.store.errors import BackendUnavailableError, StoreNotFoundError
from worker.store.planning import worker_identity
from worker.store.sqlite import LEASE_SECONDS, SQLiteStore

# scheme -> (module with ``open_backend``, the backend's name for messages)
BACKENDS: dict[str, tuple[str, str]] = {
    "postgresql://": ("worker.store.postgres", "PostgreSQL"),
    "postgres://": ("worker.store.postgres", "PostgreSQL"),
}
if set(BACKENDS) != set(DATABASE_URL_SCHEMES):  # config.py decides what is a URL
    raise ImportError("store.factory.BACKENDS and config.DATABASE_URL_SCHEMES disagree")


def is_url(database: Path | str) -> bool:
    """``database`` names a database server, not a SQLite file."""
    return isinstance(database, str) and database.startswith(tuple(BACKENDS))


async def open_store(database: Path | str, *, lease_seconds: float = LEASE_SECONDS,
                     owner: str | None = None, create: bool = True,
                     password: str | None = None) -> Store:
    """Open (creating and migrating if needed) the store at ``database``.

    ``create=False``: a SQLite file that does not exist yet raises ``StoreNotFoundError``
    instead of being created (``status`` and ``deliveries`` only read). ``owner`` names whose
    leases are whose (default: this process, ``planning.worker_identity``). ``password``:
    a server's password, kept out of the URL (``[worker] database_password_env``/``_file``).
    """
    owner = owner or worker_identity()
    if is_url(database):
        url = str(database)
        module_name, backend = next(v for k, v in BACKENDS.items() if url.startswith(k))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{backend} is not available in this build of callwatch "
                f"([worker] database is a {backend} URL): {exc}") from exc
        store: Store = await module.open_backend(url, owner=owner, lease_seconds=lease_seconds,
                                                 password=password)
        return store
    path = Path(database)
    if not create and not path.exists():  # noqa: ASYNC240 - one stat before opening
        raise StoreNotFoundError(f"no database at {path} yet")
    return await SQLiteStore.open(path, owner, lease_seconds=lease_seconds)


async def open_configured(config: Config, *, create: bool = True) -> Store:
    """``open_store`` with the ``[worker]`` settings of ``config``."""
    return await open_store(config.worker.database, lease_seconds=config.worker.lease_seconds,
                            create=create, password=config.worker.database_password)


async def copy_sqlite_into(config: Config, source: Path) -> dict[str, int]:
    """``callwatch migrate --from sqlite:PATH``: copy the SQLite database at ``source`` into
    the (empty) PostgreSQL database ``config`` names; rows copied per table."""
    if not is_url(config.worker.database):
        raise BackendUnavailableError("[worker] database must be a postgresql:// URL to copy "
                                      "a SQLite database into")
    module = importlib.import_module("worker.store.postgres_import")
    copied: dict[str, int] = await module.import_from_sqlite(
        str(config.worker.database), config.worker.database_password, source)
    return copied
