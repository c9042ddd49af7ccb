"""``[worker] database`` as a path or a server URL, and ``lease_seconds``."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import ConfigError, load


def write(tmp_path: Path, worker: str) -> Path:
    path = tmp_path / "callwatch.toml"
    path.write_text(f"[worker]\n{worker}\n[providers.apifycloud]\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("url", ["postgresql://cw@db.internal:5432/callwatch",
                                 "postgres://cw@127.0.0.1/cw"])
def test_a_postgresql_url_is_kept_as_written_not_made_a_path(tmp_path: Path, url: str) -> None:
    """A server URL is not resolved against the config's folder."""
    config = load(write(tmp_path, f'database = "{url}"'), environ={})
    assert config.worker.database == url


def test_lease_seconds_defaults_to_30_and_must_be_positive(tmp_path: Path) -> None:
    """The default lease is 30 s; zero or a negative lease is a config error."""
    assert load(write(tmp_path, ""), environ={}).worker.lease_seconds == 30.0
    assert load(write(tmp_path, "lease_seconds = 12"), environ={}).worker.lease_seconds == 12.0
    with pytest.raises(ConfigError, match="lease_seconds"):
        load(write(tmp_path, "lease_seconds = 0"), environ={})
