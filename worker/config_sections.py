"""The optional sections that tune the daemon's features: ``[archive]``, ``[delivery]``,
``[call_webhooks]``, ``[api]``.

Each is a frozen dataclass whose defaults are what you get when the section is absent; every
key is an addition to CONTRACT.md's config, never a change of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker.addresses import pattern_problem
from worker.config_reader import Reader, Section, positive_finite
from worker.secrets import Secret

GIB = 1024**3


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveConfig:
    """``[archive]``: how recordings are fetched into ``[worker] archive_dir``."""

    concurrency: int = 4  # downloads at once
    max_size: int = 8 * GIB  # refuse recordings larger than this many bytes
    max_attempts: int = 10  # the retry budget before recording.archive_failed
    refresh_margin: float = 30.0  # fetch a fresh link when the current one expires this soon
    timeout: float = 60.0  # seconds without a byte before a download counts as stalled
    max_redirects: int = 3  # redirects followed (http(s) only)


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


def parse_archive(reader: Reader, section: Section) -> ArchiveConfig:
    d = ArchiveConfig()
    config = ArchiveConfig(
        concurrency=section.get("concurrency", int, d.concurrency, _int_range(1, 256)),
        max_size=section.get("max_size", int, d.max_size, _int_range(1, 2**50)),
        max_attempts=section.get("max_attempts", int, d.max_attempts, _int_range(1, 1000)),
        refresh_margin=section.get("refresh_margin", float, d.refresh_margin, positive_finite),
        timeout=section.duration("timeout", d.timeout),
        max_redirects=section.get("max_redirects", int, d.max_redirects, _int_range(0, 10)),
    )
    section.unknown()
    del reader
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
