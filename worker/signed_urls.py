"""When does a signed link stop working, and what time does a provider's timestamp mean.

Both questions are asked of data we do not control, so both functions answer ``None`` for
anything they cannot read and never raise: an unknown expiry only makes the archiver ask for a
fresh link sooner, while an exception would take a whole poll down with it.

Signed URLs come in three shapes (PROVIDERS.md, "Signed URLs in general"):

- S3 SigV4: ``X-Amz-Date=20261120T120000Z&X-Amz-Expires=<seconds>``
- Google V4: ``X-Goog-Date=20261120T120000Z&X-Goog-Expires=<seconds>``
- old S3 / CloudFront: ``Expires=<unix seconds>``
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

# SigV4 and Google V4 both refuse links valid longer than seven days; a bigger number is not
# a link either service would honour, so we do not pretend to know its expiry.
MAX_SIGNED_DURATION = 7 * 24 * 3600
_SIGNING_DATE = re.compile(r"\d{8}T\d{6}Z", re.ASCII)
_DURATION = re.compile(r"\d{1,7}", re.ASCII)
_UNIX_SECONDS = re.compile(r"\d{1,11}", re.ASCII)
_NUMBER = re.compile(r"[+-]?\d{1,12}(\.\d{1,9})?", re.ASCII)
# datetime's own range, so that every float we return can become an RFC 3339 string again.
_MIN_TS = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_MAX_TS = datetime(9999, 12, 30, tzinfo=UTC).timestamp()
_MAX_TIMESTAMP_TEXT = 64


def url_expiry(url: str, now: float | None = None) -> float | None:
    """Return when the signed ``url`` expires (POSIX seconds), or None when it does not say.

    ``now`` is used only for a SigV4/Google duration whose signing date is missing: the link
    cannot outlive ``now + duration``, so callers that prefer that upper bound to ``None`` pass
    the current time. Parameter names are matched case-insensitively; the first one wins.
    """
    params = _query_params(url)
    if params is None:
        return None
    for prefix in ("x-amz-", "x-goog-"):
        duration = _duration(params.get(prefix + "expires"))
        if duration is None:
            continue
        signed_at = _signing_date(params.get(prefix + "date"))
        if signed_at is not None:
            return signed_at + duration
        return None if now is None else now + duration
    expires = params.get("expires")
    if expires is not None and _UNIX_SECONDS.fullmatch(expires):
        return float(int(expires))
    return None


def parse_timestamp(value: object) -> float | None:
    """Read a provider timestamp as POSIX seconds; None for null, garbage or out of range.

    Accepts RFC 3339 / ISO 8601 (``Z`` or an offset, any number of fractional digits, ``T`` or
    a space, either case; a naive time is UTC) and plain unix seconds as a number or a numeric
    string. Booleans are not numbers here, whatever Python thinks.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _in_range(float(value))
    if not isinstance(value, str) or len(value) > _MAX_TIMESTAMP_TEXT:
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _in_range(float(text))
    return _iso_seconds(text)


def _iso_seconds(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.upper())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _in_range(parsed.timestamp())
    except (OverflowError, ValueError):  # garbage, or an offset pushed it out of range
        return None


def _query_params(url: str) -> dict[str, str] | None:
    """Lower-cased query parameter names -> first value; None when ``url`` is not a URL."""
    try:
        query = urlsplit(url).query
        pairs = parse_qsl(query, keep_blank_values=True)
    except (ValueError, TypeError):
        return None
    params: dict[str, str] = {}
    for name, value in pairs:
        params.setdefault(name.lower(), value.strip())
    return params


def _duration(value: str | None) -> int | None:
    if value is None or not _DURATION.fullmatch(value):
        return None
    seconds = int(value)
    return seconds if 0 < seconds <= MAX_SIGNED_DURATION else None


def _signing_date(value: str | None) -> float | None:
    if value is None or not _SIGNING_DATE.fullmatch(value):
        return None
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:  # month 13, second 61...
        return None


def _in_range(seconds: float) -> float | None:
    if not math.isfinite(seconds) or not _MIN_TS <= seconds <= _MAX_TS:
        return None
    return seconds
