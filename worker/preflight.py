"""``check-config``'s look at the machine: what parses can still fail the first hour in production.

``config.load`` decides whether a file *means* something; these checks decide whether it
will *work here*: the database's folder is writable, ``archive_dir`` is (or can become) a
folder, and the poll intervals are not so short that they hammer a provider. They run in
``check-config`` only (and so in the unit's ``ExecReload=``), never in ``run``: tests and
benchmarks poll far faster than production should, on purpose.

Each problem is one ``FILE: KEY: MESSAGE`` line, like the config's own.
"""

from __future__ import annotations

import os
from pathlib import Path

from worker.config import TRACKING_KEYS, Config, TrackingConfig
from worker.terminal import printable

MIN_POLL_INTERVAL = 0.5  # seconds; below this a few hundred calls are thousands of requests/s
POLL_KEYS = tuple(k for k in TRACKING_KEYS if k.endswith("poll_interval"))


def preflight(config: Config) -> list[str]:
    """Every problem found on this machine, as ``FILE: KEY: MESSAGE`` lines."""
    problems: list[tuple[str, str]] = []
    database = config.worker.database
    if isinstance(database, Path) and (message := database_folder_problem(database)) is not None:
        problems.append(("worker.database", message))  # a URL's server is checked by `run`
    if config.worker.archive_dir is not None and (
            message := folder_problem(config.worker.archive_dir)) is not None:
        problems.append(("worker.archive_dir", message))
    problems += interval_problems("tracking", config.tracking)
    for name, provider in sorted(config.providers.items()):
        if provider.tracking != config.tracking:
            problems += interval_problems(f"providers.{name}", provider.tracking)
    return [printable(f"{config.source}: {key}: {message}") for key, message in problems]


def interval_problems(prefix: str, tracking: TrackingConfig) -> list[tuple[str, str]]:
    """Poll intervals under ``MIN_POLL_INTERVAL`` (absurd in production, however valid)."""
    return [(f"{prefix}.{key}", f"{getattr(tracking, key):g} s is too short: at least "
                                f"{MIN_POLL_INTERVAL:g} s between polls of one call")
            for key in POLL_KEYS if getattr(tracking, key) < MIN_POLL_INTERVAL]


def database_folder_problem(database: Path) -> str | None:
    """Why the database cannot be created or opened in its folder, or None.

    The folder must exist and be writable (SQLite writes its journal and WAL next to the
    file), or be missing with a writable parent: the daemon then creates it, as systemd's
    ``StateDirectory=`` creates ``/var/lib/callwatch`` at the first start.
    """
    folder = database.parent
    if database.is_dir():
        return f"{database} is a folder, not a database file"
    if folder.is_dir():
        return None if _writable(folder) else f"folder {folder} is not writable"
    if folder.exists():
        return f"{folder} is not a folder"
    if folder.parent.is_dir() and _writable(folder.parent):
        return None
    return f"folder {folder} does not exist (create it, or fix the path)"


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a writable folder, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a folder"
        return None if _writable(path) else f"folder {path} is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{path} cannot be a folder: {parent} is not a folder"
    return None if _writable(parent) else f"{path} does not exist and {parent} is not writable"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)
