"""The track rules the API shares with `callwatch track`: the same input fails both ways."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.support import UV_ID, make_config
from worker.addresses import check_url, forbidden
from worker.cli import main
from worker.track_input import TrackInputError, check_input, depth


@pytest.mark.parametrize(("metadata", "message"), [
    ('{"x": NaN}', "metadata is not valid JSON: NaN is not a JSON value"),
    ('{"x": Infinity}', "metadata is not valid JSON: Infinity is not a JSON value"),
    ('{"x": "\\ud800"}', "metadata holds a lone surrogate"),
    ("[" * 5000 + "]" * 5000, "metadata is nested deeper than 32"),
    ('{"n": ' + "1" * 5000 + "}", "metadata is not valid JSON"),
])
def test_metadata_that_events_could_not_carry_is_refused(tmp_path: Path, metadata: str,
                                                          message: str) -> None:
    """NaN, lone surrogates and absurd JSON never reach the database, where they would break
    every event body of the call (events are strict UTF-8 JSON)."""
    with pytest.raises(TrackInputError, match="^" + message.replace("[", r"\[")):
        check_input(make_config(tmp_path), "ultravox", UV_ID, metadata, None)


def test_a_webhook_url_that_is_not_unicode_is_refused(tmp_path: Path) -> None:
    """An argument with undecodable bytes (surrogate-escaped by Python) is bad input."""
    with pytest.raises(TrackInputError, match=r"^webhook is not valid Unicode"):
        check_input(make_config(tmp_path), "ultravox", UV_ID, None, "https://h.example/\udcff")


def test_a_huge_provider_name_is_cut_in_the_message(tmp_path: Path) -> None:
    """The error line stays one readable line whatever the client sent."""
    with pytest.raises(TrackInputError) as caught:
        check_input(make_config(tmp_path), "p" * 10_000, UV_ID, None, None)
    assert len(str(caught.value)) < 200


def test_the_command_exits_2_for_a_lone_surrogate(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`callwatch track --metadata` with a lone surrogate exits 2 with one line."""
    config = tmp_path / "callwatch.toml"
    config.write_text('[worker]\ndatabase = "cw.db"\n[providers.ultravox]\n'
                      'api_key_env = "UV_KEY"\n')
    code = main(["--config", str(config), "track", "ultravox", UV_ID,
                 "--metadata", '{"x": "\\udc80"}'])
    assert code == 2
    assert "lone surrogate" in capsys.readouterr().err
    assert not (tmp_path / "cw.db").exists()


def _nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def test_metadata_depth_32_is_accepted_and_33_refused(tmp_path: Path) -> None:
    """Metadata nests at most 32 deep: the limit is exact, and the message says which."""
    config = make_config(tmp_path)
    assert check_input(config, "ultravox", UV_ID, _nested(32), None).metadata
    with pytest.raises(TrackInputError, match=r"^metadata is nested deeper than 32"):
        check_input(config, "ultravox", UV_ID, _nested(33), None)


def test_metadata_of_16_kib_is_accepted_and_more_refused(tmp_path: Path) -> None:
    """16 KiB of JSON (counted as UTF-8) is the limit."""
    config = make_config(tmp_path)
    fits = '{"x": "' + "y" * (16 * 1024 - 9) + '"}'
    assert len(fits.encode()) == 16 * 1024
    check_input(config, "ultravox", UV_ID, fits, None)
    with pytest.raises(TrackInputError, match=r"^metadata is larger than 16 KiB"):
        check_input(config, "ultravox", UV_ID, fits.replace('"}', 'é"}'), None)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=60))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_depth_counts_containers(tmp_path: Path, value: object) -> None:
    """depth() (iterative) agrees with the recursive definition of nesting."""
    assert depth(value) == _reference_depth(value)


def _reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_reference_depth, value), default=0)
    return 0


def test_the_command_refuses_an_inside_webhook_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`track --webhook http://2130706433/` exits 2 with one line; nothing is stored."""
    config = tmp_path / "callwatch.toml"
    config.write_text('[worker]\ndatabase = "cw.db"\n[providers.ultravox]\n'
                      'api_key_env = "UV_KEY"\n')
    code = main(["--config", str(config), "track", "ultravox", UV_ID,
                 "--webhook", "http://2130706433:9/hook"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--webhook host '2130706433' is a loopback" in err
    assert not (tmp_path / "cw.db").exists()


def test_a_name_resolving_inside_is_refused_by_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """This machine's own host name (not an address, not 'localhost') resolves to an inside
    address: refused after resolution, not by its text."""
    host = socket.gethostname()
    try:
        resolved = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip("this machine's name does not resolve")
    assert check_url(f"http://{host}/") is None  # the text alone passes
    assert all(forbidden(ipaddress.ip_address(r[4][0])) for r in resolved)
    config = tmp_path / "callwatch.toml"
    config.write_text('[worker]\ndatabase = "cw.db"\n[providers.ultravox]\n'
                      'api_key_env = "UV_KEY"\n')
    code = main(["--config", str(config), "track", "ultravox", UV_ID,
                 "--webhook", f"http://{host}:9/hook"])
    assert code == 2
    assert "resolves to" in capsys.readouterr().err
    assert not (tmp_path / "cw.db").exists()
