"""barrierlb serve against the lockstep engine emulator (in this process, on a background loop)."""

import asyncio
import json
import re
import socket
import struct
import subprocess
import sys

import pytest

pytest.importorskip("aiohttp", reason="needs the serve extra: pip install 'barrierlb[serve]'")

import aiohttp  # noqa: E402

from barrierlb.serving.background import BackgroundLoop, start_emulator, start_proxy  # noqa: E402
from barrierlb.serving.config import ServeConfig  # noqa: E402
from barrierlb.serving.emulator import EmulatorConfig  # noqa: E402
from barrierlb.serving.tokens import StreamCounter, completion_tokens  # noqa: E402

FAST = dict(step_base_s=0.002, step_token_s=1e-6)


@pytest.fixture
def loop():
    with BackgroundLoop() as background:
        yield background


def _cluster(loop, *, ranks=2, slots=2, pin=None, **proxy_options):
    emulator = start_emulator(loop, EmulatorConfig(n_ranks=ranks, slots=slots, pin=pin, **FAST))
    if pin:
        config = ServeConfig(engine=emulator.urls[0], dp_size=ranks, pin=pin, slots=slots, port=0, **proxy_options)
    else:
        config = ServeConfig(ranks=tuple(emulator.urls), slots=slots, port=0, **proxy_options)
    return emulator, start_proxy(loop, config)


async def _post(session, url, body, *, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, dict(response.headers), await response.read()


def _run(coro):
    return asyncio.run(coro)


def _caught_up(loop):
    """Wait for the proxy's loop to finish what it was running: the bookkeeping of an answer's end
    (counters, the router's finish) comes just after the answer is sent, in the same step."""
    loop.run(asyncio.sleep(0))


def test_stream_and_body_pass_through_unchanged(loop):
    emulator, proxy = _cluster(loop)

    async def go():
        async with aiohttp.ClientSession() as session:
            for path, body in (("/v1/completions", {"prompt": "one two three", "max_tokens": 7}),
                               ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi there"}],
                                                         "max_tokens": 5})):
                for stream in (True, False):
                    request = {**body, "stream": stream, "stream_options": {"include_usage": True}} if stream \
                        else body
                    status, headers, via_proxy = await _post(session, proxy.url + path, request)
                    assert status == 200
                    rank = int(headers["X-Barrierlb-Rank"])
                    assert headers["X-Emulator-Rank"] == str(rank)          # served where the router placed it
                    _, _, direct = await _post(session, emulator.urls[rank] + path, request)
                    assert via_proxy == direct
                    if stream:
                        assert headers["Content-Type"].startswith("text/event-stream")
                        assert via_proxy.endswith(b"data: [DONE]\n\n")

    _run(go())
    _caught_up(loop)
    assert proxy.counters["completed"] == 4


@pytest.mark.parametrize("body, count", [
    (b'{"choices":[{"text":"a \\"usage\\": {\\"completion_tokens\\": 99}"}],'
     b'"usage":{"prompt_tokens":5,"total_tokens":9,"completion_tokens":4}}', 4),
    (b'{"usage": {"completion_tokens": 7, "prompt_tokens": 3}}', 7),
    (b'{"usage":{"prompt_tokens_details":{"cached_tokens":0},"completion_tokens":3}}', 3),
    (b'{"usage":{"completion_tokens":4.0}}', None), (b'{"usage":{"completion_tokens":-1}}', None),
    (b'{"usage":{"completion_tokens":true}}', None), (b'{"usage":null}', None), (b'not json', None), (b'[1]', None),
    (b'{"choices":[{"text":"\\"usage\\""}],"usage":{"completion_tokens":12}}', 12),
])
def test_completion_tokens_read_from_the_answer_as_its_json_says(body, count):
    assert completion_tokens(body) == count
    try:                                  # the same as the parsed answer's usage.completion_tokens
        parsed = json.loads(body)["usage"]["completion_tokens"]
    except (ValueError, TypeError, KeyError):
        parsed = None
    assert count == (parsed if type(parsed) is int and parsed >= 0 else None)


