"""The track rules the API shares with `callwatch track`: the same input fails both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.support import UV_ID, make_config
from worker.cli import UsageError, main, parse_track_input


@pytest.mark.parametrize(("metadata", "message"), [
    ('{"x": NaN}', "--metadata is not valid JSON: NaN is not a JSON value"),
    ('{"x": Infinity}', "--metadata is not valid JSON: Infinity is not a JSON value"),
    ('{"x": "\\ud800"}', "--metadata holds a lone surrogate"),
    ("[" * 5000 + "]" * 5000, "--metadata is not valid JSON"),
    ('{"n": ' + "1" * 5000 + "}", "--metadata is not valid JSON"),
])
def test_metadata_that_events_could_not_carry_is_refused(tmp_path: Path, metadata: str,
                                                          message: str) -> None:
    """NaN, lone surrogates and absurd JSON never reach the database, where they would break
    every event body of the call (events are strict UTF-8 JSON)."""
    with pytest.raises(UsageError, match="^" + message.replace("[", r"\[")):
        parse_track_input(make_config(tmp_path), "ultravox", UV_ID, metadata, None)


def test_a_webhook_url_that_is_not_unicode_is_refused(tmp_path: Path) -> None:
    """An argument with undecodable bytes (surrogate-escaped by Python) is bad input."""
    with pytest.raises(UsageError, match="--webhook is not valid Unicode"):
        parse_track_input(make_config(tmp_path), "ultravox", UV_ID, None,
                          "https://h.example/\udcff")


def test_a_huge_provider_name_is_cut_in_the_message(tmp_path: Path) -> None:
    """The error line stays one readable line whatever the client sent."""
    with pytest.raises(UsageError) as caught:
        parse_track_input(make_config(tmp_path), "p" * 10_000, UV_ID, None, None)
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
