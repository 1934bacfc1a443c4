"""The proxy's requests to its ranks: HTTP/1.1 keep-alive connections on asyncio transports, answers
parsed by llhttp (``httptools``, the parser uvicorn uses).

Why not aiohttp's client, which the proxy uses for its health probes, ``/tokenize``
and ``/v1/models``: on the forwarded requests' path it was the largest cost a proxy
adds. At 200 requests/s (``python benchmarks/serve.py --skip-replay --bare --sweep ''``,
3 December 2026, 14:00 UTC, the 2-core machine of docs/serving.md), a bare forwarder on an
aiohttp server added 0.88 and 1.20 ms p50 (0.86 and 0.96 ms of CPU a request, two runs)
through aiohttp's client and 0.64 and 0.65 ms (0.62 and 0.63 ms) through this one. It
does what the proxy needs and no more:

- one ``POST`` a call, written in one piece, on a kept-alive connection to the rank
  (the most recently used idle one, else a new one);
- the answer's status and headers, then its body read whole (:meth:`Response.read`)
  or as it arrives (:meth:`Response.iter_any`; ``Content-Length``, chunked and
  close-delimited bodies, decoded by llhttp); a reader that falls behind pauses
  the connection's reads (at :data:`HIGH_WATER` bytes buffered);
- timeouts without a timer per request: one sweep a second at most fails the
  answers that have waited longer than the read timeout for data (a reader that
  takes what arrived counts as no silence), or the total timeout in all;
- failures sorted the way the proxy treats them: :class:`ConnectFailed` (the
  request never reached the rank: place it elsewhere), :class:`ClosedBeforeAnswer`
  (the connection closed or was reset before a byte of the answer: ask once more
  on a new connection), :class:`UpstreamError` otherwise (a 502), its subclass
  :class:`UpstreamTimeout` for a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from urllib.parse import urlsplit

import httptools

#: Bytes a streaming reader may leave buffered before the connection stops reading.
HIGH_WATER = 1 << 20


class UpstreamError(Exception):
    """A request to a rank failed (after it may have reached it)."""


class ConnectFailed(UpstreamError):
    """No connection to the rank (refused, unreachable, connect timeout): the request never reached it."""


class ClosedBeforeAnswer(UpstreamError):
    """The connection closed or was reset before the first byte of the answer."""


class UpstreamTimeout(UpstreamError):
    """No answer (or no more of it) within the read timeout, or not all of it within the total one."""


class Upstream:
    """Keep-alive connections to the ranks' base URLs; :meth:`post` one request at a time on each.

    Parameters
    ----------
    connect_timeout_s, read_timeout_s, total_timeout_s : float
        A new connection's time to connect; the longest wait for the answer's
        next data; a request's whole time.
    """

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float, total_timeout_s: float):
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s
        self._pools: dict[str, _Pool] = {}
        self._open: set[Response] = set()          # answers not yet complete, for the sweep
        self._sweeper: asyncio.Task | None = None
        self._closed = False

    async def post(self, url: str, headers, body: bytes, *, fresh: bool = False) -> Response:
        """Send ``POST url`` with ``headers`` (pairs of bytes, without ``Host`` or ``Content-Length``) and
        ``body``; returns once the answer's headers have arrived. ``fresh``: on a new connection."""
        if self._closed:
            raise RuntimeError("the upstream client is closed")
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        base, path = _split(url)
        pool = self._pools.get(base)
        if pool is None:
            pool = self._pools[base] = _Pool(base, self)
        connection = None if fresh else pool.take()
        if connection is None:
            connection = await pool.connect()
        response = Response(connection)
        connection.begin(response)
        self._open.add(response)
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nHost: ", pool.host_header,
                b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        try:
            if len(body) < 65536:
                head.append(body)
                connection.transport.write(b"".join(head))
            else:                                      # no copy of a long body
                connection.transport.write(b"".join(head))
                connection.transport.write(body)
            await response._head
        except BaseException:
            response.close()
            raise
        return response

    async def _sweep(self) -> None:
        interval = max(0.01, min(1.0, self.read_timeout_s / 4, self.total_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            late = [r for r in self._open
                    if now - r.active_at > self.read_timeout_s or now - r.started_at > self.total_timeout_s]
            for response in late:
                waited = now - response.started_at
                which = "total" if waited > self.total_timeout_s else "read"
                limit = self.total_timeout_s if which == "total" else self.read_timeout_s
                response._fail(UpstreamTimeout(f"{which} timeout: no {'end' if which == 'total' else 'data'} "
                                               f"within {limit:g} s"))
                response.connection.transport.close()

    def _done(self, response: Response) -> None:
        self._open.discard(response)

    async def close(self) -> None:
        """Close every connection and stop the sweep."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        for pool in self._pools.values():
            pool.close()
        for response in list(self._open):
            response.close()


def _split(url: str) -> tuple[str, str]:
    """``http://host:port/prefix/v1/x`` -> (``http://host:port``, ``/prefix/v1/x``)."""
    cut = url.find("/", url.find("//") + 2)
    return (url, "/") if cut < 0 else (url[:cut], url[cut:])


class _Pool:
    """The idle connections to one rank's base URL."""

    def __init__(self, base: str, upstream: Upstream):
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base!r}")
        self.upstream = upstream
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.host_header = parts.netloc.encode("idna")
        self.idle: collections.deque[_Connection] = collections.deque()
        self.connections: set[_Connection] = set()

    def take(self) -> _Connection | None:
        """The most recently used idle connection still open, if any."""
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.lost and not connection.transport.is_closing():
                return connection
        return None

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                self.upstream.connect_timeout_s)
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no connection within {self.upstream.connect_timeout_s:g} s") from None
        except OSError as error:                      # refused, unreachable, name not found
            raise ConnectFailed(f"{type(error).__name__}: {error}") from None
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(connection)
        return connection

    def put_back(self, connection: _Connection) -> None:
        if not connection.lost and not self.upstream._closed:
            self.idle.append(connection)
        else:
            connection.transport.close()

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        try:
            self.idle.remove(connection)
        except ValueError:
            pass

    def close(self) -> None:
        for connection in list(self.connections):
            connection.transport.close()
        self.idle.clear()