def test_tokens_counted_from_the_stream_and_learned():
    counter = StreamCounter()
    events = b"".join(b'data: {"choices":[{"index":0,"text":"x%d","finish_reason":null}]}\n\n' % i for i in range(5))
    events += b'data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    for i in range(0, len(events), 7):                                    # arbitrary byte pieces
        counter.feed(events[i:i + 7])
    assert counter.tokens == 5 and counter.finish_reason == "stop" and counter.output_tokens == 5
    chat = StreamCounter()
    chat.feed(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
              b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\n'
              b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n')
    assert chat.tokens == 2 and chat.usage_tokens == 2


def test_streamed_tokens_reach_the_router_and_the_predictor(loop):
    emulator, proxy = _cluster(loop, ranks=2, slots=4, tokenize_delay_s=0.0, tokenize_min_tokens=0)
    lengths = [3, 150, 17, 4, 200, 11]
    seen = []

    async def go():
        async with aiohttp.ClientSession() as session:
            for i, n in enumerate(lengths):
                body = {"prompt": "word " * (10 + i), "max_tokens": 256, "emulator_output_tokens": n,
                        "stream": True}
                async with session.post(proxy.url + "/v1/completions", json=body) as response:
                    rank = int(response.headers["X-Barrierlb-Rank"])
                    await response.content.readuntil(b"\n\n")
                    await response.content.readuntil(b"\n\n")
                    if n > 100:                                           # mid-stream: the router follows it
                        await asyncio.sleep(0.05)
                        seen.append((10 + i, *await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                            _resident(proxy, rank), loop.loop))))
                    await response.read()

    _run(go())

    async def flush():
        proxy.router.observe_output([])
    loop.run(flush())
    assert sorted(proxy._predictor._recent.tolist()) == sorted(lengths)      # learned the true lengths
    assert len(seen) == 2
    for prompt, resident, generated in seen:
        assert generated >= 2 and resident == prompt + generated      # tokenized prompt + tokens counted so far


def test_only_requests_that_run_past_the_tokenize_delay_are_tokenized(loop):
    emulator, proxy = _cluster(loop, ranks=2, slots=4, tokenize_delay_s=0.1, tokenize_min_tokens=0)

    async def go(n, stream):
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "word " * 30, "max_tokens": 400, "emulator_output_tokens": n, "stream": stream}
            status, _, _ = await _post(session, proxy.url + "/v1/completions", body)
            assert status == 200

    for stream in (True, False):
        _run(go(2, stream))                                      # about 6 ms: ends before its count would start
    assert emulator.tokenize_calls == 0
    for stream in (True, False):
        _run(go(150, stream))                                    # about 0.3 s: counted while it runs
    assert emulator.tokenize_calls == 2
    _caught_up(loop)
    assert proxy.status()["counters"]["completed"] == 4


def test_prompt_estimates_learn_the_engines_characters_per_token(loop):
    emulator, proxy = _cluster(loop, ranks=2, slots=4, tokenize_min_tokens=0)    # the emulator: a token a word

    async def go():
        async with aiohttp.ClientSession() as session:
            for i in range(10):
                body = {"prompt": "w " * (50 + i), "max_tokens": 200, "emulator_output_tokens": 100}
                status, _, _ = await _post(session, proxy.url + "/v1/completions", body)
                assert status == 200

    assert proxy.chars_per_token() == 4.0
    _run(go())
    assert emulator.tokenize_calls == 10
    assert proxy.chars_per_token() == pytest.approx(2.0, rel=0.02)        # "w " is two characters a token


def test_only_prompts_estimated_at_the_threshold_or_more_are_tokenized(loop):
    emulator, proxy = _cluster(loop, ranks=2, slots=4, tokenize_min_tokens=40)   # estimate: 4 characters a token

    async def go(words):
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "word " * words, "max_tokens": 50, "emulator_output_tokens": 30}
            status, _, _ = await _post(session, proxy.url + "/v1/completions", body)
            assert status == 200

    _run(go(31))                                 # 155 characters: estimated at 39 tokens, kept
    assert emulator.tokenize_calls == 0
    _run(go(32))                                 # 160 characters: 40 tokens, counted by the engine
    assert emulator.tokenize_calls == 1
    _caught_up(loop)
    assert proxy.status()["counters"]["completed"] == 2


def test_a_decision_waits_for_the_request_ends_already_on_their_way():
    from barrierlb.serving.proxy import Proxy

    proxy = Proxy(ServeConfig(ranks=("http://127.0.0.1:1",), slots=1, settle_passes=2))

    async def go():
        loop = asyncio.get_running_loop()

        def end(left):                    # a request ends on each of the next loop passes
            proxy._releases += 1
            if left > 1:
                loop.call_soon(end, left - 1)

        loop.call_soon(end, 5)
        await proxy._settle()
        return proxy._releases

    assert asyncio.run(go()) == 5                       # all five were seen before it returned
    quick = Proxy(ServeConfig(ranks=("http://127.0.0.1:1",), slots=1, settle_passes=0))
    assert asyncio.run(quick._settle()) is None         # 0: at once


