"""[providers.X] discover, discover_interval, discover_since (CONTRACT.md Additions)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.test_config import ENVIRON, assert_one_problem, problems_of, write
from worker.config import load

SINCE = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def test_discovery_is_off_by_default(tmp_path: Path) -> None:
    """Without the keys, no provider is discovered; the interval is 60 s."""
    path = write(tmp_path, '[providers.ultravox]\napi_key_env = "ULTRAVOX_API_KEY"\n')
    discovery = load(path, environ=ENVIRON).providers["ultravox"].discovery
    assert (discovery.enabled, discovery.interval, discovery.since) == (False, 60.0, None)


@pytest.mark.parametrize("since", ['"2026-12-01T00:00:00Z"', "2026-12-01T00:00:00Z",
                                   '"2026-12-01T01:00:00+01:00"'])
def test_discovery_keys_are_read(tmp_path: Path, since: str) -> None:
    """discover_since takes an RFC 3339 string or a TOML offset date-time."""
    path = write(tmp_path, f"""
        [providers.envoy]
        api_key_env = "ENVOY_API_KEY"
        discover = true
        discover_interval = 15
        discover_since = {since}
    """)
    discovery = load(path, environ=ENVIRON).providers["envoy"].discovery
    assert (discovery.enabled, discovery.interval, discovery.since) == (True, 15.0, SINCE)


@pytest.mark.parametrize(("line", "key", "fragment"), [
    ('discover_since = "yesterday"', "discover_since", "RFC 3339"),
    ('discover_since = "2026-12-01T00:00:00"', "discover_since", "with a zone"),
    ("discover_interval = 0", "discover_interval", "must be"),
    ('discover = "yes"', "discover", "must be"),
])
def test_bad_discovery_values_name_the_key(tmp_path: Path, line: str, key: str,
                                           fragment: str) -> None:
    """Each bad value is one problem naming providers.ultravox.<key>."""
    path = write(tmp_path, f'[providers.ultravox]\napi_key_env = "ULTRAVOX_API_KEY"\n{line}\n')
    assert_one_problem(problems_of(path), path, f"providers.ultravox.{key}", fragment)


@pytest.mark.parametrize("line", ["discover = true", "discover = false",
                                  "discover_interval = 30"])
def test_discover_under_apifycloud_is_an_error(tmp_path: Path, line: str) -> None:
    """apifycloud has no list endpoint: any discovery key there is an error naming it."""
    path = write(tmp_path, f"[providers.apifycloud]\n{line}\n")
    key = line.split(" ", 1)[0]
    assert_one_problem(problems_of(path), path, f"providers.apifycloud.{key}",
                       "no list endpoint")


def test_turning_discovery_on_needs_a_restart(tmp_path: Path) -> None:
    """A reload that switches discover on is named by restart_needed (the sweeps start then)."""
    from worker.daemon import restart_needed

    off = load(write(tmp_path, '[providers.ultravox]\napi_key_env = "ULTRAVOX_API_KEY"\n',
                     "off.toml"), environ=ENVIRON)
    on = load(write(tmp_path, '[providers.ultravox]\napi_key_env = "ULTRAVOX_API_KEY"\n'
                              "discover = true\n", "on.toml"), environ=ENVIRON)
    assert restart_needed(off, on) == ["providers.ultravox.discover (turned on)"]
    assert restart_needed(on, off) == []
