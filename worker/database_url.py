"""``[worker] database`` as a PostgreSQL URL: parsing, the password kept apart, redaction.

A value starting with ``postgresql://`` or ``postgres://`` selects PostgreSQL (CONTRACT.md,
"Database: SQLite or PostgreSQL"). The password may sit in the URL, but the config keys
``database_password_env`` / ``_file`` are the way to keep it out of the file. Either way
it is held apart from the URL: ``str()`` of a ``PostgresUrl`` never shows it, so logs, error
messages and ``status`` can print the database without leaking it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")


def is_postgres(value: str) -> bool:
    """True when a ``[worker] database`` value names PostgreSQL rather than a SQLite path."""
    return value.lower().startswith(SCHEMES)


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresUrl:
    """Where the PostgreSQL database is, with its password held apart (never printed)."""

    url: str  # without the password
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.url

    @property
    def host(self) -> str:
        """``host:port`` for one-line errors (the default port when none is given)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"

    def dsn(self) -> str:
        """The URL with the password, for the driver only: never log this."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{user}:{quote(self.password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))


def parse_postgres_url(value: str, password: str | None = None) -> PostgresUrl:
    """Split ``value`` into a password-free URL and its password.

    ``password`` (from ``database_password_env``/``_file``) wins over one in the URL.
    Raises ValueError, with a message that never contains the password, when the URL
    cannot be read.
    """
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("not a valid PostgreSQL URL (postgresql://USER@HOST:PORT/DB)") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("a PostgreSQL URL needs a host (postgresql://USER@HOST:PORT/DB)")
    if port == 0:
        raise ValueError("a PostgreSQL URL needs a port between 1 and 65535")
    in_url = unquote(parts.password) if parts.password is not None else None
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username}@{host}" if parts.username else host
    clean = urlunsplit(parts._replace(netloc=netloc))
    return PostgresUrl(url=clean, password=password if password is not None else in_url)


def redact(text: str, password: str | None) -> str:
    """``text`` with every occurrence of ``password`` (raw or URL-quoted) masked."""
    if not password:
        return text
    for form in {password, quote(password, safe="")}:
        text = text.replace(form, "***")
    return text