def test_the_cancel_a_rank_marked_down_sent_is_taken_back_once():
    """The handler that a rank's failure cancelled answers instead of ending (on every Python the
    package supports: 3.10's tasks count no cancels)."""
    from barrierlb.serving.proxy import _Flight, _take_back

    async def go():
        flight = _Flight(1.0, 4.0, False, 0.0)

        async def handler():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return _take_back(flight), _take_back(flight)
            return None

        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0)
        task.cancel()                                   # as Proxy.mark_down does
        flight.cancel_sent = True
        return await task

    assert asyncio.run(go()) == (True, False)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_rank_that_closes_the_connection_before_answering_is_asked_once_more(loop, how):
    closed = []

    async def rank(reader, writer):              # an engine that drops the first request it reads
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1)) if b"POST" in head[:5] else 0
            await reader.readexactly(length)
            if b"POST" in head[:5] and not closed:
                closed.append(True)
                if how == "reset":               # a reset (RST), as a kept-alive connection closed under a write gets
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
                    writer.transport.abort()
                else:
                    writer.close()
                return
            body = b'{"choices":[{"text":"ok","index":0,"finish_reason":"stop"}],"usage":{"completion_tokens":1}}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()

    async def serve():
        server = await asyncio.start_server(rank, "127.0.0.1", 0)
        return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    server, url = loop.run(serve())
    try:
        proxy = start_proxy(loop, ServeConfig(ranks=(url,), slots=2, port=0, prompt_tokens="estimate"))

        async def go():
            async with aiohttp.ClientSession() as session:
                return await _post(session, proxy.url + "/v1/completions", {"prompt": "hi", "max_tokens": 3})

        status, _, body = _run(go())
        _caught_up(loop)
        assert status == 200 and json.loads(body)["choices"][0]["text"] == "ok" and closed
        assert proxy.counters["completed"] == 1 and proxy.counters["failed"] == 0
    finally:
        server.close()


async def _resident(proxy, rank):
    tokens = proxy.status()["ranks"][rank]["resident_tokens"]          # what /barrierlb/status and /metrics show
    flight = next(f for f in proxy._flights.values() if f.rank == rank)
    return tokens, flight.generated


def test_500_concurrent_requests_complete_once_within_slots(loop):
    emulator, proxy = _cluster(loop, ranks=4, slots=3)

    async def go():
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(i):
                body = {"prompt": f"request {i} " + "x " * (i % 37), "max_tokens": 2 + i % 5, "stream": i % 2 == 0}
                status, headers, data = await _post(session, proxy.url + "/v1/completions", body)
                return i, status, headers.get("X-Barrierlb-Rank"), data
            return await asyncio.gather(*(one(i) for i in range(500)))

    results = _run(go())
    _caught_up(loop)
    assert all(status == 200 for _, status, _, _ in results)
    assert len({i for i, *_ in results}) == 500
    stats = emulator.stats()
    assert sum(stats["received"]) == 500 and sum(stats["completed"]) == 500      # each exactly once upstream
    assert max(stats["max_in_flight"]) <= 3                                      # never beyond --slots
    assert proxy.counters["completed"] == 500 and proxy.router.queued == 0
    assert proxy.router.state.n_active == 0


def test_rank_killed_mid_run_loses_no_queued_request(loop):
    emulator, proxy = _cluster(loop, ranks=3, slots=2, health_interval_s=0.2)

    async def go():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i):
                body = {"prompt": f"r{i} " * 5, "max_tokens": 40, "stream": i % 2 == 0}
                return await _post(session, proxy.url + "/v1/completions", body)

            tasks = [asyncio.ensure_future(one(i)) for i in range(40)]
            for _ in range(1000):                       # until requests wait and rank 1 generates for two
                if proxy.router.queued >= 20 and sum(job.generated > 0 for job in emulator._running[1]) == 2:
                    break
                await asyncio.sleep(0.01)
            waiting = proxy.router.queued
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(emulator.kill_rank(1), loop.loop))
            return waiting, await asyncio.gather(*tasks)

    waiting, results = _run(go())
    assert waiting >= 20                                       # requests were queued when the rank died
    ok = [r for r in results if r[0] == 200 and b'"error"' not in r[2]]
    failed = [r for r in results if r not in ok]
    assert len(ok) + len(failed) == 40
    assert len(failed) == 2                                    # only the two in flight on rank 1
    for status, headers, data in failed:
        assert status in (200, 502) and b"rank 1 (http://127.0.0.1:" in data     # 200: a stream already begun
        if status == 200:
            assert headers["X-Barrierlb-Rank"] == "1" and b'"upstream_error"' in data
    stats = emulator.stats()
    assert sum(stats["completed"]) == len(ok)
    assert proxy.status()["ranks"][1]["up"] is False
    assert max(stats["max_in_flight"]) <= 2


