"""PURE: the one ``Retry-After`` parser, for provider replies and webhook receivers alike.

RFC 9110: delta-seconds (ASCII digits only: ``str.isdigit`` also accepts ``"²"``, which
``float`` then refuses) or an HTTP-date. Anything else is None: the caller's own schedule
decides then. The result is clamped to ``[0, cap]`` so that no reply can park work for days.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC

_SECONDS = re.compile(r"\d{1,9}(\.\d{1,6})?", re.ASCII)


def parse_retry_after(value: str | None, now: float, *, cap: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (POSIX seconds), within ``[0, cap]``."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return min(float(text), cap)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the sender did not say, and HTTP-dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    try:
        seconds = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else None
