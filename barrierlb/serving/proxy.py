"""The asynchronous proxy behind ``barrierlb serve``.

One aiohttp application: clients send OpenAI requests to it, it keeps the
waiting pool, admits at most ``slots`` requests per rank and, whenever slots are
free, places every waiting request in one decision of a barrierlb policy
(:class:`barrierlb.router.DecodeRouter`). It follows each placed request's
stream to count its tokens, learns output lengths from finished requests
(:class:`barrierlb.predictors.SurvivalPredictor`) and probes every rank's health.

Failure handling, request by request:

- a request that never reached its rank (connection refused, connect timeout)
  goes back to the pool and is placed elsewhere; the rank is marked down;
- a request in flight on a rank that fails ends with a 502 naming the rank (in
  a stream already started: an SSE ``error`` event, then the end); its slot is
  freed;
- a client that disconnects cancels its upstream request and frees its slot;
- a request waiting longer than ``queue_timeout_s`` gets a 503.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import sys
import time

import numpy as np

from barrierlb.policies.bfio import decode_preset
from barrierlb.predictors import SurvivalPredictor
from barrierlb.router import DecodeRouter
from barrierlb.serving._deps import aiohttp, web
from barrierlb.serving.config import ServeConfig
from barrierlb.serving.tokens import BadRequest, StreamCounter, completion_tokens, estimate_tokens, parse_request
from barrierlb.serving.upstream import ClosedBeforeAnswer, ConnectFailed, Upstream, UpstreamError

#: Header of every proxied response: the rank that served it.
RANK_HEADER = "X-Barrierlb-Rank"

_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding"))
_HOP_BY_HOP_RAW = frozenset(name.encode() for name in _HOP_BY_HOP)
_STREAM_ERRORS = (UpstreamError, asyncio.TimeoutError, ConnectionError)
#: Finished requests between two reconsiderations of the ``auto`` policy.
_AUTO_EVERY = 64


class _Retry(Exception):
    """The request never reached its rank: place it again."""


class _Flight:
    """One client request through its attempts."""

    __slots__ = ("task_id", "rank", "placed", "released", "failed", "stream", "max_tokens", "prompt_tokens",
                 "queued_at", "sent_at", "task", "generated", "reported", "count_args", "counting", "count_timer",
                 "cancel_sent")

    def __init__(self, prompt_tokens: float, max_tokens: float, stream: bool, queued_at: float):
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.stream = stream
        self.queued_at = queued_at
        self.task_id = -1
        self.rank = -1
        self.placed: asyncio.Future | None = None
        self.released = True
        self.failed: str | None = None
        self.sent_at = 0.0
        self.task: asyncio.Task | None = None
        self.generated = 0          # tokens seen so far
        self.reported = 0           # tokens the router knows of
        self.count_args: tuple | None = None       # (text, chat, body) while its /tokenize call is to start
        self.counting: asyncio.Future | None = None
        self.count_timer: asyncio.TimerHandle | None = None
        self.cancel_sent = False    # mark_down cancelled its handler's task

    def cancel_count_timer(self) -> None:
        """Drop the timer that was to start this request's ``/tokenize`` call, if one is set."""
        if self.count_timer is not None:
            self.count_timer.cancel()
            self.count_timer = None


