"""The optional sections that tune the daemon's features: ``[archive]``, ``[delivery]``,
``[call_webhooks]``, ``[api]``, ``[retention]``.

Each is a frozen dataclass whose defaults are what you get when the section is absent; every
key is an addition to CONTRACT.md's config, never a change of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from worker.addresses import pattern_problem
from worker.config_reader import Reader, Section, http_url, not_empty, positive_finite
from worker.secrets import Secret

GIB = 1024**3
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)


@dataclass(frozen=True, kw_only=True, slots=True)
class S3Config:
    """``[archive.s3]``: how to reach the bucket of ``[worker] archive = "s3://..."``."""

    bucket: str
    prefix: str  # "" or "some/prefix" (no leading or trailing slash)
    region: str = "us-east-1"
    endpoint_url: str | None = None  # any S3-compatible service (MinIO, R2, Ceph)
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveConfig:
    """``[archive]``: how recordings are fetched into the archive target."""

    concurrency: int = 4  # downloads at once
    max_size: int = 8 * GIB  # refuse recordings larger than this many bytes
    max_attempts: int = 10  # the retry budget before recording.archive_failed
    refresh_margin: float = 30.0  # fetch a fresh link when the current one expires this soon
    timeout: float = 60.0  # seconds without a byte before a download counts as stalled
    max_redirects: int = 3  # redirects followed (http(s) only)
    max_seconds: float = 3600.0  # one attempt's overall deadline (a dripping server frees its slot)
    s3: S3Config | None = None  # set when [worker] archive = "s3://..."


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryConfig:
    """``[delivery]``: limits of the webhook relay, shared by every endpoint."""

    max_connections: int = 64  # open connections to all endpoints together
    max_in_flight_per_endpoint: int = 8  # concurrent deliveries to one endpoint


@dataclass(frozen=True, kw_only=True, slots=True)
class CallWebhooksConfig:
    """``[call_webhooks]``: the policy for per-call webhook URLs (``track --webhook``)."""

    # signs them; None: the first [[webhooks]] secret
    secret: Secret | None = field(default=None, repr=False)
    allow_hosts: tuple[str, ...] = ()  # empty: any public host
    allow_private: bool = False  # allow loopback, private, link-local and reserved addresses
    max_in_flight: int = 16  # deliveries under way to all per-call URLs together


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiConfig:
    """``[api]``: the HTTP API; off unless ``listen`` is set."""

    listen: str | None = None  # "127.0.0.1:8787" or a unix socket path ("/run/callwatch/api.sock")
    token: Secret | None = None  # bearer token for everything but /healthz
    ultravox_webhook_secret: Secret | None = None  # verifies Ultravox's own webhooks

    @property
    def unix_socket(self) -> Path | None:
        return Path(self.listen) if self.listen and self.listen.startswith("/") else None


def _int_range(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be {low} to {high}"
    return check


# Object stores obstore could reach but callwatch does not offer: no peer to test them against
# on loopback here (see docs/archive.md).
_NOT_OFFERED = {"gs": "Google Cloud Storage", "gcs": "Google Cloud Storage",
                "az": "Azure Blob Storage", "azure": "Azure Blob Storage",
                "abfs": "Azure Blob Storage", "abfss": "Azure Blob Storage"}


def parse_s3_url(value: str) -> tuple[str, str] | str:
    """``s3://bucket/prefix`` -> (bucket, prefix); a one-line problem for anything else."""
    parts = urlsplit(value)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.scheme in _NOT_OFFERED:
        return (f'"{parts.scheme}://" ({_NOT_OFFERED[parts.scheme]}) is not offered yet; only '
                '"s3://BUCKET" or "s3://BUCKET/PREFIX" (S3-compatible storage)')
    if parts.scheme != "s3" or not _BUCKET.fullmatch(bucket) or parts.query or parts.fragment:
        return 'must be "s3://BUCKET" or "s3://BUCKET/PREFIX" (a bucket name: a-z 0-9 . -)'
    if "//" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        return 'must be "s3://BUCKET/PREFIX" with no empty, . or .. segment in the prefix'
    return bucket, prefix


def _parse_s3(reader: Reader, section: Section, url: str) -> S3Config | None:
    parsed = parse_s3_url(url)
    if isinstance(parsed, str):
        return None  # reported with [worker] archive
    endpoint = section.optional_str("endpoint_url")
    if endpoint is not None and (problem := http_url(endpoint)) is not None:
        section.problem("endpoint_url", problem)
    region = section.get("region", str, "us-east-1", not_empty)
    key_id = reader.secret(section, "access_key_id", required=True)
    secret = reader.secret(section, "secret_access_key", required=True)
    section.unknown()
    return S3Config(bucket=parsed[0], prefix=parsed[1], region=region, endpoint_url=endpoint,
                    access_key_id=Secret(key_id) if key_id else None,
                    secret_access_key=Secret(secret) if secret else None)


