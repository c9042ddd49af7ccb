"""structlog set-up: JSON lines for journald and files, readable colours on a terminal.

Logs go to stderr so that command output on stdout (``status --json``) stays parseable.
A redaction processor is the last line of defence for secrets: any value that is a
``Secret`` or sits under a key that names a credential is masked before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from worker.secrets import Secret

_SENSITIVE = ("api_key", "apikey", "secret", "token", "authorization", "password", "widget_key",
              "x-api-key")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]
           ) -> MutableMapping[str, Any]:
    """Mask secrets in a log event (structlog processor)."""
    for key, value in event_dict.items():
        if isinstance(value, Secret) or (
            isinstance(value, str) and any(word in key.lower() for word in _SENSITIVE)
        ):
            event_dict[key] = "**********"
    return event_dict


def setup(level: str = "info", stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure structlog once per process."""
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    renderer: Any = (structlog.processors.JSONRenderer() if as_json
                     else structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
