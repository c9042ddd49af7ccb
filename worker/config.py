"""TOML configuration -> frozen dataclasses, validated once, secrets resolved here.

Every problem is collected (not just the first) and reported as ``file: key: message`` so that
``callwatch check-config`` can list them all. No other module reads the environment: the
caller passes ``environ`` in, which also keeps tests hermetic.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from worker.config_discovery import DiscoveryConfig, parse_discovery
from worker.config_reader import (
    Reader,
    Section,
    http_url,
    not_empty,
    one_line,
    positive_finite,
    show,
)
from worker.config_sections import (
    ApiConfig,
    ArchiveConfig,
    CallWebhooksConfig,
    DeliveryConfig,
    RetentionConfig,
    parse_api,
    parse_archive,
    parse_call_webhooks,
    parse_delivery,
    parse_retention,
    parse_s3_url,
)
from worker.database_url import PostgresUrl, is_postgres, parse_postgres_url
from worker.errors import UsageError
from worker.model import EventType
from worker.secrets import Secret

DEFAULT_CONFIG_PATH = Path("/etc/callwatch/callwatch.toml")
PROVIDER_NAMES = ("ultravox", "envoy", "apifycloud")
DEFAULT_BASE_URLS = {
    "ultravox": "https://api.ultravox.ai",
    "envoy": "https://tryenvoy.ai",
    "apifycloud": "https://video.apifycloud.io",
}
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
# Well under Ultravox's documented ~200 requests/s per key; the others document no limit.
DEFAULT_RATE_LIMIT = 50.0
DEFAULT_CONCURRENCY = 32

T = TypeVar("T")


class ConfigError(UsageError):
    """The configuration is unusable; ``problems`` holds one readable line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackingConfig:
    """Poll cadence and give-up rules (seconds); see CONTRACT.md ``[tracking]``."""

    poll_interval: float = 10.0
    pending_poll_interval: float = 30.0
    recording_poll_interval: float = 5.0
    recording_grace: float = 900.0
    not_found_grace: float = 300.0
    max_tracking_age: float = 86400.0
    # A call listing more recordings than this ends in call.tracking_failed
    # (too_many_recordings) instead of thousands of events: see docs/events.md.
    max_recordings_per_call: int = 100


# The duration keys (seconds, int or float); max_recordings_per_call is a count.
TRACKING_KEYS = tuple(k for k in TrackingConfig.__dataclass_fields__
                      if k != "max_recordings_per_call")
MAX_RECORDINGS_LIMIT = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderConfig:
    """One configured provider: where it is, how to authenticate, how hard to poll it."""

    name: str
    base_url: str
    tracking: TrackingConfig
    api_key: Secret | None = None
    organization_id: str | None = None
    app_id: str | None = None
    widget_key: Secret | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rate_limit: float = DEFAULT_RATE_LIMIT
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookConfig:
    """One ``[[webhooks]]`` endpoint. ``secrets`` has several entries during a rotation."""

    url: str
    secrets: tuple[Secret, ...]
    events: frozenset[str] | None = None
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    timeout: float = 15.0
    max_in_flight: int | None = None  # None: [delivery] max_in_flight_per_endpoint


