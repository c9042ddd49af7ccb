"""The HTTP transport choice: httpx's own (httpcore) or aiohttp's pool and parser under httpx.

Every module keeps the httpx API (requests, responses, errors); only the transport under
``httpx.AsyncClient`` (and under the relay's direct ``handle_async_request``) differs.

``aiohttp``: ``httpx_aiohttp.AiohttpTransport`` (the httpx transport over an
``aiohttp.ClientSession``), configured here so that it keeps every behaviour the suite pins:

* no redirects followed (``allow_redirects=False``), no decompression in aiohttp (httpx
  decodes, so the inflate caps apply), no cookie jar (a receiver cannot set a cookie that
  we would send back);
* timeouts from the request (connect, read, pool; aiohttp has no write timeout: the relay's
  wall-clock limit covers sending);
* at most ``max_connections`` per origin (``limit_per_host``), none overall, keep-alive
  connections closed after ``keepalive_expiry`` s; a response holds its connection until it
  is closed, and closing one unread drops the connection instead of draining it;
* the URL is sent as httpx encoded it (``yarl.URL(..., encoded=True)``): signed URLs keep
  their exact bytes;
* every aiohttp error becomes the httpx error the callers catch (``_ERRORS``), also while
  the body is read;
* an optional ``resolver`` (``aiohttp.abc.AbstractResolver``) decides where a host name may
  connect: the per-call webhooks' guard (``webhooks/guarded.py``); with it the DNS cache
  is off, so every new connection asks it again.

Environment proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) stay httpx's business:
``AioClient`` lets httpx read them and mount one proxied aiohttp transport per proxy, as
it does for its own transports (``trust_env``); aiohttp's session never reads them itself.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import aiohttp
import httpx
import structlog
import yarl
from aiohttp.abc import AbstractResolver
from httpx_aiohttp import AiohttpTransport

Kind = Literal["httpx", "aiohttp"]
KINDS: tuple[Kind, ...] = ("httpx", "aiohttp")
DEFAULT: Kind = "aiohttp"
ENV = "CALLWATCH_HTTP_TRANSPORT"
_LIMITS = httpx.Limits()

# Most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionResetError, httpx.ReadError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.ProtocolError),
    (asyncio.TimeoutError, httpx.TimeoutException),
)


def kind_from(environ: Mapping[str, str]) -> Kind:
    """``CALLWATCH_HTTP_TRANSPORT`` if set to a known kind, else the default (a value we do
    not know is said in the log, so a typo is not mistaken for a choice)."""
    value = environ.get(ENV, "").strip().lower()
    for kind in KINDS:
        if value == kind:
            return kind
    if value:
        structlog.get_logger("callwatch.http").warning(
            "http.transport_unknown", variable=ENV, value=value[:40], using=DEFAULT,
            known=list(KINDS))
    return DEFAULT


def as_httpx_error(exc: BaseException, request: httpx.Request | None) -> BaseException:
    """aiohttp's error (or httpx_aiohttp's rough translation of it) as the httpx one."""
    origin = exc.__cause__ if isinstance(exc, httpx.HTTPError) and isinstance(
        exc.__cause__, aiohttp.ClientError | asyncio.TimeoutError) else exc
    for source, target in _ERRORS:
        if isinstance(origin, source):
            text = str(origin) or type(origin).__name__
            return target(text, request=request) if request is not None else target(text)
    return exc


class _Body(httpx.AsyncByteStream):
    """The response body, its errors as httpx's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            raise as_httpx_error(exc, None) from exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            raise as_httpx_error(exc, None) from exc


class AioTransport(AiohttpTransport):
    """``max_connections`` per origin over one aiohttp session (see the module docstring)."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 5.0,
                 verify: ssl.SSLContext | bool = True, proxy: httpx.Proxy | None = None,
                 resolver: Callable[[], AbstractResolver] | None = None) -> None:
        super().__init__(verify=verify, trust_env=False, proxy=proxy,
                         limits=httpx.Limits(max_connections=max_connections,
                                             keepalive_expiry=keepalive_expiry),
                         client=self._session)
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._resolver = resolver

    def _session(self) -> aiohttp.ClientSession:
        """Made at the first request: aiohttp wants a running event loop."""
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._max_connections, keepalive_timeout=self._keepalive,
            ssl=self.ssl_context, resolver=self._resolver() if self._resolver else None,
            use_dns_cache=self._resolver is None)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     trust_env=False, auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.client if isinstance(self.client, aiohttp.ClientSession) else None
        if session is None:
            session = self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        body: bytes | httpx.AsyncByteStream | None
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            body = request.stream  # type: ignore[assignment]
        streamed = isinstance(body, httpx.AsyncByteStream)  # aiohttp frames it itself
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if not (streamed and k.lower() == "transfer-encoding")]
        proxy = self.proxy
        try:
            reply = await session.request(
                request.method, yarl.URL(str(request.url), encoded=True),
                headers=headers, data=body, allow_redirects=False, compress=None,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read"),
                                              connect=timeout.get("pool")),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
                proxy_headers=proxy.headers if proxy else None,
            ).__aenter__()
        except Exception as exc:
            raise as_httpx_error(exc, request) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reply.reason:
            extensions["reason_phrase"] = reply.reason.encode()
        return httpx.Response(status_code=reply.status, headers=reply.raw_headers,
                              stream=_Body(_Stream(reply)), request=request,
                              extensions=extensions)


class _Stream(httpx.AsyncByteStream):
    """An aiohttp response as a body: chunks as they arrive; closing releases (or drops)
    its connection."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply.content.iter_any():
            yield chunk

    async def aclose(self) -> None:
        self._reply.release()


class AioClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose transports (its own and the environment proxies') are
    ``AioTransport``s of ``max_connections`` per origin."""

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        self._aio_max = max_connections
        super().__init__(**kwargs)

    def _init_transport(self, verify: ssl.SSLContext | str | bool = True,  # noqa: PLR0917 - httpx's
                        cert: Any = None, trust_env: bool = True, http1: bool = True,
                        http2: bool = False, limits: httpx.Limits = _LIMITS,
                        transport: httpx.AsyncBaseTransport | None = None,
                        ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return AioTransport(max_connections=self._aio_max,
                            keepalive_expiry=limits.keepalive_expiry or 5.0,
                            verify=verify if isinstance(verify, ssl.SSLContext | bool) else True)

    def _init_proxy_transport(self, proxy: httpx.Proxy,  # noqa: PLR0917 - httpx's
                              verify: ssl.SSLContext | str | bool = True, cert: Any = None,
                              trust_env: bool = True, http1: bool = True, http2: bool = False,
                              limits: httpx.Limits = _LIMITS,
                              ) -> httpx.AsyncBaseTransport:
        return AioTransport(max_connections=self._aio_max,
                            keepalive_expiry=limits.keepalive_expiry or 5.0,
                            verify=verify if isinstance(verify, ssl.SSLContext | bool) else True,
                            proxy=proxy)
