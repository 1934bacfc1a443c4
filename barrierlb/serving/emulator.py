"""An emulator of a lockstep data-parallel LLM engine, for tests and benchmarks.

Not an engine: it generates placeholder tokens. What it emulates is the timing
and the interface of data-parallel decode where every rank runs every forward
pass together (MoE models served with data-parallel attention and expert
parallelism): all ranks step in lockstep, and each step lasts

    step_s = time_scale * (step_base_s + step_token_s * max_g resident_tokens_g)

with ``resident_tokens_g`` the prompt plus generated tokens of the requests
running on rank ``g`` (the simulator's model, DESIGN.md section 4). Each step
every running request gets one token. A rank runs at most ``slots`` requests;
more wait at the rank in arrival order, as in an engine's own queue.

Interface (OpenAI-compatible, as vLLM, SGLang and llama.cpp serve it):

- ``POST /v1/completions`` and ``/v1/chat/completions``, streaming (SSE, one
  token per chunk, ``[DONE]`` at the end, usage when
  ``stream_options.include_usage``) or not (usage in the body);
- ``POST /tokenize`` (``{"content": ...}`` as llama.cpp, or ``{"prompt": ...}``
  / ``{"messages": [...]}`` as vLLM): ``{"tokens": [...], "count": n}``;
- ``GET /health``, ``GET /v1/models``, ``GET /emulator/stats`` (per-step loads
  and per-rank counters, for tests and benchmarks), ``POST /emulator/reset``.

Rank addressing, every mode the proxy speaks: one port per rank
(``pin=None``), one port with the rank in the header ``X-data-parallel-rank``
(``pin="vllm"``), or in the body field ``routed_dp_rank`` / ``data_parallel_rank``
or the header ``X-Data-Parallel-Rank`` (``pin="sglang"``). An unpinned request
on a shared port goes to the rank with the fewest requests. Every response
names the rank that served it in the header ``X-Emulator-Rank``. A request
with the header ``X-Emulator-Stamp: 1`` also gets the times (``time.monotonic``,
shared by the processes of one machine) at which its handler started
(``X-Emulator-Received``) and its response left (``X-Emulator-Sent``; in a stream,
an SSE comment line ``: sent=T`` before each event): what a benchmark needs to
time the path a proxy adds.

The emulator's tokenizer splits on whitespace. A request ends after
``max_tokens`` tokens (default 16) or, if the body carries the emulator-only
field ``emulator_output_tokens``, after that many (finish reason ``stop``): a
replayed trace's true output length, which a router in front must not read.
Output is a pure function of the request (ids and token texts hash the prompt),
so the same request sent directly and through a proxy gives the same bytes.

Run it: ``python -m barrierlb.serving.emulator --ranks 2 --port 8100`` (ranks on
ports 8100 and 8101), or ``--pin vllm`` for one port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field

from barrierlb.serving._deps import web
from barrierlb.serving._loop import EVENT_LOOPS
from barrierlb.serving._loop import run as run_loop

RANK_HEADER = "X-Emulator-Rank"


@dataclass(frozen=True)
class EmulatorConfig:
    """Shape and timing of the emulated engine.

    Attributes
    ----------
    n_ranks : int
        Data-parallel ranks stepping in lockstep.
    slots : int
        Requests a rank runs at once (its max batch); more wait at the rank.
    step_base_s : float
        Fixed cost of a step ``c`` (seconds, before ``time_scale``).
    step_token_s : float
        Cost per resident token of the most loaded rank ``t_l`` (seconds).
    time_scale : float
        Multiplies every step (slow the model down or speed it up to fit a machine).
    pin : None, "vllm" or "sglang"
        How a shared port learns the rank (``None``: one port per rank).
    """

    n_ranks: int = 2
    slots: int = 8
    step_base_s: float = 0.02
    step_token_s: float = 2e-5
    time_scale: float = 1.0
    pin: str | None = None

    def __post_init__(self):
        if not isinstance(self.n_ranks, int) or self.n_ranks < 1:
            raise ValueError(f"n_ranks must be a positive integer, got {self.n_ranks!r}")
        if not isinstance(self.slots, int) or self.slots < 1:
            raise ValueError(f"slots must be a positive integer, got {self.slots!r}")
        for name in ("step_base_s", "step_token_s", "time_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.pin not in (None, "vllm", "sglang"):
            raise ValueError(f"pin must be None, 'vllm' or 'sglang', got {self.pin!r}")


class _EmulatorError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class _Request:
    rank: int
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    tokens: asyncio.Queue = field(default_factory=asyncio.Queue)
    generated: int = 0
    cancelled: bool = False


def count_tokens(text: str) -> int:
    """The emulator's tokenizer: whitespace-separated words (at least one per request)."""
    return max(1, len(text.split()))


