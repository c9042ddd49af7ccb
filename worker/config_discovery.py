"""``discover``, ``discover_interval``, ``discover_since`` of ``[providers.ultravox|envoy]``.

CONTRACT.md, "Finding calls without ``track``". apifycloud documents no list endpoint, so any
of these keys under ``[providers.apifycloud]`` is an error that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.config_reader import Section, positive_finite, show

DISCOVERY_KEYS = ("discover", "discover_interval", "discover_since")


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryConfig:
    """Whether and how often callwatch lists a provider's calls to find untracked ones."""

    enabled: bool = False
    interval: float = 60.0  # seconds between sweeps
    since: float | None = None  # POSIX seconds; None: when discovery first ran


def parse_rfc3339(value: object) -> float | None:
    """An RFC 3339 time with an offset (or a TOML offset date-time) as POSIX seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        return None
    return value.timestamp()


def parse_discovery(section: Section, *, listable: bool) -> DiscoveryConfig:
    if not listable:
        for key in DISCOVERY_KEYS:
            if section.has(key):
                section.problem(key, "is not supported: this provider documents no list "
                                     "endpoint to discover calls from")
        return DiscoveryConfig()
    enabled = section.get("discover", bool, False)
    interval = section.get("discover_interval", float, 60.0, positive_finite)
    since = None
    if section.has("discover_since"):
        raw = section.get("discover_since", object, None)
        since = parse_rfc3339(raw)
        if since is None:
            section.problem("discover_since", "must be an RFC 3339 time with a zone, like "
                                              f"2026-12-01T00:00:00Z, got {show(raw)}")
    return DiscoveryConfig(enabled=enabled, interval=interval, since=since)