def parse_archive(reader: Reader, section: Section, s3_url: str | None = None) -> ArchiveConfig:
    d = ArchiveConfig()
    config = ArchiveConfig(
        concurrency=section.get("concurrency", int, d.concurrency, _int_range(1, 256)),
        max_size=section.get("max_size", int, d.max_size, _int_range(1, 2**50)),
        max_attempts=section.get("max_attempts", int, d.max_attempts, _int_range(1, 1000)),
        refresh_margin=section.get("refresh_margin", float, d.refresh_margin, positive_finite),
        timeout=section.duration("timeout", d.timeout),
        max_redirects=section.get("max_redirects", int, d.max_redirects, _int_range(0, 10)),
        max_seconds=section.duration("max_seconds", d.max_seconds),
        s3=None,
    )
    s3_table = section.table("s3")
    if s3_url is not None:
        s3 = _parse_s3(reader, Section(reader, s3_table, "archive.s3"), s3_url)
        config = replace(config, s3=s3)
    elif section.has("s3"):
        section.problem("s3", 'only with [worker] archive = "s3://..."')
    section.unknown()
    return config


def parse_delivery(reader: Reader, section: Section) -> DeliveryConfig:
    d = DeliveryConfig()
    config = DeliveryConfig(
        max_connections=section.get("max_connections", int, d.max_connections,
                                    _int_range(1, 10_000)),
        max_in_flight_per_endpoint=section.get(
            "max_in_flight_per_endpoint", int, d.max_in_flight_per_endpoint,
            _int_range(1, 1000)),
    )
    section.unknown()
    del reader
    return config


def parse_call_webhooks(reader: Reader, section: Section,
                        split_secrets: Callable[[str], tuple[list[str], list[str]]],
                        ) -> CallWebhooksConfig:
    """``[call_webhooks]``; ``split_secrets`` reads a whsec_ value as ``[[webhooks]]`` do."""
    d = CallWebhooksConfig()
    raw_secret = reader.secret(section, "secret", required=False)
    secret: Secret | None = None
    if raw_secret is not None:
        secrets, problems = split_secrets(raw_secret)
        for problem in problems:
            section.problem("secret_env" if section.has("secret_env") else "secret_file",
                            f"the secret {problem}")
        secret = Secret(secrets[0]) if secrets else None
    hosts = section.get("allow_hosts", list, [])
    for host in hosts:
        bad = pattern_problem(host) if isinstance(host, str) else f"{host!r} is not a string"
        if bad is not None:
            section.problem("allow_hosts", bad)
    config = CallWebhooksConfig(
        secret=secret,
        allow_hosts=tuple(h for h in hosts if isinstance(h, str)),
        allow_private=section.get("allow_private", bool, d.allow_private),
        max_in_flight=section.get("max_in_flight", int, d.max_in_flight, _int_range(1, 1000)),
    )
    section.unknown()
    return config


def _listen(value: str) -> str | None:
    if value.startswith("/"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return 'must be "HOST:PORT" (like "127.0.0.1:8787") or an absolute unix socket path'
    return None


def parse_api(reader: Reader, section: Section) -> ApiConfig:
    listen = section.get("listen", str, "", _listen) or None
    token = reader.secret(section, "token", required=listen is not None)
    hook_secret = reader.secret(section, "ultravox_webhook_secret", required=False)
    section.unknown()
    return ApiConfig(listen=listen, token=Secret(token) if token else None,
                     ultravox_webhook_secret=Secret(hook_secret) if hook_secret else None)


DAY = 86_400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionConfig:
    """``[retention]``: how long settled calls are kept before they are pruned."""

    # Seconds after a call settled (terminal event or untrack) before the call, its events,
    # deliveries and attempt logs are deleted; 0 = never. Recordings are never deleted.
    settled_calls: float = 30 * DAY

    @property
    def enabled(self) -> bool:
        return self.settled_calls > 0


def _non_negative_seconds(value: float) -> str | None:
    if value != value or value in (float("inf"), float("-inf")) or value < 0:  # noqa: PLR0124 - NaN
        return "must be a number of seconds, 0 (never) or more"
    return None


def parse_retention(reader: Reader, section: Section) -> RetentionConfig:
    d = RetentionConfig()
    config = RetentionConfig(settled_calls=section.get("settled_calls", float, d.settled_calls,
                                                       _non_negative_seconds))
    section.unknown()
    del reader
    return config
