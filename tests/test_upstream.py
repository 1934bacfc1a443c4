"""The proxy's upstream client (barrierlb.serving.upstream) against small raw HTTP servers."""

import asyncio
import re
import socket

import pytest

pytest.importorskip("httptools", reason="needs the serve extra: pip install 'barrierlb[serve]'")

from barrierlb.serving import upstream as up  # noqa: E402

TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=30.0)


async def _server(handle):
    """A raw server calling ``handle(head, body, reader, writer)`` per request; returns (server, url, log)."""
    log = {"connections": 0, "requests": []}

    async def connection(reader, writer):
        log["connections"] += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
                body = await reader.readexactly(length)
                log["requests"].append((head, body))
                if await handle(head, body, reader, writer) is False:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", log


def _answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(e + b"\r\n" for e in extra),
                                                                  body)


def _loops():
    try:
        import uvloop
    except ImportError:
        return [asyncio.new_event_loop]
    return [asyncio.new_event_loop, uvloop.new_event_loop]       # the proxy's loop where uvloop is installed


@pytest.fixture(params=_loops(), ids=lambda factory: factory.__module__.split(".")[0])
def _go(request):
    def run(coro):
        loop = request.param()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, 60))
        finally:
            loop.close()
    return run


def test_a_body_is_read_whole_and_the_connection_kept_for_the_next_request(_go):
    async def handle(head, body, reader, writer):
        writer.write(_answer(b"echo:" + body, b"Set-Cookie: a=1", b"Set-Cookie: b=2"))

    async def go():
        server, url, log = await _server(handle)
        client = up.Upstream(**TIMEOUTS)
        try:
            answers = []
            for i in range(3):
                response = await client.post(url + "/v1/completions", [(b"X-Test", b"n%d" % i)], b'{"i": %d}' % i)
                answers.append((response.status, response.headers, await response.read()))
                response.release()
            return answers, log
        finally:
            await client.close()
            server.close()

    answers, log = _go(go())
    assert [a[2] for a in answers] == [b'echo:{"i": 0}', b'echo:{"i": 1}', b'echo:{"i": 2}']
    assert answers[0][0] == 200 and ("Set-Cookie", "a=1") in answers[0][1] and ("Set-Cookie", "b=2") in answers[0][1]
    assert log["connections"] == 1                                    # kept alive: one connection for three
    head = log["requests"][1][0].decode()
    assert head.startswith("POST /v1/completions HTTP/1.1\r\n") and "\r\nX-Test: n1\r\n" in head
    assert re.search(r"\r\nHost: 127\.0\.0\.1:\d+\r\n", head) and "\r\nContent-Length: 8\r\n" in head


def test_a_chunked_stream_arrives_in_pieces_as_it_is_sent(_go):
    async def handle(head, body, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(4):
            piece = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    async def go():
        server, url, _ = await _server(handle)
        client = up.Upstream(**TIMEOUTS)
        try:
            response = await client.post(url + "/s", [], b"{}")
            pieces = [data async for data in response.iter_any()]
            response.release()
            return pieces
        finally:
            await client.close()
            server.close()

    pieces = _go(go())
    assert b"".join(pieces) == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert len(pieces) >= 3                                           # not gathered to the end


def test_a_body_that_ends_with_the_connection_is_complete_and_interim_answers_are_skipped(_go):
    async def handle(head, body, reader, writer):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        return False                                                  # closes

    async def go():
        server, url, _ = await _server(handle)
        client = up.Upstream(**TIMEOUTS)
        try:
            response = await client.post(url + "/c", [], b"{}")
            data = await response.read()
            response.release()
            return response.status, data
        finally:
            await client.close()
            server.close()

    assert _go(go()) == (200, b"until the end")


def test_failures_are_told_apart_as_the_proxy_treats_them(_go):
    async def close_at_once(head, body, reader, writer):
        return False

    async def close_mid_body(head, body, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        return False

    async def not_http(head, body, reader, writer):
        writer.write(b"SMTP ready\r\n\r\n")

    async def go():
        client = up.Upstream(**TIMEOUTS)
        with socket.socket() as s:                                   # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        errors = {}
        try:
            try:
                await client.post(f"http://127.0.0.1:{free}/x", [], b"{}")
            except up.UpstreamError as error:
                errors["refused"] = error
            for name, handle in (("closed", close_at_once), ("cut", close_mid_body), ("garbage", not_http)):
                server, url, _ = await _server(handle)
                try:
                    response = await client.post(url + "/x", [], b"{}")
                    await response.read()
                except up.UpstreamError as error:
                    errors[name] = error
                finally:
                    server.close()
            return errors
        finally:
            await client.close()

    errors = _go(go())
    assert type(errors["refused"]) is up.ConnectFailed
    assert type(errors["closed"]) is up.ClosedBeforeAnswer
    assert type(errors["cut"]) is up.UpstreamError and "before the end of the answer" in str(errors["cut"])
    assert type(errors["garbage"]) is up.UpstreamError and "not valid HTTP" in str(errors["garbage"])


def test_a_rank_that_stops_answering_times_out_and_close_ends_the_request_upstream(_go):
    async def go():
        gone = asyncio.Event()

        async def silent(head, body, reader, writer):
            await reader.read()                                       # until the client closes
            gone.set()
            return False

        server, url, _ = await _server(silent)
        client = up.Upstream(connect_timeout_s=2.0, read_timeout_s=0.2, total_timeout_s=30.0)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(up.UpstreamTimeout, match="read timeout"):
                await client.post(url + "/x", [], b"{}")
            waited = loop.time() - started
            await asyncio.wait_for(gone.wait(), 5)                    # the connection was closed
            return waited
        finally:
            await client.close()
            server.close()

    waited = _go(go())
    assert 0.2 <= waited < 2.0


def test_a_reader_that_falls_behind_pauses_the_connection(_go):
    size = 8 * up.HIGH_WATER

    async def flood(head, body, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        for _ in range(size // len(piece)):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async def go():
        server, url, _ = await _server(flood)
        client = up.Upstream(**TIMEOUTS)
        try:
            response = await client.post(url + "/x", [], b"{}")
            paused, total, most = [], 0, 0
            transport = response.connection.transport
            async for data in response.iter_any():
                total += len(data)
                most = max(most, len(data))
                await asyncio.sleep(0.01)                             # a slow client
                paused.append(not transport.is_reading())
            response.release()
            return total, any(paused), most
        finally:
            await client.close()
            server.close()

    total, paused, most = _go(go())
    assert total == size and paused
    assert most <= up.HIGH_WATER + 4 * 65536                           # the buffer stayed near the mark