def test_client_disconnect_cancels_upstream_and_frees_the_slot(loop):
    emulator, proxy = _cluster(loop, ranks=1, slots=1)

    async def go():
        async with aiohttp.ClientSession() as session:
            response = await session.post(proxy.url + "/v1/completions",
                                          json={"prompt": "long", "max_tokens": 100000, "stream": True})
            await response.content.readuntil(b"\n\n")
            await response.content.readuntil(b"\n\n")
            response.close()                                   # the client goes away mid-stream
            status, _, data = await _post(session, proxy.url + "/v1/completions", {"prompt": "next", "max_tokens": 3})
            return status, data

    status, data = _run(go())
    _caught_up(loop)
    assert status == 200 and json.loads(data)["usage"]["completion_tokens"] == 3   # the one slot was freed
    stats = emulator.stats()
    assert stats["cancelled"] == [1] and stats["in_flight"] == [0]
    assert proxy.counters["cancelled"] == 1 and proxy.router.state.n_active == 0


@pytest.mark.parametrize("raw, path, param", [
    (b"{not json", "/v1/completions", None),
    (b"[1, 2]", "/v1/completions", None),
    (b'{"max_tokens": 3}', "/v1/completions", "prompt"),
    (b'{"prompt": 5}', "/v1/completions", "prompt"),
    (b'{"prompt": "a", "max_tokens": "ten"}', "/v1/completions", "max_tokens"),
    (b'{"prompt": "a", "max_tokens": 0}', "/v1/completions", "max_tokens"),
    (b'{"prompt": "a", "stream": "yes"}', "/v1/completions", "stream"),
    (b'{"prompt": "a", "n": 2}', "/v1/completions", "n"),
    (b'{"prompt": ["a", "b"]}', "/v1/completions", "prompt"),
    (b'{"messages": []}', "/v1/chat/completions", "messages"),
    (b'{"messages": [{"content": "no role"}]}', "/v1/chat/completions", "messages"),
    (b'\xff\xfe', "/v1/chat/completions", None),
])
def test_malformed_input_is_a_400_with_an_openai_error(loop, raw, path, param):
    emulator, proxy = _cluster(loop)

    async def go():
        async with aiohttp.ClientSession() as session:
            return await _post(session, proxy.url + path, None, raw=raw)

    status, _, data = _run(go())
    error = json.loads(data)["error"]
    assert status == 400 and error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert sum(emulator.stats()["received"]) == 0                     # nothing reached an engine


def test_unknown_routes_and_methods_are_answered_404_and_405(loop):
    emulator, proxy = _cluster(loop)

    async def go():
        async with aiohttp.ClientSession() as session:
            answers = []
            for method, path in (("GET", "/v1/nothing"), ("GET", "/v1/completions"), ("POST", "/health"),
                                 ("HEAD", "/health"), ("DELETE", "/v1/chat/completions")):
                async with session.request(method, proxy.url + path) as response:
                    answers.append((response.status, response.headers.get("Allow"), await response.read()))
            return answers

    (missing, _, body), (get, allow_post, _), (post, allow_get, _), (head, _, empty), (delete, _, _) = _run(go())
    assert missing == 404 and json.loads(body)["error"]["type"] == "not_found"
    assert (get, allow_post, post, allow_get, delete) == (405, "POST", 405, "GET, HEAD", 405)
    assert head == 200 and empty == b""
    assert sum(emulator.stats()["received"]) == 0 and proxy.counters["received"] == 0


@pytest.mark.parametrize("pin", ["vllm", "sglang"])
def test_pinned_engine_serves_each_request_on_the_chosen_rank(loop, pin):
    emulator, proxy = _cluster(loop, ranks=3, slots=2, pin=pin)

    async def go():
        async with aiohttp.ClientSession() as session:
            async def one(i):
                return await _post(session, proxy.url + "/v1/completions",
                                   {"prompt": "p " * (1 + 40 * (i % 3)), "max_tokens": 4, "stream": i % 2 == 1})
            return await asyncio.gather(*(one(i) for i in range(24)))

    results = _run(go())
    assert all(status == 200 for status, _, _ in results)
    assert all(headers["X-Emulator-Rank"] == headers["X-Barrierlb-Rank"] for _, headers, _ in results)
    assert len({headers["X-Emulator-Rank"] for _, headers, _ in results}) == 3
    assert max(emulator.stats()["max_in_flight"]) <= 2


