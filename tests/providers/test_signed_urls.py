"""Expiry of signed URLs and tolerant timestamps: never raise, never guess wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.signed_urls import MAX_SIGNED_DURATION, parse_timestamp, url_expiry

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()


def test_s3_sigv4_expiry() -> None:
    """X-Amz-Date plus X-Amz-Expires is the expiry of an S3 presigned URL."""
    url = ("https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Date=20261120T120000Z&X-Amz-Expires=3600&X-Amz-Signature=ab")
    assert url_expiry(url) == NOON + 3600


def test_google_v4_expiry() -> None:
    """X-Goog-Date plus X-Goog-Expires (Ultravox's five-minute links) is the expiry."""
    url = ("https://storage.googleapis.com/b/rec.wav?X-Goog-Algorithm=GOOG4-RSA-SHA256"
           "&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261120%2Fauto%2Fstorage"
           "&X-Goog-Date=20261120T120000Z&X-Goog-Expires=300&X-Goog-Signature=00ff")
    assert url_expiry(url) == NOON + 300


def test_old_s3_and_cloudfront_expires() -> None:
    """Expires=<unix seconds> is an absolute expiry."""
    assert url_expiry("https://d.cloudfront.net/a.mp4?Expires=1795003200&Signature=x") == (
        1795003200.0)


def test_parameter_names_are_case_insensitive() -> None:
    """Lower-cased parameter names are read like the canonical ones."""
    assert url_expiry("https://h/a?x-amz-date=20261120T120000Z&x-amz-expires=60") == NOON + 60
    assert url_expiry("https://h/a?expires=1795003200") == 1795003200.0


@pytest.mark.parametrize(
    "url",
    [
        "https://h/a.mp4",
        "https://h/a?X-Amz-Date=20261120T120000Z",
        "https://h/a?X-Amz-Date=20261320T120000Z&X-Amz-Expires=60",
        "https://h/a?X-Amz-Date=2026-11-20&X-Amz-Expires=60",
        "https://h/a?X-Amz-Date=20261120T120000Z&X-Amz-Expires=-5",
        "https://h/a?X-Amz-Date=20261120T120000Z&X-Amz-Expires=1e3",
        f"https://h/a?X-Amz-Date=20261120T120000Z&X-Amz-Expires={MAX_SIGNED_DURATION + 1}",
        "https://h/a?Expires=soon",
        "https://h/a?Expires=99999999999999999999",
        "http://[::1/a?Expires=1",
        "",
    ],
)
def test_absent_or_malformed_expiry_is_none(url: str) -> None:
    """Anything that is not a well-formed expiry reads as unknown."""
    assert url_expiry(url) is None


def test_duration_without_date_uses_now_only_when_given() -> None:
    """A duration with no signing date bounds the expiry only relative to a supplied now."""
    url = "https://h/a?X-Goog-Expires=300"
    assert url_expiry(url) is None
    assert url_expiry(url, now=1000.0) == 1300.0


@given(st.text())
def test_url_expiry_never_raises(text: str) -> None:
    """Arbitrary text gives a float or None, never an exception."""
    result = url_expiry(text)
    assert result is None or isinstance(result, float)


@given(st.text(alphabet="?&=%XxAaMmZzGgOoTt-Ee0123456789sS:/[]"))
def test_url_expiry_never_raises_on_url_like_text(text: str) -> None:
    """Text built from URL and parameter characters gives a float or None, never an exception."""
    result = url_expiry("https://h/a?" + text)
    assert result is None or isinstance(result, float)


# Hypothesis wants naive bounds; the generated values are made aware in the tests.
LOW, HIGH = datetime(1000, 1, 1), datetime(9998, 1, 1)  # noqa: DTZ001


@given(
    st.datetimes(min_value=LOW, max_value=HIGH),
    st.integers(min_value=1, max_value=MAX_SIGNED_DURATION),
    st.sampled_from(["Amz", "Goog", "amz", "GOOG"]),
)
def test_signed_date_round_trips(when: datetime, seconds: int, vendor: str) -> None:
    """A generated signing date and duration come back as exactly date + duration."""
    when = when.replace(microsecond=0, tzinfo=UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    url = f"https://h/k?X-{vendor}-Date={stamp}&X-{vendor}-Expires={seconds}&X-{vendor}-Sig=a"
    assert url_expiry(url) == when.timestamp() + seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T12:00:00Z", NOON),
        ("2026-11-20T12:00:00z", NOON),
        ("2026-11-20t12:00:00Z", NOON),
        ("2026-11-20 12:00:00Z", NOON),
        ("2026-11-20T13:30:00+01:30", NOON),
        ("2026-11-20T07:00:00-05:00", NOON),
        ("2026-11-20T12:00:00.250Z", NOON + 0.25),
        ("2026-11-20T12:00:00.250000000Z", NOON + 0.25),
        ("2026-11-20T12:00:00", NOON),
        ("  2026-11-20T12:00:00Z  ", NOON),
        (NOON, NOON),
        (int(NOON), NOON),
        (str(int(NOON)), NOON),
        ("1795003200.5", 1795003200.5),
    ],
)
def test_parse_timestamp_accepts_the_usual_shapes(value: object, expected: float) -> None:
    """RFC 3339 with Z or offsets, fractions, naive-as-UTC and unix numbers all parse."""
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [None, True, False, "", "yesterday", "2026-13-01T00:00:00Z", "2026-11-20T25:00:00Z",
     float("nan"), float("inf"), 10**20, [], {}, "9" * 5000, "0001-01-01T00:00:00+01:00"],
)
def test_parse_timestamp_garbage_is_none(value: object) -> None:
    """Garbage, booleans, non-finite and out-of-range values read as unknown."""
    assert parse_timestamp(value) is None


@given(st.datetimes(min_value=LOW, max_value=HIGH,
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_parse_timestamp_round_trips_isoformat(when: datetime) -> None:
    """Any aware datetime written as ISO 8601 reads back as the same instant."""
    assert parse_timestamp(when.isoformat()) == pytest.approx(when.timestamp(), abs=1e-6)
    zulu = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert parse_timestamp(zulu) == pytest.approx(when.timestamp(), abs=1e-6)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans(),
                 st.lists(st.integers())))
def test_parse_timestamp_never_raises(value: object) -> None:
    """Arbitrary values give a float or None, never an exception."""
    result = parse_timestamp(value)
    assert result is None or isinstance(result, float)
