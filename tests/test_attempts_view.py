"""``deliveries show``: what an attempt shows, with nothing secret and within 100 columns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.cli.attempts import attempt_json, attempt_rows, redact, reply_text
from worker.store.base import AttemptView
from worker.terminal import WIDTH, table
from worker.webhooks.base import AttemptLog

SECRET = "tok3n-s3cret"  # noqa: S105 - what must never be shown


@given(prefix=st.text(max_size=30), path=st.from_regex(r"/[a-z/]{0,20}", fullmatch=True))
def test_no_query_or_user_info_survives_redaction(prefix: str, path: str) -> None:
    """Any URL in a text loses its user info and query; the text around it stays."""
    text = f"{prefix} https://user:{SECRET}@hooks.example.com{path}?token={SECRET} done"
    shown = redact(text)
    assert SECRET not in shown and shown.endswith(" done")
    assert f"https://hooks.example.com{path}" in shown


def test_a_reply_is_cut_to_its_first_bytes_and_decoded_safely() -> None:
    """The first 200 bytes, bad UTF-8 replaced, an ellipsis when more was stored."""
    assert reply_text(b"ok") == "ok"
    long = reply_text(b"\xff" + b"x" * 500)
    assert long.startswith("\ufffd") and long.endswith("…") and len(long) == 201


def test_rows_and_json_show_every_attempt_redacted_within_the_width() -> None:
    """Endpoint without query, status, duration, error or reply; a table of 100 columns."""
    endpoint = f"https://hooks.example.com/in?key={SECRET}"
    views = [
        AttemptView(endpoint=endpoint, state="pending", attempt=AttemptLog(
            number=1, started_at=1_800_000_000.0, latency=0.25, status=None,
            error=f"connect to https://hooks.example.com/in?key={SECRET} refused")),
        AttemptView(endpoint=endpoint, state="delivered", attempt=AttemptLog(
            number=2, started_at=1_800_000_060.0, latency=0.031, status=200,
            reply=b'{"received": true, "note": "' + b"y" * 300 + b'"}')),
    ]
    rows = attempt_rows(views)
    assert rows[0][:5] == ["2027-01-15 08:00:00", "1", "https://hooks.example.com/in", "-",
                           "250ms"]
    assert rows[1][3:5] == ["200", "31ms"] and rows[1][5].startswith('{"received": true')
    shown = table(rows, ["TIME (UTC)", "#", "ENDPOINT", "STATUS", "TOOK", "REPLY"],
                  shrink=("ENDPOINT", "REPLY"))
    assert SECRET not in shown and all(len(line) <= WIDTH for line in shown.splitlines())
    data = [attempt_json(v) for v in views]
    assert SECRET not in repr(data)
    assert data[1]["status"] == 200 and data[1]["duration_ms"] == 31.0