class _Connection(asyncio.Protocol):
    """One connection to a rank; it carries one request's answer at a time."""

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.transport = None
        self.response: Response | None = None
        self.parser = None
        self.lost = False

    def begin(self, response: Response) -> None:
        self.response = response
        self.parser = httptools.HttpResponseParser(response)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._complete:    # nothing was asked, or more than the answer
            self.transport.close()
            return
        response.active_at = time.monotonic()
        response.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            response._fail(UpstreamError(f"the rank's answer is not valid HTTP: {error}"))
            self.transport.close()

    def eof_received(self):
        return False                                   # close; connection_lost ends the answer

    def connection_lost(self, error) -> None:
        self.lost = True
        self.pool.forget(self)
        response = self.response
        if response is not None:
            response._lost(error)


class Response:
    """A rank's answer: :attr:`status` and :attr:`headers` once :meth:`Upstream.post` returns, then the body.

    End it with :meth:`release` once read to the end (the connection is kept for
    the next request) or :meth:`close` (the connection is dropped: a rank stops
    generating for a request whose connection closed).
    """

    __slots__ = ("connection", "status", "headers", "_head", "_chunks", "_buffered", "_complete", "_error",
                 "_waiter", "_keep_alive", "_streaming", "_paused", "_informational", "_length_known",
                 "started_at", "active_at", "received", "_ended")

    def __init__(self, connection: _Connection):
        self.connection = connection
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._head = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._keep_alive = False
        self._streaming = False
        self._paused = False
        self._informational = False
        self._length_known = False                     # Content-Length or chunked: llhttp sees the end
        self.started_at = self.active_at = time.monotonic()
        self.received = False                          # a byte of the answer arrived
        self._ended = False

    # ---------------------------------------------------------------- llhttp callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._length_known = True
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self.connection.parser.get_status_code()
        if 100 <= status < 200:                        # an interim answer (100 Continue): the real one follows
            self._informational = True
            self.headers = []
            self._length_known = False
            return
        self.status = status
        if status in (204, 304):
            self._length_known = True
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._streaming and not self._paused and self._buffered > HIGH_WATER:
            self._paused = True
            self.connection.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete = True
        self._keep_alive = self.connection.parser.should_keep_alive()
        self.connection.pool.upstream._done(self)
        self._wake()

    # ------------------------------------------------------------------- events
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        self.connection.pool.upstream._done(self)
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()                     # retrieved: no "never retrieved" warning if nobody waits
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _lost(self, error) -> None:
        if self._complete:
            return
        if self._head.done() and not self._length_known and error is None and self.status:
            self._complete = True                      # a body that ends with the connection, as it did
            self.connection.pool.upstream._done(self)
            self._wake()
            return
        reason = f"{type(error).__name__}: {error}" if error else "the rank closed the connection"
        if not self.received:
            self._fail(ClosedBeforeAnswer(reason))
        else:
            self._fail(UpstreamError(f"{reason} before the end of the answer"))

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # ------------------------------------------------------------------- reading
    async def read(self) -> bytes:
        """The whole body."""
        while not self._complete:
            await self._wait()
        chunks, self._chunks = self._chunks, collections.deque()
        self._buffered = 0
        return b"".join(chunks)

    async def iter_any(self):
        """The body as it arrives: each step everything buffered so far (like aiohttp's ``iter_any``)."""
        self._streaming = True
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self.active_at = time.monotonic()      # a reader behind is no silence of the rank's
                if self._paused:
                    self._paused = False
                    self.connection.transport.resume_reading()
                yield data
            elif self._complete:
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Done with a complete answer: its connection serves the next request (else it is closed)."""
        if self._ended:
            return
        self._ended = True
        connection = self.connection
        connection.response = None
        if self._complete and self._keep_alive and self._error is None:
            connection.pool.put_back(connection)
        else:
            connection.transport.close()
        connection.pool.upstream._done(self)

    def close(self) -> None:
        """Drop the connection (the rank sees the request end)."""
        if self._ended:
            return
        self._ended = True
        self.connection.response = None
        self.connection.transport.close()
        self.connection.pool.upstream._done(self)