def test_models_health_metrics_and_status(loop):
    emulator, proxy = _cluster(loop)

    async def go():
        async with aiohttp.ClientSession() as session:
            await _post(session, proxy.url + "/v1/completions", {"prompt": "warm up", "max_tokens": 2})
            out = {}
            for path in ("/v1/models", "/health", "/metrics", "/barrierlb/status"):
                async with session.get(proxy.url + path) as response:
                    out[path] = (response.status, await response.text())
            return out

    out = _run(go())
    assert out["/v1/models"][0] == 200 and json.loads(out["/v1/models"][1])["data"][0]["id"] == "emulator"
    assert json.loads(out["/health"][1])["ranks_up"] == 2
    metrics = out["/metrics"][1]
    for name in ("barrierlb_rank_resident_tokens{rank=\"1\"}", "barrierlb_rank_running_requests",
                 "barrierlb_queued_requests", "barrierlb_predicted_imbalance", "barrierlb_decision_seconds_bucket",
                 "barrierlb_imbalance_tokens", 'barrierlb_requests_total{outcome="completed"} 1.0'):
        assert name in metrics
    status = json.loads(out["/barrierlb/status"][1])
    assert status["counters"]["completed"] == 1
    # decision times are folded into the histogram at the scrape: every decision so far is counted
    assert status["counters"]["decisions"] >= 1
    assert f"barrierlb_decision_seconds_count {float(status['counters']['decisions'])}" in metrics


def test_no_rank_up_answers_503_after_the_queue_timeout(loop):
    emulator, proxy = _cluster(loop, ranks=1, slots=1, health_interval_s=0.1, health_failures=1,
                               queue_timeout_s=0.5)
    loop.run(emulator.kill_rank(0))

    async def go():
        await asyncio.sleep(0.4)                               # the probe marks the rank down
        async with aiohttp.ClientSession() as session:
            return await _post(session, proxy.url + "/v1/completions", {"prompt": "x", "max_tokens": 2})

    status, _, data = _run(go())
    _caught_up(loop)
    assert status == 503 and "no slot became free within 0.5 s (ranks up: 0 of 1)" in data.decode()
    assert proxy.router.queued == 0


def test_serve_cli_rejects_bad_arguments_in_one_line():
    for args, message in ((["--ranks", "localhost:1", "--slots", "2"], "must start with http://"),
                          (["--engine", "http://127.0.0.1:1", "--slots", "2"], "--dp-size"),
                          (["--engine", "http://127.0.0.1:1", "--dp-size", "2", "--slots", "2"], "pin"),
                          (["--ranks", "http://127.0.0.1:1", "--slots", "2", "--policy", "nope"], "unknown policy"),
                          (["--ranks", "http://127.0.0.1:1", "--slots", "0"], "--slots must be a positive integer"),
                          (["--ranks", "http://127.0.0.1:1", "--slots", "2", "--read-timeout-s", "0"],
                           "--read-timeout-s must be a positive number")):
        result = subprocess.run([sys.executable, "-m", "barrierlb", "serve", *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr


def test_serve_config_names_the_bad_field():
    with pytest.raises(ValueError, match="either ranks"):
        ServeConfig(slots=2)
    with pytest.raises(ValueError, match="slots"):
        ServeConfig(ranks=("http://127.0.0.1:1",), slots=0)
    with pytest.raises(ValueError, match="twice"):
        ServeConfig(ranks=("http://127.0.0.1:1", "http://127.0.0.1:1"), slots=1)
    with pytest.raises(ValueError, match="pin"):
        ServeConfig(ranks=("http://127.0.0.1:1",), pin="vllm", slots=1)
    assert ServeConfig(engine="http://127.0.0.1:1", dp_size=4, pin="vllm", slots=1).n_ranks == 4
    for bad in (-0.1, float("inf"), True, "1"):
        with pytest.raises(ValueError, match="tokenize_delay_s"):
            ServeConfig(ranks=("http://127.0.0.1:1",), slots=1, tokenize_delay_s=bad)
    for bad in (-1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="tokenize_min_tokens"):
            ServeConfig(ranks=("http://127.0.0.1:1",), slots=1, tokenize_min_tokens=bad)
        with pytest.raises(ValueError, match="settle_passes"):
            ServeConfig(ranks=("http://127.0.0.1:1",), slots=1, settle_passes=bad)