# A [worker] database starting with one of these is a server's URL, not a SQLite path.
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerConfig:
    """``[worker]``: where state lives."""

    database: Path | str  # a SQLite file, or a postgresql:// URL without its password
    archive_dir: Path | None = None
    archive: str | None = None  # "s3://bucket/prefix": object storage instead of archive_dir
    log_level: str = "info"
    drain_grace: float = 20.0  # on SIGTERM, how long in-flight work may take to finish
    lease_seconds: float = 30.0  # how soon another worker takes over a dead worker's work
    # From the URL or database_password_env/_file; kept apart so printing never shows it.
    database_password: str | None = field(default=None, repr=False)

    @property
    def archiving(self) -> bool:
        """Whether recordings are archived (to a folder or to object storage)."""
        return self.archive_dir is not None or self.archive is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The whole validated configuration."""

    source: Path
    worker: WorkerConfig
    tracking: TrackingConfig
    providers: Mapping[str, ProviderConfig]
    webhooks: tuple[WebhookConfig, ...] = ()
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    call_webhooks: CallWebhooksConfig = field(default_factory=CallWebhooksConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# The event types a [[webhooks]] filter may name: the model's, so they cannot drift apart.
EVENT_TYPE_NAMES = frozenset(str(t) for t in EventType)


# --------------------------------------------------------------------------- sections


def _tracking(section: Section, base: TrackingConfig) -> TrackingConfig:
    values: dict[str, Any] = {name: section.duration(name, getattr(base, name))
                              for name in TRACKING_KEYS}
    values["max_recordings_per_call"] = section.get(
        "max_recordings_per_call", int, base.max_recordings_per_call,
        lambda v: None if 1 <= v <= MAX_RECORDINGS_LIMIT
        else f"must be 1 to {MAX_RECORDINGS_LIMIT}")
    return TrackingConfig(**values)


def _provider(reader: Reader, name: str, table: Mapping[str, Any],
              tracking: TrackingConfig) -> ProviderConfig:
    section = Section(reader, table, f"providers.{name}")
    base_url = section.get("base_url", str, DEFAULT_BASE_URLS[name],
                           lambda v: http_url(v, origin_only=True)).rstrip("/")
    api_key = reader.secret(section, "api_key", required=name in ("ultravox", "envoy"))
    organization_id = app_id = None
    widget_key = None
    if name == "envoy":
        organization_id = section.optional_str("organization_id")
    if name == "apifycloud":
        app_id = section.optional_str("app_id")
        widget_key = reader.secret(section, "widget_key", required=False)
    concurrency = section.get("concurrency", int, DEFAULT_CONCURRENCY,
                              lambda v: None if 1 <= v <= 10_000 else "must be 1 to 10000")
    rate_limit = section.get("rate_limit", float, DEFAULT_RATE_LIMIT, positive_finite)
    provider_tracking = _tracking(section, tracking)
    discovery = parse_discovery(section, listable=name in ("ultravox", "envoy"))
    section.unknown()
    return ProviderConfig(
        name=name,
        base_url=base_url,
        tracking=provider_tracking,
        api_key=Secret(api_key) if api_key else None,
        organization_id=organization_id,
        app_id=app_id,
        widget_key=Secret(widget_key) if widget_key else None,
        concurrency=concurrency,
        rate_limit=rate_limit,
        discovery=discovery,
    )


def split_webhook_secrets(raw: str) -> tuple[list[str], list[str]]:
    """Split a secret value into its ``whsec_`` secrets; return (secrets, problems)."""
    import base64
    import binascii

    secrets, problems = [], []
    for part in raw.split():
        body = part.removeprefix("whsec_")
        try:
            decoded = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            problems.append("is not a whsec_ secret: the part after whsec_ must be base64")
            continue
        if len(decoded) < 16:
            problems.append("is too short: a webhook secret needs at least 16 bytes")
            continue
        secrets.append(part)
    if not secrets and not problems:
        problems.append("is empty")
    return secrets, problems


def _webhook(reader: Reader, index: int, table: Mapping[str, Any]) -> WebhookConfig | None:
    section = Section(reader, table, f"webhooks[{index}]")
    if not section.has("url"):
        section.problem("url", "missing")
    url = section.get("url", str, "", http_url)
    raw_secret = reader.secret(section, "secret", required=True)
    secrets: list[str] = []
    if raw_secret is not None:
        secrets, problems = split_webhook_secrets(raw_secret)
        for problem in problems:
            section.problem("secret_env" if section.has("secret_env") else "secret_file",
                            f"the secret {problem}")
    events_list = section.get("events", list, [])
    events: frozenset[str] | None = None
    if section.has("events"):
        bad = [e for e in events_list if not isinstance(e, str) or e not in EVENT_TYPE_NAMES]
        if bad:
            section.problem("events", f"unknown event type(s): {', '.join(map(str, bad))}")
        events = frozenset(e for e in events_list if isinstance(e, str) and e in EVENT_TYPE_NAMES)
    schedule_list = section.get("retry_schedule", list, list(DEFAULT_RETRY_SCHEDULE))
    schedule: list[float] = []
    for item in schedule_list:
        if (seconds := _non_negative_seconds(item)) is None:
            section.problem("retry_schedule", "must be a list of non-negative seconds")
            schedule = list(DEFAULT_RETRY_SCHEDULE)
            break
        schedule.append(seconds)
    timeout = section.duration("timeout", 15.0)
    max_in_flight = section.get("max_in_flight", int, 0,
                                lambda v: None if 1 <= v <= 1000 else "must be 1 to 1000")
    section.unknown()
    if not url or not secrets:
        return None
    return WebhookConfig(url=url, secrets=tuple(Secret(s) for s in secrets), events=events,
                         retry_schedule=tuple(schedule), timeout=timeout,
                         max_in_flight=max_in_flight or None)


def _non_negative_seconds(item: object) -> float | None:
    if isinstance(item, bool) or not isinstance(item, int | float):
        return None
    try:
        seconds = float(item)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _lease_seconds(value: float) -> str | None:
    ok = math.isfinite(value) and 5 <= value <= 3600
    return None if ok else "must be between 5 and 3600 seconds"


def _postgres(reader: Reader, section: Section, database: str) -> PostgresUrl | None:
    """``database = "postgresql://..."`` with its password from ``database_password_*``.

    The password is read even for commands that resolve no other secret (``track``,
    ``status``): they all need the database.
    """
    resolve, reader.resolve_secrets = reader.resolve_secrets, True
    try:
        password = reader.secret(section, "database_password", required=False)
    finally:
        reader.resolve_secrets = resolve
    if not is_postgres(database):
        if password is not None:
            section.problem("database_password_env",
                            "only used with a postgresql:// database URL")
        return None
    try:
        return parse_postgres_url(database, password)
    except ValueError as exc:
        section.problem("database", str(exc))
        return None


def _resolve(section: Section, name: str, base: Path, value: str) -> Path:
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~user" for a user that does not exist, or no home directory
        section.problem(name, f"cannot expand ~ in {show(value)}")
        path = Path(value)
    return path if path.is_absolute() else (base / path)


def parse(data: Mapping[str, Any], path: Path, environ: Mapping[str, str] | None = None, *,
          resolve_secrets: bool = True) -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem.

    With ``resolve_secrets=False`` (``track``, ``status``: commands that talk to no provider
    and sign nothing) secret keys are checked for form but not read, and come out as None.
    """
    reader = Reader(path, os.environ if environ is None else environ,
                    resolve_secrets=resolve_secrets)
    root = Section(reader, data, "")
    worker_section = Section(reader, root.table("worker"), "worker")
    database = worker_section.get("database", str, "callwatch.db", not_empty)
    archive = worker_section.optional_str("archive_dir")
    archive_url = worker_section.optional_str("archive")
    if archive and archive_url:
        worker_section.problem("archive", "give either archive_dir or archive, not both")
    elif archive_url is not None and isinstance(problem := parse_s3_url(archive_url), str):
        worker_section.problem("archive", problem)
    log_level = worker_section.get(
        "log_level", str, "info",
        lambda v: None if v in ("debug", "info", "warning", "error")
        else "must be one of debug, info, warning, error")
    drain_grace = worker_section.duration("drain_grace", 20.0)
    lease_seconds = worker_section.get("lease_seconds", float, 30.0, _lease_seconds)
    postgres = _postgres(reader, worker_section, database)
    worker_section.unknown()
    base = path.parent
    worker = WorkerConfig(
        database=(postgres.url if postgres is not None
                  else _resolve(worker_section, "database", base, database)),
        archive_dir=_resolve(worker_section, "archive_dir", base, archive) if archive else None,
        archive=archive_url, log_level=log_level, drain_grace=drain_grace,
        lease_seconds=float(lease_seconds),
        database_password=postgres.password if postgres is not None else None)

    tracking_section = Section(reader, root.table("tracking"), "tracking")
    tracking = _tracking(tracking_section, TrackingConfig())
    tracking_section.unknown()

    providers: dict[str, ProviderConfig] = {}
    providers_table = root.table("providers")
    for name, table in providers_table.items():
        if name not in PROVIDER_NAMES:
            reader.problem(f"providers.{name}",
                           f"unknown provider (known: {', '.join(PROVIDER_NAMES)})")
        elif not isinstance(table, dict):
            reader.problem(f"providers.{name}", "must be a table")
        else:
            providers[name] = _provider(reader, name, table, tracking)
    if not providers_table and isinstance(data.get("providers", {}), dict):
        reader.problem("providers", "no provider configured: add a [providers.NAME] table")

    webhooks: list[WebhookConfig] = []
    raw_hooks = data.get("webhooks", [])
    root.has("webhooks")
    if not isinstance(raw_hooks, list):
        reader.problem("webhooks", "must be an array of tables: write [[webhooks]]")
        raw_hooks = []
    for index, table in enumerate(raw_hooks):
        if not isinstance(table, dict):
            reader.problem(f"webhooks[{index}]", "must be a table")
            continue
        if (hook := _webhook(reader, index, table)) is not None:
            webhooks.append(hook)
    archive_config = parse_archive(reader, Section(reader, root.table("archive"), "archive"),
                                   archive_url)
    delivery = parse_delivery(reader, Section(reader, root.table("delivery"), "delivery"))
    api = parse_api(reader, Section(reader, root.table("api"), "api"))
    call_webhooks = parse_call_webhooks(
        reader, Section(reader, root.table("call_webhooks"), "call_webhooks"),
        split_webhook_secrets)
    retention = parse_retention(reader, Section(reader, root.table("retention"), "retention"))
    root.unknown()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(source=path, worker=worker, tracking=tracking, providers=providers,
                  webhooks=tuple(webhooks), archive=archive_config, delivery=delivery, api=api,
                  call_webhooks=call_webhooks, retention=retention, raw=data)


def load(path: Path, environ: Mapping[str, str] | None = None, *,
         resolve_secrets: bool = True) -> Config:
    """Read and validate the config file at ``path``."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: report it below as unreadable
        path = path.absolute()
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([one_line(f"{path}: file not found")]) from None
    except OSError as exc:
        raise ConfigError([one_line(f"{path}: cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([one_line(f"{path}: not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([one_line(f"{path}: invalid TOML: {exc}")]) from None
    return parse(data, path, environ, resolve_secrets=resolve_secrets)


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """``--config``, else ``$CALLWATCH_CONFIG``, else the system default."""
    if cli_value:
        return Path(cli_value)
    if env := environ.get("CALLWATCH_CONFIG"):
        return Path(env)
    return DEFAULT_CONFIG_PATH