class Proxy:
    """``barrierlb serve`` as an object: ``await start()``, ``await stop()``; ``url`` once started."""

    def __init__(self, config: ServeConfig):
        if not isinstance(config, ServeConfig):
            raise TypeError(f"config must be a ServeConfig, got {type(config).__name__}")
        self.config = config
        g = config.n_ranks
        self._auto = config.policy == "auto"
        self._predictor = SurvivalPredictor(draws=config.draws, strata=config.strata)
        policy = decode_preset(0.0) if self._auto else config.policy
        self.router = DecodeRouter(g, config.slots, policy=policy, predictor=self._predictor,
                                   max_wait_s=config.max_wait_s)
        self._first_policy = policy               # the spec start() warms the solver with
        self._flights: dict[int, _Flight] = {}
        self._uncounted: list[_Flight] = []       # enqueued since the last decision, /tokenize not started
        self._ids = itertools.count()
        self._wake: asyncio.Event | None = None
        self._up = [True] * g
        self._probe_failures = [0] * g
        self._tokenize_missing = False
        self._counted_chars = 0                   # text of the prompts /tokenize counted, and their tokens
        self._counted_tokens = 0
        self._counted_prompts = 0
        self._tpot_s = 0.05                       # time per token, for non-streaming progress (learned)
        self._finished_since_auto = 0
        self._releases = 0                        # requests that left the router (for _settle)
        self._outputs_sum = 0.0
        self._outputs_n = 0
        self.counters = {"received": 0, "completed": 0, "rejected": 0, "failed": 0, "cancelled": 0,
                         "requeued": 0, "timed_out": 0, "decisions": 0}
        self.decision_s: list[float] = []
        self._tasks: list[asyncio.Task] = []
        self._runner = None
        self._session = None                      # aiohttp's client: probes, /tokenize, /v1/models
        self._upstream = None                     # the forwarded requests' (barrierlb.serving.upstream)
        self.url: str | None = None
        self._metrics = _Metrics(g)
        self._probe_timeout = aiohttp.ClientTimeout(total=config.probe_timeout_s)

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Listen and start the admission and health loops; returns the proxy's URL."""
        config = self.config
        _warm_up(self._first_policy)
        self._wake = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # No cookie jar: an engine's cookies are its clients', never kept here and sent on others' requests.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar())
        self._upstream = Upstream(connect_timeout_s=config.connect_timeout_s, read_timeout_s=config.read_timeout_s,
                                  total_timeout_s=config.request_timeout_s)
        # aiohttp's low-level server with the proxy's own table of routes: an Application's router and
        # middleware chain cost each request some 25 us and give these six paths nothing more.
        self._routes = {"/v1/completions": ("POST", self._completions), "/v1/chat/completions": ("POST", self._chat),
                        "/v1/models": ("GET", self._models), "/health": ("GET", self._health),
                        "/metrics": ("GET", self._metrics_handler), "/barrierlb/status": ("GET", self._status)}
        loop = asyncio.get_running_loop()

        def request_factory(message, payload, protocol, writer, task):
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=_MAX_BODY)

        server = web.Server(self._dispatch, request_factory=request_factory, handler_cancellation=True,
                            access_log=None)
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host, config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._tasks = [asyncio.ensure_future(self._admission_loop()), asyncio.ensure_future(self._health_loop())]
        return self.url

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._upstream is not None:
            await self._upstream.close()

    # ------------------------------------------------------------ admission
    def _enqueue(self, flight: _Flight) -> None:
        if self.router.queued >= self.config.max_queue:
            raise _Unavailable(f"the proxy's queue is full ({self.config.max_queue} requests waiting)")
        task_id = flight.task_id = next(self._ids)
        flight.placed = None                      # a future only if it waits (_handle)
        flight.released = False
        router = self.router
        if router.queued:
            # Others wait: a decision of several requests is the admission loop's, when slots free up.
            router.add_request(task_id, flight.prompt_tokens, max_output_tokens=flight.max_tokens,
                               queued_at=flight.queued_at)
            self._taken_in(flight)
            self._wake.set()
            return
        # Alone, it is decided now, not one loop pass later (the router's admit: placed, or queued).
        self._sync_progress()
        started = time.perf_counter()
        try:
            rank = router.admit(task_id, flight.prompt_tokens, max_output_tokens=flight.max_tokens,
                                queued_at=flight.queued_at)
        except Exception as error:
            if not (router.is_queued(task_id) or router.is_placed(task_id)):
                raise                               # not taken in: the request fails, nothing else changed
            # Taken in, its decision failed: a bug must not stop admission for everyone.
            print(f"barrierlb serve: placement failed: {type(error).__name__}: {error}", file=sys.stderr)
            rank = router.rank_of(task_id) if router.is_placed(task_id) else -1
            self._wake.set()
        self._taken_in(flight)
        if rank >= 0:
            flight.rank = rank
            self._decided(time.perf_counter() - started)
        self._count_waiting()     # a request left waiting (no free slot, or held) is counted now

    def _taken_in(self, flight: _Flight) -> None:
        self._flights[flight.task_id] = flight
        if flight.count_args is not None:
            self._uncounted.append(flight)

    def _release(self, flight: _Flight, output_tokens: int | None = None, *, cancelled: bool = False) -> None:
        """Free the flight's place in the router (its slot, or its place in the queue)."""
        if flight.released:
            return
        flight.released = True
        self._releases += 1
        self._flights.pop(flight.task_id, None)
        if cancelled or flight.rank < 0:
            self.router.cancel(flight.task_id)
        else:
            self.router.finish(flight.task_id, output_tokens)
            if output_tokens:
                self._learn(flight, output_tokens)
        if self.router.queued:
            # A slot freed up for a waiting pool; with none waiting there is nothing to decide (a wake-up of
            # the admission loop per request cost the event loop a task switch for nothing).
            self._wake.set()

    def _learn(self, flight: _Flight, output_tokens: int) -> None:
        if not flight.stream and output_tokens > 0 and flight.sent_at:
            per_token = (time.monotonic() - flight.sent_at) / output_tokens
            self._tpot_s = 0.9 * self._tpot_s + 0.1 * per_token
        self._outputs_sum += output_tokens
        self._outputs_n += 1
        self._finished_since_auto += 1
        if self._auto and self._finished_since_auto >= _AUTO_EVERY:
            self._finished_since_auto = 0
            preset = decode_preset(self._outputs_sum / self._outputs_n, scenarios=self.config.draws > 0)
            if self.router.policy.options() != _policy_options(preset):
                self.router.policy = preset

    async def _admission_loop(self) -> None:
        tick = None if self.config.max_wait_s is None else max(0.01, min(0.25, self.config.max_wait_s / 4))
        while True:
            try:
                if tick is not None and self.router.queued:
                    await asyncio.wait_for(self._wake.wait(), tick)
                else:
                    await self._wake.wait()
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self.router.queued:
                self._uncounted.clear()
                continue
            await self._settle()
            self._wake.clear()
            if not self._decide():
                await asyncio.sleep(0.1)

    async def _settle(self) -> None:
        """Let the request ends already on their way reach the router before a decision.

        A lockstep engine ends several requests in the same step, and their last
        chunks reach the proxy one by one: a decision taken at the first would see
        the others as still running (a rank whose long request just ended still
        looks like the peak to fill up to). So the admission loop yields to the
        event loop (no timer: each pass reads what the sockets already hold) until
        ``settle_passes`` passes in a row ended no request.
        """
        quiet = 0
        for _ in range(4 * self.config.settle_passes):
            if quiet >= self.config.settle_passes:
                return
            seen = self._releases
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._releases == seen else 0

    def _decide(self) -> bool:
        """Place what waits (one decision of the router) and wake the placed requests; False if it failed."""
        self._sync_progress()
        started = time.perf_counter()
        try:
            placements = self.router.route()
        except Exception as error:                  # a bug must not stop admission for everyone
            print(f"barrierlb serve: placement failed: {type(error).__name__}: {error}", file=sys.stderr)
            return False
        if placements:
            self._decided(time.perf_counter() - started)
            for task_id, rank in placements.items():
                flight = self._flights[task_id]
                flight.rank = rank
                if flight.placed is not None and not flight.placed.done():
                    flight.placed.set_result(rank)
        self._count_waiting()
        return True

    def _decided(self, seconds: float) -> None:
        """Count a decision that placed requests, and its time."""
        self.decision_s.append(seconds)
        if len(self.decision_s) > 100_000:
            del self.decision_s[:50_000]
        self.counters["decisions"] += 1
        self._metrics.decision(seconds)

    def _count_waiting(self) -> None:
        """Start ``/tokenize`` for the requests a decision left waiting; a placed one starts it once sent."""
        uncounted, self._uncounted = self._uncounted, []
        for flight in uncounted:
            if flight.rank < 0 and not flight.released:
                self._start_count(flight)

    def _start_count(self, flight: _Flight) -> None:
        flight.cancel_count_timer()
        if (flight.count_args is not None and flight.counting is None and not self._tokenize_missing
                and not flight.released):
            flight.counting = asyncio.ensure_future(self._count_prompt(flight, *flight.count_args))
        flight.count_args = None

    def _sync_progress(self) -> None:
        """Tell the router every running request's tokens, in one call before a decision.

        Streams report what they counted; a non-streaming request has made
        about (time running) / (time per token) tokens, below its ``max_tokens``.
        """
        now = time.monotonic()
        ids, tokens = [], []
        for flight in self._flights.values():
            if flight.rank < 0 or flight.released or not flight.sent_at:
                continue
            if not flight.stream:
                flight.generated = int(min((now - flight.sent_at) / self._tpot_s, max(flight.max_tokens - 1, 0)))
            if flight.generated != flight.reported:
                flight.reported = flight.generated
                ids.append(flight.task_id)
                tokens.append(flight.generated)
        if ids:
            self.router.progress_many(ids, tokens)

    # ---------------------------------------------------------------- health
    async def _health_loop(self) -> None:
        config = self.config
        while True:
            targets = range(config.n_ranks) if config.ranks else [0]
            results = await asyncio.gather(*(self._probe(rank) for rank in targets))
            for rank, ok in zip(targets, results):
                ranks = [rank] if config.ranks else range(config.n_ranks)
                for r in ranks:
                    self._probe_result(r, ok)
            await asyncio.sleep(config.health_interval_s)

    async def _probe(self, rank: int) -> bool:
        try:
            async with self._session.get(self.config.rank_url(rank) + "/health",
                                         timeout=self._probe_timeout) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    def _probe_result(self, rank: int, ok: bool) -> None:
        if ok:
            self._probe_failures[rank] = 0
            if not self._up[rank]:
                self._up[rank] = True
                self.router.rank_up(rank)
                self._wake.set()
            return
        self._probe_failures[rank] += 1
        if self._probe_failures[rank] >= self.config.health_failures:
            self.mark_down(rank, "failed its health probe")

    def mark_down(self, rank: int, why: str) -> None:
        """Take a rank out of the placement; requests in flight there end with a 502."""
        if not self._up[rank]:
            return
        self._up[rank] = False
        dropped = self.router.rank_down(rank)
        reason = f"{self.config.describe_rank(rank)} {why}"
        for task_id in dropped:
            flight = self._flights.pop(task_id, None)
            if flight is None:
                continue
            flight.released = True
            flight.failed = reason
            if flight.task is not None:
                flight.task.cancel()
                flight.cancel_sent = True
        self._wake.set()

    # -------------------------------------------------------------- handlers
    async def _dispatch(self, request):
        """The handler of the route the request names; 404 for another path, 405 for another method
        (``HEAD`` is served as ``GET``, as aiohttp's router serves it)."""
        route = self._routes.get(request.path)
        if route is None:
            return _json_error(404, f"no route {request.path} here", "not_found")
        method, handler = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            allowed = "GET, HEAD" if method == "GET" else method
            answer = _json_error(405, f"{request.path} takes {method}, not {request.method}", "method_not_allowed")
            answer.headers["Allow"] = allowed
            return answer
        return await handler(request)

    async def _completions(self, request):
        return await self._handle(request, "/v1/completions", chat=False)

    async def _chat(self, request):
        return await self._handle(request, "/v1/chat/completions", chat=True)

    async def _handle(self, request, path: str, *, chat: bool):
        queued_at = time.monotonic()
        self.counters["received"] += 1
        try:
            raw = await request.read()
            body, text, prompt_ids, max_tokens = parse_request(raw, chat=chat)
        except BadRequest as error:
            self.counters["rejected"] += 1
            return web.json_response(error.body(), status=400)
        exact = prompt_ids is not None
        prompt_tokens = prompt_ids if exact else estimate_tokens(text, self.chars_per_token())
        flight = _Flight(float(prompt_tokens), max_tokens, bool(body.get("stream", False)), queued_at)
        if (not exact and self.config.prompt_tokens == "tokenize" and not self._tokenize_missing
                and prompt_tokens >= self.config.tokenize_min_tokens):
            # Started once the request is sent (or left waiting by a decision): the first decision
            # uses the estimate either way, and the call no longer delays the request on its way.
            # A short prompt keeps its estimate: off by a few tokens, for one engine call less.
            flight.count_args = (text, chat, body)
        if self.config.pin == "sglang":
            raw = None                                 # rebuilt per attempt with the rank in it
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    self._enqueue(flight)
                    if flight.rank >= 0:                 # placed on arrival
                        rank = flight.rank
                    else:
                        # the decision resolves the future; a timer fails it (cheaper than wait_for and shield)
                        flight.placed = placed = loop.create_future()
                        expiry = loop.call_later(self.config.queue_timeout_s, _expire, placed)
                        try:
                            await placed
                        finally:
                            expiry.cancel()
                        rank = placed.result()
                except asyncio.TimeoutError:
                    self._release(flight, cancelled=True)
                    self.counters["timed_out"] += 1
                    raise _Unavailable(f"no slot became free within {self.config.queue_timeout_s:g} s "
                                       f"(ranks up: {sum(self._up)} of {self.config.n_ranks})") from None
                # Forwarded in this handler's own task (no task of its own: one less per request); a rank
                # that fails cancels this task (mark_down), a client that leaves does too.
                flight.task = asyncio.current_task()
                try:
                    return await self._forward(request, flight, rank, path, body, raw)
                except _Retry as error:
                    self._release(flight, cancelled=True)
                    self.mark_down(rank, f"refused the request ({error})")
                    self.counters["requeued"] += 1
                    flight.rank = -1
                    continue
                except asyncio.CancelledError:
                    if _take_back(flight):          # its rank went down, and the client is still there
                        self.counters["failed"] += 1
                        return _json_error(502, f"{flight.failed} while serving this request", "upstream_error")
                    raise
                finally:
                    flight.task = None
        except _Unavailable as error:
            return _json_error(503, str(error), "unavailable")
        except asyncio.CancelledError:
            self.counters["cancelled"] += 1
            raise
        finally:
            if not flight.released:
                self._release(flight, cancelled=True)
            if flight.counting is not None and not flight.counting.done():
                flight.counting.cancel()
            flight.cancel_count_timer()

    async def _count_prompt(self, flight: _Flight, text: str, chat: bool, body: dict) -> None:
        """Count the prompt with the engine's ``/tokenize`` beside the request, off its path.

        The request waits in the pool (or runs) with the estimate from its text
        until the count arrives; a decision taken before then used the estimate.
        """
        up = [r for r in range(self.config.n_ranks) if self._up[r]] if self.config.ranks else [0]
        if not up:
            return
        rank = up[next(self._ids) % len(up)]
        try:
            async with self._session.post(self.config.rank_url(rank) + "/tokenize",
                                          json={"content": text, "prompt": text},
                                          timeout=self._probe_timeout) as response:
                if response.status == 404:
                    self._tokenize_missing = True
                if response.status != 200:
                    return
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int):
            tokens = data.get("tokens") if isinstance(data, dict) else None
            if not isinstance(tokens, list):
                return
            count = len(tokens)
        if count > 0:
            self._counted_prompts += 1
            self._counted_chars += len(text)
            self._counted_tokens += count
        count = max(1, count + 4 * (len(body.get("messages") or ()) if chat else 0))   # chat template: a few a message
        flight.prompt_tokens = float(count)
        if not flight.released:
            self.router.set_prompt_tokens(flight.task_id, count)

    def chars_per_token(self) -> float:
        """Characters a token in the prompts the engine counted so far (4 until 8 were counted, and
        without ``/tokenize``): what a prompt's estimate assumes until its own count arrives."""
        if self._counted_prompts < 8:
            return 4.0
        return min(max(self._counted_chars / self._counted_tokens, 0.5), 64.0)

    def _request_to(self, request, rank: int, path: str, body: dict, raw: bytes | None):
        """The URL, headers and body of the request to ``rank``."""
        config = self.config
        # The client's headers as they came (bytes: nothing decoded to be encoded again).
        headers = [(k, v) for k, v in request.raw_headers if k.lower() not in _HOP_BY_HOP_RAW]
        if config.pin == "vllm":
            headers = [(k, v) for k, v in headers if k.lower() != b"x-data-parallel-rank"]
            headers.append((b"X-data-parallel-rank", b"%d" % rank))
        elif config.pin == "sglang":
            headers = [(k, v) for k, v in headers if k.lower() not in (b"x-data-parallel-rank", b"content-type")]
            headers += ((b"X-Data-Parallel-Rank", b"%d" % rank), (b"Content-Type", b"application/json"))
            raw = json.dumps({**body, "routed_dp_rank": rank}).encode()
        return config.rank_url(rank) + path, headers, raw

    async def _forward(self, request, flight: _Flight, rank: int, path: str, body: dict, raw):
        config = self.config
        url, headers, payload = self._request_to(request, rank, path, body, raw)
        flight.sent_at = time.monotonic()
        if flight.count_args is not None:
            # Counted once sent, or once it has run --tokenize-delay-s: a short request then costs one call.
            delay = config.tokenize_delay_s
            flight.cancel_count_timer()               # from an attempt that never reached its rank
            if delay > 0:
                flight.count_timer = asyncio.get_running_loop().call_later(delay, self._start_count, flight)
            else:
                self._start_count(flight)      # its task runs once this request is written
        try:
            try:
                upstream = await self._upstream.post(url, headers, payload)
            except ClosedBeforeAnswer as closed:
                # Closed (or reset) before any answer, as a kept-alive connection the rank had just closed is
                # (llama-server closes idle ones after 5 s; a request written into one that is closing gets a
                # reset): once more, on a new connection. A second close, or a rank that no longer takes
                # connections (it crashed with the request in flight), is a failure: a 502.
                try:
                    upstream = await self._upstream.post(url, headers, payload, fresh=True)
                except ConnectFailed:
                    raise closed from None
        except ConnectFailed as error:
            raise _Retry(str(error)) from None
        except UpstreamError as error:
            self._probe_soon(rank)
            self._release(flight)
            self.counters["failed"] += 1
            return _json_error(502, f"{config.describe_rank(rank)} failed: {type(error).__name__}: {error}",
                               "upstream_error")
        answer_headers = [(k, v) for k, v in upstream.headers if k.lower() not in _HOP_BY_HOP]
        answer_headers.append((RANK_HEADER, str(rank)))
        response = None
        complete = False
        try:
            if upstream.status != 200 or not flight.stream:
                data = await upstream.read()
                complete = True
                answer = web.Response(body=data, status=upstream.status, headers=answer_headers)
                await _answered(flight, answer, request)
                self._release(flight, completion_tokens(data) if upstream.status == 200 else None)
                self.counters["completed" if upstream.status == 200 else "failed"] += 1
                return answer
            response = web.StreamResponse(status=200, headers=answer_headers)
            await response.prepare(request)
            counter = StreamCounter()
            async for data in upstream.iter_any():
                try:
                    await response.write(data)
                except ConnectionResetError:              # the client went away: cancel upstream, free the slot
                    self._release(flight, cancelled=True)
                    self.counters["cancelled"] += 1
                    return response
                flight.generated = counter.feed(data)     # the router learns it before the next decision
            complete = True
            await _answered(flight, response)
            self._release(flight, counter.output_tokens)
            self.counters["completed"] += 1
            return response
        except asyncio.CancelledError:
            if response is not None and _take_back(flight):     # its rank went down mid-stream
                await _stream_error(response, flight.failed)
                return response
            raise
        except _STREAM_ERRORS as error:
            self._probe_soon(rank)
            self._release(flight, cancelled=True)
            self.counters["failed"] += 1
            message = f"{config.describe_rank(rank)} failed while serving this request: {type(error).__name__}"
            if response is None:
                return _json_error(502, message, "upstream_error")
            await _stream_error(response, message)
            return response
        finally:
            if complete:
                upstream.release()
            else:
                upstream.close()             # drops the connection: the engine stops generating

    def _probe_soon(self, rank: int) -> None:
        async def probe():
            ok = await self._probe(rank)
            for r in ([rank] if self.config.ranks else range(self.config.n_ranks)):
                if ok:
                    self._probe_result(r, True)
                else:
                    self.mark_down(r, "stopped answering")
        asyncio.ensure_future(probe())

    async def _models(self, request):
        rank = next((r for r in range(self.config.n_ranks) if self._up[r]), None)
        if rank is None:
            return _json_error(503, "no rank is up", "unavailable")
        timeout = aiohttp.ClientTimeout(total=self.config.probe_timeout_s * 5)
        try:
            async with self._session.get(self.config.rank_url(rank) + "/v1/models", timeout=timeout) as upstream:
                data = await upstream.read()
                return web.Response(body=data, status=upstream.status,
                                    content_type=upstream.content_type or "application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return _json_error(502, f"{self.config.describe_rank(rank)} failed: {type(error).__name__}",
                               "upstream_error")

    async def _health(self, request):
        up = sum(self._up)
        return web.json_response({"status": "ok" if up else "no rank up", "ranks_up": up,
                                  "ranks": self.config.n_ranks}, status=200 if up else 503)

    def status(self) -> dict:
        """Counters and per-rank state (``GET /barrierlb/status``)."""
        self._sync_progress()
        state = self.router.state
        return {"policy": repr(self.router.policy), "queued": self.router.queued, "counters": dict(self.counters),
                "ranks": [{"url": self.config.rank_url(r), "up": self._up[r], "running": int(c),
                           "resident_tokens": float(t)}
                          for r, (c, t) in enumerate(zip(state.active_count.tolist(), state.current_load().tolist()))],
                "slots": self.config.slots, "outputs_learned": self._predictor.n_observed,
                "decision_ms_p50": float(np.percentile(self.decision_s, 50) * 1e3) if self.decision_s else None}

    async def _status(self, request):
        return web.json_response(self.status())

    async def _metrics_handler(self, request):
        body = self._metrics.render(self)
        return web.Response(body=body, headers={"Content-Type": self._metrics.content_type})


