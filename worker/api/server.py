"""The API as a daemon component: uvicorn inside the daemon's task group, on a socket we bind.

Binding the socket ourselves (rather than letting uvicorn do it) means the address is known
and checked before ``task_status.started()``: a port in use fails the daemon's start with a
clear error instead of a log line nobody reads. uvicorn touches neither signals nor logging
config: the daemon owns both, and ``stop()`` is how it asks the server to finish.

``[api] listen`` is ``HOST:PORT`` (TCP) or an absolute path (a unix socket, mode 0660, for a
reverse proxy on the same machine; a stale socket file left by a crash is replaced, a live
one is not).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus

from worker.api.app import ApiApp
from worker.api.guard import ConnectionGuard
from worker.api.runtime import ApiRuntime, ApiStats
from worker.config import Config
from worker.embedded_server import EmbeddedServer
from worker.logbudget import LogBudget

log = structlog.get_logger("worker.api")

SHUTDOWN_GRACE = 5  # seconds in-flight requests get once the daemon stops
MAX_CONNECTIONS = 256  # open connections; past this the one idle longest makes room
MAX_HEAD_BYTES = 32 * 1024  # a request line and headers; more is refused (400)
HEAD_TIMEOUT = 10.0  # seconds to send a complete request head, from the first byte or connect
KEEP_ALIVE = 15  # seconds an answered connection may stay idle


class ListenError(Exception):
    """The configured address cannot be listened on."""


class _ToStructlog(logging.Handler):
    """uvicorn logs through the standard library; the daemon's log is structlog lines (JSON
    for journald), so a stray plain-text line would break whoever parses it. Its warnings
    are about requests strangers send ("Invalid HTTP request received."): rate-limited."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.budget = LogBudget()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            log.error("uvicorn.log", logger=record.name, message=record.getMessage())
        elif self.budget.allow():
            log.warning("uvicorn.log", logger=record.name, message=record.getMessage(),
                        suppressed=self.budget.take_suppressed())


def _route_uvicorn_logs() -> None:
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(handler, _ToStructlog) for handler in logger.handlers):
        logger.addHandler(_ToStructlog(logging.WARNING))
        logger.propagate = False


def bind(listen: str) -> socket.socket:
    """A bound (not yet listening) socket for ``HOST:PORT`` or a unix socket path."""
    if listen.startswith("/"):
        return _bind_unix(Path(listen))
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")  # "[::1]:8787"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE)[0]
    except (OSError, ValueError) as exc:
        raise ListenError(f"[api] listen {listen!r}: {exc}") from exc
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it Nagle + delayed ACK add 40 ms to every keep-alive reply.
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"[api] listen {listen!r}: {exc.strerror}") from exc
    return sock


def _bind_unix(path: Path) -> socket.socket:
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        # Before listen(): nobody can connect while the mode is still the umask's.
        os.chmod(path, 0o660)  # noqa: PTH101 - the path form is what we bound
    except OSError as exc:
        sock.close()
        raise ListenError(f"[api] listen {str(path)!r}: {exc.strerror}") from exc
    return sock


def _remove_stale(path: Path) -> None:
    """Delete a socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"[api] listen {str(path)!r}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # left behind by a process that died
        return
    except OSError:
        return  # let bind() report it
    finally:
        probe.close()
    raise ListenError(f"[api] listen {str(path)!r}: another process is listening there")


def _close(sock: socket.socket, address: object) -> None:
    """Close the listener; a unix socket's file goes too, so the next start finds none."""
    sock.close()
    if isinstance(address, str):
        Path(address).unlink(missing_ok=True)


class ApiServer:
    """The daemon component serving ``ApiApp`` until ``stop()``."""

    name = "api"

    def __init__(self, runtime: ApiRuntime, *, listen: str | None = None,
                 app: ApiApp | None = None) -> None:
        self.listen = listen or runtime.config.api.listen or ""
        self.app = app if app is not None else ApiApp(runtime)
        self.address: str | tuple[str, int] | None = None  # once bound: path or (host, port)
        self._server: EmbeddedServer | None = None
        self._stopping = False
        self.guard = ConnectionGuard(head_timeout=HEAD_TIMEOUT, max_connections=MAX_CONNECTIONS)

    @property
    def stats(self) -> ApiStats:
        return self.app.ctx.stats

    def progress(self) -> float | None:
        return None  # uvicorn's loop has nothing to vouch for; /healthz itself probes it

    def describe(self) -> str:
        return ""

    def reconfigure(self, config: Config) -> None:
        """Nothing to do: the app reads ``runtime.config`` per request (token, secrets)."""
        del config

    @property
    def url(self) -> str:
        """``http://host:port`` for a TCP listener (tests and benchmarks use it)."""
        if isinstance(self.address, tuple):
            host, port = self.address[0], self.address[1]
            return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        raise RuntimeError("not listening on TCP")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sock = bind(self.listen)
        self.address = sock.getsockname()
        config = uvicorn.Config(
            # h11, not httptools: httptools has no cap on the size of a request head (a 300 MB
            # header cost 400 MB of RSS); h11's is h11_max_incomplete_event_size.
            self.app, http=self.guard.protocol(), h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            ws="none", lifespan="off", access_log=False, log_config=None, log_level="warning",
            proxy_headers=False, server_header=False, timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            # uvicorn's own limit (a 503 past it) counts every connection, slow-loris ones
            # included, and those being closed; the guard keeps the live ones at
            # MAX_CONNECTIONS by evicting, so this is only a backstop.
            limit_concurrency=2 * MAX_CONNECTIONS)
        _route_uvicorn_logs()
        self._server = EmbeddedServer(config, started=task_status.started)
        if self._stopping:
            self._server.request_exit()
        try:
            log.info("api.listening", address=self.listen if isinstance(self.address, str)
                     else self.url)
            await self._server.serve(sockets=[sock])
        finally:
            _close(sock, self.address)
            log.info("api.stopped")

    def stop(self) -> None:
        """Stop accepting connections; requests in flight get ``SHUTDOWN_GRACE`` seconds."""
        self._stopping = True
        if self._server is not None:
            self._server.request_exit()
