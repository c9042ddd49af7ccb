"""`callwatch deliveries`, `replay` and the delivery parts of `status`; webhook config input."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.webhooks.support import ENVIRON, T0, emit, hook, make_config
from worker import cli
from worker.cli.deliveries import BadInputError, parse_since
from worker.config import ConfigError, parse
from worker.model import EventType
from worker.store.sqlite import SQLiteStore
from worker.webhooks.base import AttemptResult
from worker.webhooks.endpoints import Endpoints
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled

URL, GONE = "https://a.example/hooks", "https://gone.example/hooks"
CONFIG = f"""
[worker]
database = "callwatch.db"
[providers.envoy]
api_key_env = "ENVOY_KEY"
[[webhooks]]
url = "{URL}"
secret_env = "HOOK_SECRET"
[[webhooks]]
url = "{GONE}"
secret_env = "HOOK_SECRET"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config and a database where call_1's started was delivered to URL, its ended died
    there, and GONE answered 410 (so both of call_1's deliveries to it wait, disabled)."""
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "callwatch.toml"
    path.write_text(CONFIG, encoding="utf-8")
    anyio.run(_fill, tmp_path)
    return path


async def _fill(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "callwatch.db")
    try:
        await emit(store, "call_1", [EventType.CALL_STARTED, EventType.CALL_ENDED])
        await store.fan_out(Endpoints(make_config(tmp_path, [hook(URL), hook(GONE)])).route, T0)
        for round_ in range(2):
            claimed = await store.claim_due_deliveries(T0, free={}, default_free=8, limit=10,
                                                       lease_seconds=60)
            results = []
            for item in claimed.deliveries:
                decision: Decision
                if item.endpoint == GONE:
                    decision = Disabled(reason="HTTP 410 Gone")
                else:
                    decision = Delivered() if round_ == 0 else Dead(reason="HTTP 500; gave up")
                results.append(AttemptResult(delivery=item, decision=decision))
            await store.record_attempts(results, T0)
    finally:
        await store.close()


def run(config: Path, *argv: str) -> int:
    return cli.main(["--config", str(config), *argv])


def test_deliveries_table_and_filters(config_file: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Grouped under CALL -> ENDPOINT: event id, event, state, tries, last answer, next; the
    whole listing fits in 100 columns."""
    assert run(config_file, "deliveries") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] in (f"envoy call_1 -> {URL}", f"envoy call_1 -> {GONE}")
    assert lines[1].split() == ["EVENT", "ID", "EVENT", "STATE", "TRIES", "LAST", "NEXT"]
    assert out.count("envoy call_1 -> ") == 2 and out.count("msg_") == 4
    assert max(len(line) for line in lines) <= 100
    assert run(config_file, "deliveries", "--dead") == 0
    dead = capsys.readouterr().out.splitlines()[2:]
    assert len(dead) == 1 and "call.ended" in dead[0] and "HTTP 500; gave up" in dead[0]
    assert run(config_file, "deliveries", "--failed", "--endpoint", GONE, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["endpoint"], r["state"]) for r in rows} == {(GONE, "disabled")}


def test_replay_one_event_and_the_dead(config_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """replay EVENT_ID re-queues it; replay --dead re-queues the dead and re-enables 410s."""
    assert run(config_file, "deliveries", "--json", "--endpoint", URL) == 0
    started = next(r for r in json.loads(capsys.readouterr().out) if r["type"] == "call.started")
    assert run(config_file, "replay", started["event_id"]) == 0
    assert "re-queued 1 delivery" in capsys.readouterr().out
    assert run(config_file, "replay", "--dead", "--since", "2027-02-01T00:00:00Z") == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert run(config_file, "replay", "--dead") == 0
    out = capsys.readouterr().out
    assert f"re-enabled endpoint {GONE}" in out and "re-queued 3 deliveries" in out
    assert run(config_file, "status", "--json") == 0
    counts = json.loads(capsys.readouterr().out)["deliveries"]
    assert (counts["pending"], counts["dead"], counts["disabled_endpoints"]) == (4, 0, [])


@pytest.mark.parametrize(("argv", "message"), [
    (["replay"], "either an EVENT_ID or --dead"),
    (["replay", "msg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "--dead"], "either an EVENT_ID or --dead"),
    (["replay", "not-an-id"], "malformed event id"),
    (["replay", "msg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "--since", "1h"], "--since goes with"),
    (["replay", "--dead", "--since", "last tuesday"], "give a time like"),
    (["replay", "--dead", "--since", "2026-11-20T12:00:00"], "add a time zone"),
    (["deliveries", "--failed", "--dead"], "not allowed with"),
    (["deliveries", "--limit", "0"], "--limit must be 1 or more"),
])
def test_bad_input_exits_2_with_one_line(config_file: Path, capsys: pytest.CaptureFixture[str],
                                         argv: list[str], message: str) -> None:
    """Usage mistakes exit 2 with one readable line, never a traceback."""
    assert run(config_file, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_replay_of_an_unknown_event_exits_1(config_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A well-formed id that is not in the outbox is a failure (1), saying so."""
    assert run(config_file, "replay", "msg_" + "a" * 32) == 1
    assert "no event msg_" in capsys.readouterr().err


def test_status_of_one_call_shows_each_delivery(config_file: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """status PROVIDER CALL_ID lists every (event, endpoint) delivery with its state."""
    assert run(config_file, "status", "envoy", "call_1") == 0
    out = capsys.readouterr().out
    section = out[out.index("webhook deliveries (4):"):]
    assert section.count("disabled") == 2 and "delivered" in section and "dead" in section
    assert run(config_file, "status", "envoy", "call_1", "--json") == 0
    detail = json.loads(capsys.readouterr().out)
    assert sorted(d["state"] for d in detail["deliveries"]) == ["dead", "delivered", "disabled",
                                                                "disabled"]


def test_status_overview_warns_about_disabled_endpoints(
        config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The overview counts deliveries and names each disabled endpoint with its reason."""
    assert run(config_file, "status") == 0
    out = capsys.readouterr().out
    assert "deliveries: 0 pending (0 retrying), 1 dead, 2 waiting for a disabled endpoint" in out
    assert f"endpoint {GONE} is disabled" in out and "HTTP 410 Gone" in out


@pytest.mark.parametrize(("text", "seconds_ago"), [
    ("2h", 7200), ("30m", 1800), ("45s", 45), ("7d", 7 * 86400), ("1h30m", 5400),
    ("1.5h", 5400),
])
def test_since_takes_an_age(text: str, seconds_ago: float) -> None:
    """--since 2h means two hours before now."""
    assert parse_since(text, 1_000_000.0) == 1_000_000.0 - seconds_ago


def test_since_takes_rfc_3339() -> None:
    """--since 2027-01-15T08:00:00Z (or with an offset) is that moment."""
    assert parse_since("2027-01-15T08:00:00Z", 0) == T0
    assert parse_since("2027-01-15T09:00:00+01:00", 0) == T0
    with pytest.raises(BadInputError):
        parse_since("2h ago", 0)


def test_webhook_url_must_be_http_and_secret_base64(tmp_path: Path) -> None:
    """A non-http(s) URL and a secret that is not base64 are config errors naming the key."""
    bad = {"worker": {}, "providers": {"envoy": {"api_key_env": "ENVOY_KEY"}},
           "webhooks": [{"url": "ftp://hooks.example.com/x", "secret_env": "BAD"}]}
    with pytest.raises(ConfigError) as caught:
        parse(bad, tmp_path / "c.toml", {**ENVIRON, "BAD": "whsec_!!!not base64!!!"})
    problems = "\n".join(caught.value.problems)
    assert "webhooks[0].url: must be an http(s) URL, got 'ftp://hooks.example.com/x'" in problems
    assert "webhooks[0].secret_env: the secret is not a whsec_ secret" in problems
    assert "not base64!!!" not in problems  # the secret itself is never shown


def test_max_in_flight_overrides_the_delivery_default(tmp_path: Path) -> None:
    """[[webhooks]] max_in_flight wins over [delivery] max_in_flight_per_endpoint."""
    config = make_config(tmp_path, [hook(URL, max_in_flight=3), hook(GONE)],
                         delivery={"max_in_flight_per_endpoint": 5})
    endpoints = Endpoints(config)
    assert (endpoints.limit(URL), endpoints.limit(GONE), endpoints.per_call_limit) == (3, 5, 3)
    with pytest.raises(ConfigError, match=r"webhooks\[0\].max_in_flight: must be 1 to 1000"):
        make_config(tmp_path, [hook(URL, max_in_flight=0)])


def test_status_and_deliveries_show_urls_without_their_tokens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A per-call URL's query (often a token) and user info never reach the terminal or the
    JSON: the same redaction as the logs."""
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "callwatch.toml"
    path.write_text(CONFIG, encoding="utf-8")
    tokened = "https://h.example/in?token=s3cr3t-t0ken"

    async def fill() -> None:
        store = await SQLiteStore.open(tmp_path / "callwatch.db")
        try:
            await emit(store, "call_9", [EventType.CALL_STARTED], webhook=tokened)
            await store.fan_out(Endpoints(make_config(tmp_path, [hook(URL)])).route, T0)
        finally:
            await store.close()

    anyio.run(fill)
    outputs = []
    for args in (["deliveries"], ["deliveries", "--json"], ["status", "envoy", "call_9"],
                 ["status", "envoy", "call_9", "--json"]):
        assert cli.main(["--config", str(path), *args]) == 0
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        assert "https://h.example/in" in out
        assert "s3cr3t" not in out