class _Unavailable(Exception):
    pass


class _Metrics:
    """Prometheus metrics of one proxy (its own registry)."""

    def __init__(self, n_ranks: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        self.content_type = CONTENT_TYPE_LATEST
        self.registry = registry = CollectorRegistry()
        self.resident = Gauge("barrierlb_rank_resident_tokens", "Prompt plus generated tokens of the requests "
                              "running on the rank", ["rank"], registry=registry)
        self.running = Gauge("barrierlb_rank_running_requests", "Requests running on the rank", ["rank"],
                             registry=registry)
        self.up = Gauge("barrierlb_rank_up", "1 while the rank takes requests", ["rank"], registry=registry)
        self.queued = Gauge("barrierlb_queued_requests", "Requests waiting in the proxy for a slot",
                            registry=registry)
        self.imbalance = Gauge("barrierlb_imbalance_tokens", "G * max - sum of the ranks' resident tokens now",
                               registry=registry)
        self.predicted = Gauge("barrierlb_predicted_imbalance", "Predicted imbalance of the last decision "
                               "(the policy's objective, in token-steps)", registry=registry)
        self.decision_seconds = Histogram("barrierlb_decision_seconds", "Time of one placement decision",
                                          buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1),
                                          registry=registry)
        self.requests = Counter("barrierlb_requests", "Requests by outcome", ["outcome"], registry=registry)
        self._reported = {}
        self._n_ranks = n_ranks
        self._pending: list[float] = []     # decision times not yet in the histogram (observed at a scrape)

    def decision(self, seconds: float) -> None:
        """A decision's time: kept until the next scrape (a histogram observation takes a lock and a
        bucket search; per request that was a few microseconds for a figure read every few seconds)."""
        self._pending.append(seconds)
        if len(self._pending) >= 4096:       # nobody scrapes: fold them in now and then
            self._observe_pending()

    def _observe_pending(self) -> None:
        pending, self._pending = self._pending, []
        for seconds in pending:
            self.decision_seconds.observe(seconds)

    def render(self, proxy: Proxy) -> bytes:
        from prometheus_client import generate_latest

        self._observe_pending()
        decision = proxy.router.last_decision
        if decision is not None and math.isfinite(decision.objective):
            self.predicted.set(decision.objective)
        proxy._sync_progress()
        state = proxy.router.state
        load = state.current_load()
        for rank, (count, tokens) in enumerate(zip(state.active_count.tolist(), load.tolist())):
            label = str(rank)
            self.resident.labels(label).set(tokens)
            self.running.labels(label).set(count)
            self.up.labels(label).set(1 if proxy._up[rank] else 0)
        self.queued.set(proxy.router.queued)
        alive = state.alive
        self.imbalance.set(float(alive.sum() * load[alive].max() - load[alive].sum()) if alive.any() else 0.0)
        for outcome, value in proxy.counters.items():
            delta = value - self._reported.get(outcome, 0)
            if delta > 0:
                self.requests.labels(outcome).inc(delta)
                self._reported[outcome] = value
        return generate_latest(self.registry)


