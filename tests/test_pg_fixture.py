"""The PostgreSQL test infrastructure itself (tests/pg.py): skip, fail under CI, own cluster."""

from __future__ import annotations

import pytest

from tests.pg import HOW_TO_ENABLE, PrivateCluster, _installed_bindir, _reachable, _unavailable


def test_missing_postgresql_skips_with_how_to_enable_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CI=true the PostgreSQL tests skip, saying how to run them."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="CALLWATCH_TEST_PG"):
        _unavailable(HOW_TO_ENABLE)


def test_missing_postgresql_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CI=true a missing PostgreSQL fails the run: a green CI means they ran."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _unavailable(HOW_TO_ENABLE)


def test_a_private_cluster_starts_from_the_installed_binaries_and_is_removed() -> None:
    """initdb + pg_ctl in a temporary folder (as the postgres user when root), then gone."""
    bindir = _installed_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries installed")
    cluster = PrivateCluster(bindir)
    try:
        assert _reachable(cluster.start())
    finally:
        cluster.stop()
    assert not cluster.root.exists()
