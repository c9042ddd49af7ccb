"""The systemd notify protocol (sd_notify), spoken directly: it is one datagram per message.

``NOTIFY_SOCKET`` names an ``AF_UNIX`` datagram socket (a leading ``@`` means the abstract
namespace); each message is newline-separated ``KEY=VALUE`` lines such as ``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``. Without ``NOTIFY_SOCKET``
(not under systemd) every call is a cheap no-op. Sending never raises: a daemon must not die
because its supervisor's socket went away.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("worker.notify")


class Notifier:
    """Sends sd_notify messages to the socket systemd gave us, if any."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        # Shown before every STATUS= line while set: a rejected reload stays visible in
        # `systemctl status` (the line is refreshed every few seconds) until one succeeds.
        self.note: str | None = None
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """Read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (honouring ``WATCHDOG_PID``)."""
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half of what systemd waits, as sd_watchdog_enabled() advises."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def send(self, **fields: str | int) -> bool:
        """Send one message, e.g. ``send(READY=1, STATUS="tracking 3 calls")``."""
        if self._sock is None or self.address is None:
            return False
        if "STATUS" in fields and self.note:
            fields["STATUS"] = f"{self.note}; {fields['STATUS']}"
        text = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(text.encode(), target)
        except OSError as exc:
            log.warning("notify.failed", error=str(exc), message=text.split("\n", 1)[0])
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload to its request.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                         // 1000)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: str) -> str:
    return value.replace("\n", " ")