def _policy_options(spec: str) -> dict:
    from barrierlb.policies import make_policy

    return make_policy(spec).options()


def _expire(placed: asyncio.Future) -> None:
    if not placed.done():
        placed.set_exception(asyncio.TimeoutError())


async def _answered(flight: _Flight, response, request=None) -> None:
    """Send the end of a complete answer, before the bookkeeping of its end (the router's ``finish``,
    the learning): that comes off the request's path. The flight's handler is then no longer cancelled
    by a rank marked down (nothing is left to end), and a client that left before the end is not an error:
    everything was sent. ``request``: the response is prepared first (it was not streamed)."""
    flight.task = None
    try:
        if request is not None:
            await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        pass


def _take_back(flight: _Flight) -> bool:
    """Take back the cancel :meth:`Proxy.mark_down` sent the flight's handler, once; True if no other
    cancel is pending (the client's, when it left): the handler may then answer instead of ending."""
    if not flight.cancel_sent:
        return False
    flight.cancel_sent = False
    uncancel = getattr(asyncio.current_task(), "uncancel", None)
    # Python 3.10 counts no cancels (Task.uncancel is 3.11's): the one caught is taken back by catching
    # it; a client that left as well shows when the answer is written.
    return True if uncancel is None else uncancel() == 0


_MAX_BODY = 64 * 2**20      # bytes of a request body at most (a longer one is answered 413)


def _json_error(status: int, message: str, kind: str):
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}},
                             status=status)


async def _stream_error(response, message: str) -> None:
    """End a stream already started with an SSE error event (the status line is gone)."""
    event = {"error": {"message": message, "type": "upstream_error", "param": None, "code": 502}}
    try:
        await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass


def _warm_up(policy: str) -> None:
    """Two throwaway decisions of ``policy`` (the one-request path and a full one), so that the
    first requests do not wait for numba to load the solver's kernels (about half a second)."""
    router = DecodeRouter(4, 8, policy=policy)
    router.add_request(0, prompt_tokens=8)
    router.route()
    for request_id in range(1, 25):
        router.add_request(request_id, prompt_tokens=8 + 5 * request_id)
    router.route()


async def serve_forever(config: ServeConfig, *, ready=None) -> None:
    """Run a proxy until cancelled; ``ready(url)`` is called once it listens."""
    proxy = Proxy(config)
    await proxy.start()
    # What was loaded to start (numpy, numba, the solvers' kernels) stays: keep the collector's full
    # passes, which would walk all of it, off the requests' path.
    gc.freeze()
    if ready is not None:
        ready(proxy.url)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()
