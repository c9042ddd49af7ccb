"""Reading TOML tables with typed access that collects problems instead of raising.

Kept apart from ``config.py`` (which says *what* the configuration is) so that each feature's
section parser stays short: ``Section.get(name, kind, default, check)`` does the type checks,
the unknown-key report and the ``FILE: KEY: MESSAGE`` wording in one place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class Section:
    """Typed access to one TOML table that records problems instead of raising."""

    def __init__(self, reader: Reader, table: Mapping[str, Any], prefix: str) -> None:
        self._reader = reader
        self._table = table
        self._prefix = prefix
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def problem(self, name: str, message: str) -> None:
        self._reader.problem(self.key(name), message)

    def has(self, name: str) -> bool:
        self._seen.add(name)
        return name in self._table

    def get(self, name: str, kind: type[T], default: T, check: Callable[[T], str | None] | None
            = None) -> T:
        self._seen.add(name)
        if name not in self._table:
            return default
        value = self._table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # TOML integers are unbounded in tomllib
                self.problem(name, f"is too large: {show(value)}")
                return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(name, f"must be {kind_name(kind)}, got {show(value)}")
            return default
        if check is not None and (message := check(value)) is not None:
            self.problem(name, message)
            return default
        return value

    def optional_str(self, name: str) -> str | None:
        value = self.get(name, str, "")
        return value or None

    def duration(self, name: str, default: float) -> float:
        return self.get(name, float, default, positive_finite)

    def table(self, name: str) -> Mapping[str, Any]:
        return self.get(name, dict, {})

    def unknown(self, allowed_extra: tuple[str, ...] = ()) -> None:
        for name in self._table:
            if name not in self._seen and name not in allowed_extra:
                self.problem(name, "unknown key")


class Reader:
    def __init__(self, path: Path, environ: Mapping[str, str], *,
                 resolve_secrets: bool = True) -> None:
        self.path = path
        self.environ = environ
        self.resolve_secrets = resolve_secrets
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(one_line(f"{self.path}: {key}: {message}"))

    def secret(self, section: Section, base: str, *, required: bool) -> str | None:  # noqa: PLR0911 - one return per mistake reported
        """Resolve ``{base}_env`` / ``{base}_file``; return the raw value or None.

        Each mistake yields one problem, and no problem ever shows a secret: a value that looks
        like the secret itself (pasted where a name belongs) is not echoed.
        """
        env_key, file_key = f"{base}_env", f"{base}_file"
        env_given, file_given = section.has(env_key), section.has(file_key)
        if env_given and file_given:
            section.problem(env_key, f"give either {env_key} or {file_key}, not both")
            return None
        env_name = section.get(env_key, str, "", env_var_name)
        file_name = section.get(file_key, str, "", secret_file_name)
        if not self.resolve_secrets:
            return None  # a command that talks to no provider needs no credentials
        if env_name:
            if env_name not in self.environ:
                section.problem(env_key, f"environment variable {env_name} is not set")
                return None
            value = self.environ[env_name].strip()
            if not value:
                section.problem(env_key, f"environment variable {env_name} is empty")
                return None
            return value
        if file_name:
            return self._read_secret_file(section, file_key, file_name)
        if required and not env_given and not file_given:
            section.problem(env_key, f"missing: set {env_key} or {file_key}")
        return None

    def _read_secret_file(self, section: Section, key: str, name: str) -> str | None:
        candidates = []
        if not Path(name).is_absolute() and (cred := self.environ.get("CREDENTIALS_DIRECTORY")):
            # The unit loads a whole folder (LoadCredential=callwatch:/etc/callwatch/credentials),
            # which systemd names callwatch_FILENAME; a single-file LoadCredential= keeps NAME.
            candidates += [Path(cred) / name, Path(cred) / f"{CREDENTIAL_PREFIX}{name}"]
        candidates.append(self.path.parent / name)
        for candidate in candidates:
            try:
                value = candidate.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                section.problem(key, f"cannot read {candidate}: {exc.strerror}")
                return None
            except UnicodeDecodeError:
                section.problem(key, f"{candidate} is not UTF-8 text")
                return None
            except ValueError:  # e.g. an embedded NUL byte in the name
                section.problem(key, "is not a valid file name")
                return None
            if not value:
                section.problem(key, f"{candidate} is empty")
                return None
            return value
        where = " or ".join(str(c) for c in candidates)
        section.problem(key, f"file not found: {where}")
        return None


CREDENTIAL_PREFIX = "callwatch_"  # the ID of the unit's LoadCredential= folder, plus "_"


def one_line(text: str) -> str:
    """Escape newlines and other control characters (from quoted keys or file names)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def kind_name(kind: type[Any]) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "a list"}.get(kind, kind.__name__)


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WHSEC_PREFIX = "whsec_"


def env_var_name(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value.startswith(WHSEC_PREFIX) or not ENV_VAR_NAME.fullmatch(value):
        # Not echoed: this is most often the secret itself, pasted where its name belongs.
        return "must be the name of an environment variable, not the secret itself"
    return None


def secret_file_name(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value.startswith(WHSEC_PREFIX):
        return "must be a file name, not the secret itself"
    return None


def not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def positive_finite(value: float) -> str | None:
    if not math.isfinite(value) or value <= 0:
        return "must be a positive number of seconds"
    return None


def http_url(value: str, *, origin_only: bool = False) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not 0-65535
    except ValueError:
        return f"must be an http(s) URL, got {show(value)}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL, got {show(value)}"
    if origin_only and (parts.path not in ("", "/") or parts.query or parts.fragment):
        return "must be an origin only (scheme://host[:port]); the adapter appends the paths"
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        return "must not contain spaces or control characters"
    return None