def _prompt_text(body: dict, chat: bool) -> str:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _EmulatorError(400, "'messages' must be a non-empty list")
        parts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise _EmulatorError(400, "each message needs a string 'content'")
            parts.append(content)
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _EmulatorError(400, "'prompt' must be a string")
    return prompt


def _positive_int(body: dict, key: str, default: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _EmulatorError(400, f"'{key}' must be a positive integer, got {value!r}")
    return value


class Emulator:
    """The lockstep engine: ``await start(host)``, ``await stop()``.

    ``urls`` lists one base URL per rank (``pin=None``) or the one shared URL.
    """

    def __init__(self, config: EmulatorConfig = EmulatorConfig()):
        if not isinstance(config, EmulatorConfig):
            raise TypeError(f"config must be an EmulatorConfig, got {type(config).__name__}")
        self.config = config
        g = config.n_ranks
        self._waiting = [deque() for _ in range(g)]
        self._running: list[list[_Request]] = [[] for _ in range(g)]
        self._killed = [False] * g
        self._wake = asyncio.Event()
        self._stepper: asyncio.Task | None = None
        self._runners: list = []
        self._sites_by_rank: dict[int, object] = {}
        self._handlers: list[set] = [set() for _ in range(g)]
        self.urls: list[str] = []
        self.reset()

    # ----------------------------------------------------------------- stats
    def reset(self) -> None:
        """Forget the counters and the step log (requests in flight are kept)."""
        g = self.config.n_ranks
        self.steps: list[tuple[float, float, float, float, int]] = []  # (start s, duration s, max, sum, ranks)
        self.received = [0] * g
        self.completed = [0] * g
        self.cancelled = [0] * g
        self.max_in_flight = [0] * g
        self.tokens_out = 0
        self.tokenize_calls = 0

    def stats(self) -> dict:
        in_flight = [len(self._waiting[r]) + len(self._running[r]) for r in range(self.config.n_ranks)]
        return {"n_ranks": self.config.n_ranks, "slots": self.config.slots, "received": self.received,
                "completed": self.completed, "cancelled": self.cancelled, "in_flight": in_flight,
                "max_in_flight": self.max_in_flight, "tokens_out": self.tokens_out,
                "tokenize_calls": self.tokenize_calls, "killed": self._killed, "steps": self.steps}

    # ------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", ports: list[int] | None = None) -> list[str]:
        """Listen (port 0: any free port); returns the base URLs."""
        n_sites = 1 if self.config.pin else self.config.n_ranks
        ports = list(ports) if ports else [0] * n_sites
        if len(ports) != n_sites:
            raise ValueError(f"ports must list {n_sites} port(s), got {ports}")
        for index, port in enumerate(ports):
            rank = None if self.config.pin else index
            app = web.Application(client_max_size=64 * 2**20)
            self._routes(app, rank)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            self._runners.append(runner)
            if rank is not None:
                self._sites_by_rank[rank] = runner
            bound = runner.addresses[0][1]
            self.urls.append(f"http://{host}:{bound}")
        self._stepper = asyncio.ensure_future(self._step_loop())
        return self.urls

    async def stop(self) -> None:
        if self._stepper is not None:
            self._stepper.cancel()
            try:
                await self._stepper
            except asyncio.CancelledError:
                pass
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def kill_rank(self, rank: int) -> None:
        """Emulate a rank's crash: its port closes and its open connections drop."""
        if self.config.pin:
            raise ValueError("kill_rank needs one port per rank (pin=None)")
        self._killed[rank] = True
        for task in list(self._handlers[rank]):
            task.cancel()
        runner = self._sites_by_rank.pop(rank, None)
        if runner is not None:
            await runner.shutdown()
            await runner.cleanup()
            self._runners.remove(runner)

    # --------------------------------------------------------------- routes
    def _routes(self, app, rank: int | None) -> None:
        async def completions(request):
            return await self._generate(request, rank, chat=False)

        async def chat(request):
            return await self._generate(request, rank, chat=True)

        async def health(request):
            return web.json_response({"status": "ok"})

        async def models(request):
            return web.json_response({"object": "list", "data": [{"id": "emulator", "object": "model",
                                                                   "owned_by": "barrierlb"}]})

        async def tokenize(request):
            self.tokenize_calls += 1
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise _EmulatorError(400, "body must be a JSON object")
                if "messages" in body:
                    text = _prompt_text(body, chat=True)
                else:
                    text = body.get("content", body.get("prompt"))
                    if not isinstance(text, str):
                        raise _EmulatorError(400, "'content' or 'prompt' must be a string")
            except json.JSONDecodeError:
                return _error(400, "body is not valid JSON")
            except _EmulatorError as error:
                return _error(error.status, str(error))
            n = count_tokens(text)
            return web.json_response({"tokens": list(range(n)), "count": n})

        async def stats(request):
            return web.json_response(self.stats())

        async def reset(request):
            self.reset()
            return web.json_response({"reset": True})

        app.router.add_post("/v1/completions", completions)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/tokenize", tokenize)
        app.router.add_get("/emulator/stats", stats)
        app.router.add_post("/emulator/reset", reset)

    def _pinned_rank(self, request, body: dict, rank: int | None) -> int:
        if rank is not None:
            return rank
        g = self.config.n_ranks
        value = None
        if self.config.pin == "vllm":
            value = request.headers.get("X-data-parallel-rank")
        else:
            for key in ("routed_dp_rank", "data_parallel_rank"):
                if body.get(key) is not None:
                    value = body[key]
                    break
            else:
                value = request.headers.get("X-Data-Parallel-Rank")
        if value is None:
            loads = [len(self._waiting[r]) + len(self._running[r]) for r in range(g)]
            return loads.index(min(loads))
        try:
            pinned = int(value)
        except (TypeError, ValueError):
            raise _EmulatorError(400, f"data-parallel rank {value!r} is not an integer") from None
        if not 0 <= pinned < g:
            raise _EmulatorError(400, f"data-parallel rank {pinned} out of range [0, {g})")
        return pinned

    async def _generate(self, request, site_rank: int | None, *, chat: bool):
        received = time.monotonic()
        stamp = request.headers.get("X-Emulator-Stamp") == "1"
        try:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                raise _EmulatorError(400, "body is not valid JSON") from None
            if not isinstance(body, dict):
                raise _EmulatorError(400, "body must be a JSON object")
            text = _prompt_text(body, chat)
            rank = self._pinned_rank(request, body, site_rank)
            max_tokens = _positive_int(body, "max_completion_tokens" if chat and "max_completion_tokens" in body
                                       else "max_tokens", 16)
            natural = body.get("emulator_output_tokens")
            if natural is not None:
                natural = _positive_int(body, "emulator_output_tokens", 1)
        except _EmulatorError as error:
            return _error(error.status, str(error))
        output = min(max_tokens, natural) if natural is not None else max_tokens
        finish = "stop" if natural is not None and natural <= max_tokens else "length"
        job = _Request(rank, count_tokens(text), output, finish)
        stream = bool(body.get("stream", False))
        include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage", False))
        seed = zlib.crc32(f"{text}|{max_tokens}|{natural}|{chat}".encode())
        ident = f"{'chatcmpl' if chat else 'cmpl'}-emu{seed:08x}"
        model = body.get("model") or "emulator"
        self.received[rank] += 1
        self._waiting[rank].append(job)
        self.max_in_flight[rank] = max(self.max_in_flight[rank], len(self._waiting[rank]) + len(self._running[rank]))
        self._wake.set()
        task = asyncio.current_task()
        self._handlers[rank].add(task)
        headers = {RANK_HEADER: str(rank)}
        response = None
        if stamp:
            headers["X-Emulator-Received"] = repr(received)
        try:
            if stream:
                response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
                await response.prepare(request)
                if chat:
                    await response.write(_sse(_chunk(ident, model, chat, 0, None, role=True)))
                index = 0
                while True:
                    done = await job.tokens.get()
                    finish_reason = job.finish_reason if done else None
                    event = _sse(_chunk(ident, model, chat, _token(seed, index), finish_reason))
                    if stamp:
                        event = b": sent=%r\n" % time.monotonic() + event
                    await response.write(event)
                    index += 1
                    if done:
                        break
                if include_usage:
                    await response.write(_sse({"id": ident, "object": _object(chat, True), "created": 0,
                                               "model": model, "choices": [],
                                               "usage": _usage(job.prompt_tokens, index)}))
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            pieces = []
            while True:
                done = await job.tokens.get()
                pieces.append(_token(seed, len(pieces)))
                if done:
                    break
            text_out = "".join(pieces)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text_out},
                       "finish_reason": job.finish_reason} if chat else
                      {"index": 0, "text": text_out, "logprobs": None, "finish_reason": job.finish_reason})
            if stamp:
                headers["X-Emulator-Sent"] = repr(time.monotonic())
            return web.json_response({"id": ident, "object": _object(chat, False), "created": 0, "model": model,
                                      "choices": [choice], "usage": _usage(job.prompt_tokens, len(pieces))},
                                     headers=headers)
        except asyncio.CancelledError:
            job.cancelled = True
            self.cancelled[rank] += 1
            raise
        except ConnectionResetError:                   # the client went away mid-stream: a cancel, not an error
            job.cancelled = True
            self.cancelled[rank] += 1
            if response is None:
                raise
            return response
        finally:
            self._handlers[rank].discard(task)
            if job.cancelled:
                self._drop(job)

    def _drop(self, job: _Request) -> None:
        try:
            self._waiting[job.rank].remove(job)
        except ValueError:
            pass
        try:
            self._running[job.rank].remove(job)
        except ValueError:
            pass

    # -------------------------------------------------------------- stepping
    async def _step_loop(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while True:
            for rank in range(config.n_ranks):
                running, waiting = self._running[rank], self._waiting[rank]
                while waiting and len(running) < config.slots:
                    running.append(waiting.popleft())
            if not any(self._running):
                self._wake.clear()
                await self._wake.wait()
                next_start = loop.time()
                continue
            loads = [sum(job.prompt_tokens + job.generated for job in running) for running in self._running]
            alive = [load for rank, load in enumerate(loads) if not self._killed[rank]]
            peak = max(alive) if alive else 0.0
            duration = config.time_scale * (config.step_base_s + config.step_token_s * peak)
            started = next_start
            next_start = started + duration
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            now = loop.time()
            if now > next_start:                       # the machine was slower than the model: no catching up
                next_start = now
            self.steps.append((time.monotonic() - (now - started), now - started, float(peak), float(sum(alive)),
                               len(alive)))
            for rank in range(config.n_ranks):
                still = []
                for job in self._running[rank]:
                    if job.cancelled:
                        continue
                    job.generated += 1
                    self.tokens_out += 1
                    done = job.generated >= job.output_tokens
                    job.tokens.put_nowait(done)
                    if done:
                        self.completed[rank] += 1
                    else:
                        still.append(job)
                self._running[rank] = still


def _object(chat: bool, stream: bool) -> str:
    if chat:
        return "chat.completion.chunk" if stream else "chat.completion"
    return "text_completion"


def _token(seed: int, index: int) -> str:
    return f" t{(seed + 7919 * index) % 997}"


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunk(ident: str, model: str, chat: bool, text, finish_reason, *, role: bool = False) -> dict:
    if chat:
        delta = {"role": "assistant", "content": ""} if role else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {"id": ident, "object": _object(chat, True), "created": 0, "model": model, "choices": [choice]}


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _error(status: int, message: str):
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": status}},
                             status=status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m barrierlb.serving.emulator",
                                     description="Emulator of a lockstep data-parallel LLM engine "
                                                 "(for testing and benchmarking barrierlb serve).")
    parser.add_argument("--ranks", type=int, default=2, help="data-parallel ranks (default 2)")
    parser.add_argument("--slots", type=int, default=8, help="requests each rank runs at once (default 8)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0,
                        help="first port; rank g listens on PORT+g without --pin (default 0: any free ports)")
    parser.add_argument("--pin", choices=("vllm", "sglang"), default=None,
                        help="one port for all ranks, rank from the vLLM header or the SGLang body field")
    parser.add_argument("--step-base-s", type=float, default=EmulatorConfig.step_base_s,
                        help=f"fixed step cost c (default {EmulatorConfig.step_base_s})")
    parser.add_argument("--step-token-s", type=float, default=EmulatorConfig.step_token_s,
                        help=f"step cost per resident token of the most loaded rank (default "
                             f"{EmulatorConfig.step_token_s})")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies every step (default 1)")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto",
                        help="auto (default): uvloop when installed, else asyncio's")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = EmulatorConfig(n_ranks=args.ranks, slots=args.slots, step_base_s=args.step_base_s,
                                step_token_s=args.step_token_s, time_scale=args.time_scale, pin=args.pin)
    except ValueError as error:
        print(f"emulator: error: {error}", file=sys.stderr)
        return 2
    n_sites = 1 if config.pin else config.n_ranks
    ports = [args.port + i if args.port else 0 for i in range(n_sites)]

    async def run():
        emulator = Emulator(config)
        try:
            urls = await emulator.start(args.host, ports)
        except OSError as error:
            print(f"emulator: error: cannot listen: {error}", file=sys.stderr)
            return 2
        print("EMULATOR_URLS=" + ",".join(urls), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop()

    try:
        return run_loop(run(), args.event_loop) or 0
    except ImportError as error:
        print(f"emulator: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
