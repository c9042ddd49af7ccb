"""structlog set-up: JSON lines for journald and files, readable colours on a terminal.

Logs go to stderr so that command output on stdout (``status --json``) stays parseable.
A redaction processor is the last line of defence for secrets: any value that is a
``Secret`` or sits under a key that names a credential is masked before rendering.

Under systemd, stderr is a journald stream (``$JOURNAL_STREAM`` names its device and inode).
journald reads a ``<N>`` prefix on each line as the syslog priority (``SyslogLevelPrefix=``
defaults to yes) and strips it, so each JSON line is prefixed with its level's priority:
``journalctl -p err`` then shows errors, and ``-o cat`` still prints plain JSON.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
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


class ErrorMemory:
    """A structlog processor that remembers the last error-level event of this process.

    Installed by ``setup``; the heartbeat (``worker/heartbeat.py``) copies it into the
    worker's row. It runs after the redaction processor, so it keeps what the log shows.
    """

    def __init__(self) -> None:
        self.last: tuple[float, str] | None = None

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        if method in ("error", "exception", "critical"):
            detail = event_dict.get("error") or event_dict.get("problem")
            event = str(event_dict.get("event", "error"))
            self.last = (time.time(), f"{event}: {detail}"[:300] if detail else event[:300])
        return event_dict


LAST_ERROR = ErrorMemory()


# sd-daemon(3) priorities, as journald reads them from a "<N>" prefix.
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6,
              "debug": 7}


def priority_prefix(_logger: Any, method: str, line: Any) -> Any:
    """Prefix a rendered line with its journald priority: ``<3>{"event": ...}`` for errors."""
    return f"<{PRIORITIES.get(method, 6)}>{line}"


def is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM``).

    The variable is inherited by children whose stderr may be elsewhere, so the stream's own
    device and inode are compared with it, as sd_journal_stream_fd(3) advises.
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{info.st_dev}:{info.st_ino}" == f"{device}:{inode}"


def setup(level: str = "info", stream: TextIO | None = None, *, json: bool | None = None,
          journal: bool = False) -> None:
    """Configure structlog once per process; ``journal`` adds journald priority prefixes."""
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
            LAST_ERROR,  # the heartbeat shows the last error (worker/heartbeat.py)
            renderer,
            *([priority_prefix] if journal else []),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
