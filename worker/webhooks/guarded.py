"""The per-call webhooks' connections: resolve once, check, connect to the checked address.

A per-call URL was checked when the call was tracked, but a DNS name can point elsewhere by
the time we deliver (DNS rebinding: public when ``track`` looked, 169.254.169.254 a second
later). So every new connection here resolves the host itself, refuses if any address it
got is inside (``addresses.check_resolved``), and connects to exactly that checked address;
the library never resolves the name a second time. TLS still verifies the certificate
against the host *name* and sends it as SNI: httpcore takes ``server_hostname`` from the
URL, not from the address we connected to. The same idea as svix-webhooks' (and
``advocate``'s) SSRF filters, placed at httpcore's network-backend seam.

A refused host or address raises ``httpx.ConnectError`` ("refused: ..."): the attempt
fails, is recorded, and is retried on the schedule like any unreachable receiver. Redirects
are never followed (``transport.post``), so a 3xx cannot lead inside either. The URL text
is checked again too, so a SIGHUP that narrows ``allow_hosts`` applies to the next attempt.

Kept-alive connections are reused: they were checked when opened, to the same address.

Over aiohttp (``http_aio``) the same check sits at aiohttp's seam, the connector's
resolver (``GuardedResolver``): aiohttp connects to the addresses it returns and verifies
TLS against the host name. Its DNS cache is off, so each new connection asks again. An
address literal never reaches a resolver in aiohttp (nor a name lookup in either), so the
URL check before every request is what refuses ``http://127.0.0.1/`` in every spelling.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from worker.addresses import check_resolved, check_url
from worker.config_sections import CallWebhooksConfig
from worker.http_aio import DEFAULT, AioTransport, Kind

Resolver = Callable[[str, int], Awaitable[list[str]]]

_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def as_httpx_error(exc: Exception) -> Exception:
    """httpcore's error as the httpx one the relay understands (others unchanged)."""
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection (order kept, no repeats)."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: Callable[[], CallWebhooksConfig], *,
                 resolver: Resolver = resolve,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host[:80]} took too long") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host[:80]}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host[:80]}: no address")
        if not self._policy().allow_private and (why := check_resolved(host, addresses)):
            raise httpcore.ConnectError(f"refused: {why}")
        *others, final = addresses
        for address in others:  # each one checked above; the name is never looked up again
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout,
                                                      local_address=local_address,
                                                      socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return await self._inner.connect_tcp(final, port, timeout=timeout,
                                              local_address=local_address,
                                              socket_options=socket_options)

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("per-call webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver seam: resolve once, refuse if any address is inside, else hand
    aiohttp exactly the checked addresses (numeric: it never looks the name up again)."""

    def __init__(self, policy: Callable[[], CallWebhooksConfig], resolver: Resolver) -> None:
        self._policy = policy
        self._resolve = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        # aiohttp turns an OSError here into ClientConnectorDNSError (httpx's ConnectError),
        # whose text quotes the OSError's strerror: hence the (errno, text) form.
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host[:80]}: {exc}") from None
        if not addresses:
            raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host[:80]}: no address")
        if not self._policy().allow_private and (why := check_resolved(host, addresses)):
            raise OSError(errno.EACCES, f"refused: {why}")
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                              proto=0, flags=flags) for address in addresses]

    async def close(self) -> None:
        return None


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterator[bytes] | Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:  # httpcore's errors become httpx's, as httpx's own do
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """The per-call URLs' pool: at most ``max_connections`` open, every one guarded."""

    def __init__(self, policy: CallWebhooksConfig, *, max_connections: int,
                 resolver: Resolver = resolve, verify: ssl.SSLContext | bool = True,
                 kind: Kind = DEFAULT) -> None:
        self.policy = policy  # SIGHUP replaces it; connections opened later follow it
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else \
            httpx.create_ssl_context(verify=verify)
        self._aio = AioTransport(
            max_connections=max_connections, verify=ssl_context,
            resolver=lambda: GuardedResolver(lambda: self.policy, resolver),
        ) if kind == "aiohttp" else None
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=max_connections,
            max_keepalive_connections=max_connections, keepalive_expiry=5.0,
            network_backend=GuardedBackend(lambda: self.policy, resolver=resolver))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if (why := check_url(url, allow_hosts=self.policy.allow_hosts,
                             allow_private=self.policy.allow_private)) is not None:
            raise httpx.ConnectError(f"refused: {why}", request=request)
        if self._aio is not None:
            return await self._aio.handle_async_request(request)
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("an async transport sends async bodies only")
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream,
            extensions=request.extensions)
        try:
            reply = await self._pool.handle_async_request(core)
        except Exception as exc:
            raise as_httpx_error(exc) from exc
        return httpx.Response(status_code=reply.status, headers=reply.headers,
                              stream=_Body(reply.stream), extensions=reply.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._aio is not None:
            await self._aio.aclose()
