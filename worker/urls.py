"""The one way a URL is shown, in logs and in command output alike: without its secrets.

Webhook URLs often carry a token in the query, signed recording URLs carry their signature
there, and any URL may carry ``user:password@``. What is shown keeps the scheme, host, port
and path: enough to tell endpoints apart, nothing to replay.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit


@functools.lru_cache(maxsize=1024)
def safe_url(url: str) -> str:
    """The URL without user info, query or fragment (``<unparseable url>`` if it is not one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
