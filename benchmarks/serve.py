"""barrierlb serve, end to end: trace replay through the proxy to the lockstep engine emulator, and the
proxy's own cost.

Part 1 replays BurstGPT and the Azure 2023 code trace (``../shared/data``; a
synthetic workload when they are missing) open-loop through ``barrierlb serve``
to the emulator (``python -m barrierlb.serving.emulator``: N ranks stepping in
lockstep, each step ``c + t_l * max_g resident_tokens_g``), once per policy,
the same requests at the same times, arriving faster than the ranks serve them
(``--overload``, default twice the capacity measured when saturated). It reports the barrier idle
fraction from the emulator's per-step loads over the steps while requests waited
in the proxy (``idle_fraction``: when the ranks are saturated and the policy has
a choice; ``idle_fraction_all_steps`` counts every step, ramp-up and drain too),
TPOT and TTFT p50/p99 and throughput measured by the client, and how many requests
completed.

Part 1 hosts the emulator and the proxy on one event loop in a thread of this
process, the client on the main thread, all over HTTP on loopback: on a busy
2-core machine three processes waking each other for every token measured the
scheduler more than the policies. Part 2 runs them as separate processes.

Part 2 measures what the proxy adds: short requests at a fixed rate, in blocks
alternating between the emulator directly and through the proxy. The emulator
stamps when a request reached it and when its response (each streamed chunk)
left (``time.monotonic``, one clock for the machine's processes), so the time
on the wire is measured on both paths and the difference is the proxy's: added
latency per request (p50, p99) and per streamed chunk, the proxy's CPU time per
request, and the highest rate swept whose added p99 stays under 5 ms.

    python benchmarks/serve.py --quick --json serve.json      # under 3 minutes: 32 ranks BurstGPT + proxy cost
    python benchmarks/serve.py --json serve.json              # 8 and 32 ranks, both traces
    python benchmarks/serve.py --quick --skip-replay --overhead-estimate --event-loop asyncio  # cost, asyncio loop

Every process is started by this script and stopped before it exits.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ROOT, add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

from barrierlb.workloads import load_workload, synthetic  # noqa: E402

POLICIES = (("round-robin", "round-robin"), ("vllm", "vllm"), ("jsq-tokens", "jsq-tokens"), ("bfio", "bfio"))


# ------------------------------------------------------------------ processes
class Process:
    """A child process whose first output line matching ``pattern`` gives its address; stopped on exit.

    Its output goes to a temporary file (a pipe nobody reads would block it once full);
    :meth:`output` reads it back.
    """

    def __init__(self, argv, pattern: str, timeout_s: float = 120.0, env: dict | None = None, cwd=ROOT):
        import tempfile

        self.argv = argv
        self.log = tempfile.NamedTemporaryFile("w+", prefix="barrierlb-serve-bench-", suffix=".log")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                     env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(pattern, self.output())
            if match:
                self.found = match.group(1)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{' '.join(argv[:4])} did not start: {self.output()[-800:]}")

    def output(self) -> str:
        with open(self.log.name) as log:
            return log.read()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Hosted:
    """An emulator or a proxy on this process's background event loop, used like a :class:`Process`."""

    def __init__(self, loop, server, url: str):
        self.loop, self.server, self.found = loop, server, url

    def output(self) -> str:
        return ""

    def stop(self) -> None:
        self.loop.run(self.server.stop())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def hosted_emulator(loop, ranks: int, slots: int, base_s: float, token_s: float) -> Hosted:
    from barrierlb.serving.emulator import Emulator, EmulatorConfig

    server = Emulator(EmulatorConfig(n_ranks=ranks, slots=slots, step_base_s=base_s, step_token_s=token_s))
    return Hosted(loop, server, ",".join(loop.run(server.start())))


def hosted_proxy(loop, urls: str, slots: int, policy: str, **options) -> Hosted:
    from barrierlb.serving.config import ServeConfig
    from barrierlb.serving.proxy import Proxy

    server = Proxy(ServeConfig(ranks=tuple(urls.split(",")), slots=slots, policy=policy, port=0, **options))
    return Hosted(loop, server, loop.run(server.start()))


def emulator(ranks: int, slots: int, base_s: float, token_s: float, *extra: str) -> Process:
    return Process([sys.executable, "-m", "barrierlb.serving.emulator", "--ranks", str(ranks), "--slots", str(slots),
                    "--step-base-s", repr(float(base_s)), "--step-token-s", repr(float(token_s)), *extra],
                   r"EMULATOR_URLS=(\S+)")


def bare_forwarder(urls: str, *extra: str, client: str = "aiohttp") -> Process:
    """This script's :func:`run_bare_forwarder` in a child process."""
    return Process([sys.executable, str(Path(__file__).resolve()), "--bare-forwarder", urls, "--bare-client", client,
                    *extra], r"listening on (\S+)")


#: Headers a bare forwarder does not pass on (it frames the body itself).
_BARE_SKIP = frozenset(("host", "content-length", "transfer-encoding", "connection"))
_BARE_SKIP_RAW = frozenset(name.encode() for name in _BARE_SKIP)


def _event_stream(headers) -> bool:
    """Whether an answer's headers (pairs of str) name a server-sent event stream."""
    return any(k.lower() == "content-type" and v.startswith("text/event-stream") for k, v in headers)


def run_bare_forwarder(urls: str, event_loop: str, client: str = "aiohttp") -> int:
    """A bare forwarder, the floor of a proxy's cost on an aiohttp server: each request goes to the next
    rank in turn, its body and headers passed as they are, no waiting pool, no decision, no counting.
    ``client``: its requests to the ranks on aiohttp's client, or on ``upstream``, the proxy's own
    (:mod:`barrierlb.serving.upstream`); ``protocol``: the upstream client behind no aiohttp at all,
    :class:`_ProtocolForwarder`, the floor of the server side."""
    import itertools

    from barrierlb.serving._deps import aiohttp, web
    from barrierlb.serving._loop import run as run_loop
    from barrierlb.serving.upstream import Upstream

    targets = itertools.cycle(url.rstrip("/") for url in urls.split(","))

    async def main():
        if client == "aiohttp":
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        else:
            upstream = Upstream(connect_timeout_s=5.0, read_timeout_s=300.0, total_timeout_s=3600.0)

        async def forward_upstream(request):
            raw = await request.read()
            headers = [(k, v) for k, v in request.raw_headers if k.lower() not in _BARE_SKIP_RAW]
            answer = await upstream.post(next(targets) + request.path, headers, raw)
            try:
                out = [(k, v) for k, v in answer.headers if k.lower() not in _BARE_SKIP]
                if not _event_stream(out):
                    response = web.Response(body=await answer.read(), status=answer.status, headers=out)
                else:
                    response = web.StreamResponse(status=answer.status, headers=out)
                    await response.prepare(request)
                    async for data in answer.iter_any():
                        await response.write(data)
                    await response.write_eof()
                answer.release()
                return response
            finally:
                answer.close()                 # a no-op once released

        async def forward(request):
            raw = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _BARE_SKIP}
            async with session.post(next(targets) + request.path, data=raw, headers=headers) as upstream:
                answer = {k: v for k, v in upstream.headers.items() if k.lower() not in _BARE_SKIP}
                if upstream.content_type != "text/event-stream":
                    return web.Response(body=await upstream.read(), status=upstream.status, headers=answer)
                response = web.StreamResponse(status=upstream.status, headers=answer)
                await response.prepare(request)
                async for data in upstream.content.iter_any():
                    await response.write(data)
                await response.write_eof()
                return response

        if client == "protocol":
            _ProtocolForwarder.upstream, _ProtocolForwarder.targets = upstream, targets
            server = await asyncio.get_running_loop().create_server(_ProtocolForwarder, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:
            app = web.Application()
            app.router.add_post("/v1/completions", forward if client == "aiohttp" else forward_upstream)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    run_loop(main(), event_loop)
    return 0


class _ProtocolForwarder(asyncio.Protocol):
    """The bare forwarder's server side with no HTTP framework: httptools' request parser on an
    ``asyncio.Protocol``, answers written by hand (``Content-Length``, or chunked for a stream).
    A benchmark floor, not a server: one request at a time a connection, ``POST`` to the
    emulator only, a failed upstream call a 502 and the connection closed."""

    upstream = targets = None

    def connection_made(self, transport) -> None:
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.pending: collections.deque = collections.deque()
        self.serving = None

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _BARE_SKIP_RAW:
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.pending.append((self.url.decode(), self.headers, b"".join(self.body)))
        if self.serving is None:
            self.serving = asyncio.ensure_future(self._serve())

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def connection_lost(self, error) -> None:
        if self.serving is not None:
            self.serving.cancel()

    async def _serve(self) -> None:
        try:
            while self.pending:
                path, headers, body = self.pending.popleft()
                try:
                    answer = await self.upstream.post(next(self.targets) + path, headers, body)
                except Exception as error:            # noqa: BLE001 (a floor: any failure is a 502)
                    message = f"upstream failed: {type(error).__name__}".encode()
                    self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s"
                                         % (len(message), message))
                    self.transport.close()
                    return
                try:
                    out = [(k, v) for k, v in answer.headers if k.lower() not in _BARE_SKIP]
                    head = [b"HTTP/1.1 %d -\r\n" % answer.status]
                    head += [f"{k}: {v}\r\n".encode() for k, v in out]
                    if not _event_stream(out):
                        data = await answer.read()
                        self.transport.write(b"".join([*head, b"Content-Length: %d\r\n\r\n" % len(data), data]))
                    else:
                        self.transport.write(b"".join([*head, b"Transfer-Encoding: chunked\r\n\r\n"]))
                        async for data in answer.iter_any():
                            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.transport.write(b"0\r\n\r\n")
                    answer.release()
                finally:
                    answer.close()                    # a no-op once released
        finally:
            self.serving = None


def proxy(urls: str, slots: int, policy: str, *extra: str, src: str | None = None) -> Process:
    """``barrierlb serve`` in a child process; ``src``: import barrierlb from that source tree instead
    (run there: ``python -m`` puts the working directory first on the path)."""
    where = ROOT if src is None else Path(src).resolve()
    return Process([sys.executable, "-m", "barrierlb", "serve", "--ranks", urls, "--slots", str(slots), "--port", "0",
                    "--policy", policy, *extra], r"listening on (\S+)",
                   env=None if src is None else {"PYTHONPATH": str(where)}, cwd=where)


# --------------------------------------------------------------------- client
async def _get_json(session, url):
    async with session.get(url) as response:
        return await response.json()


async def _post_json(session, url):
    async with session.post(url) as response:
        return await response.json()


async def replay(url: str, prompts, outputs, arrivals_s, max_tokens: int) -> list[dict]:
    """Send each request at its arrival time (open loop), streaming; per request: times and tokens."""
    import aiohttp

    records = [None] * len(prompts)
    texts = {}

    async def one(i, session, start):
        await asyncio.sleep(max(0.0, start + arrivals_s[i] - time.monotonic()))
        n_prompt = int(prompts[i])
        text = texts.get(n_prompt) or texts.setdefault(n_prompt, "w " * n_prompt)
        body = {"prompt": text, "max_tokens": max_tokens, "emulator_output_tokens": int(outputs[i]), "stream": True}
        sent = time.monotonic()
        first = last = None
        tokens = 0
        try:
            async with session.post(url + "/v1/completions", json=body) as response:
                status = response.status
                async for data in response.content.iter_any():
                    now = time.monotonic()
                    count = data.count(b"data: {")
                    if count:
                        first = first or now
                        last = now
                        tokens += count
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            status = f"{type(error).__name__}"
        records[i] = {"sent": sent, "first": first, "last": last, "tokens": tokens, "status": status,
                      "rank": None}

    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        start = time.monotonic() + 0.2
        await asyncio.gather(*(one(i, session, start) for i in range(len(prompts))))
    return records


async def calibrate(url: str, prompts, outputs, n_slots: int, max_tokens: int) -> float:
    """Requests per second the ranks finish when saturated, measured (this machine may be slower than
    the emulator's model): a burst of twice the slots, timed until half of it has finished."""
    import aiohttp

    n = 2 * n_slots
    done = []
    start = time.monotonic()

    async def one(i, session):
        body = {"prompt": "w " * int(prompts[i]), "max_tokens": max_tokens,
                "emulator_output_tokens": int(outputs[i]), "stream": True}
        async with session.post(url + "/v1/completions", json=body) as response:
            await response.read()
        done.append(time.monotonic())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.ensure_future(one(i, session)) for i in range(n)]
        while len(done) < n // 2:
            await asyncio.sleep(0.05)
        for task in tasks:                     # the rest is cancelled: the proxy frees their slots
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (n // 2) / (sorted(done)[n // 2 - 1] - start)


def idle_fraction(steps, t0: float, t1: float, busy=None) -> float:
    """Barrier idle over the emulator's steps that started in [t0, t1] (and, with ``busy``, while
    requests waited in the proxy: ``busy`` is a list of (time, queued) samples)."""
    steps = np.asarray(steps, dtype=np.float64).reshape(-1, 5)
    keep = (steps[:, 0] >= t0) & (steps[:, 0] <= t1)
    if busy is not None and len(busy):
        samples = np.asarray(busy, dtype=np.float64)
        index = np.searchsorted(samples[:, 0], steps[:, 0], side="right") - 1
        keep &= (index >= 0) & (samples[np.maximum(index, 0), 1] > 0)
    window = steps[keep]
    peak, total, alive = window[:, 2], window[:, 3], window[:, 4]
    capacity = (alive * peak).sum()
    return float((alive * peak - total).sum() / capacity) if capacity else float("nan")


def run_policy(workload_name, prompts, outputs, arrivals, *, ranks, slots, base_s, token_s, max_tokens,
               policy, spec, emulator_process, loop, proxy_options=None) -> dict:
    import aiohttp

    proxy_options = dict(proxy_options or {})
    spec = proxy_options.pop("policy", spec)          # a variant's own policy=... (--variant policy=bfio)
    urls = emulator_process.found
    with hosted_proxy(loop, urls, slots, spec, **proxy_options) as server:
        async def go():
            async with aiohttp.ClientSession() as session:
                warm_n = min(2 * ranks, 32)                          # loads the solver's kernels, then forget
                await replay(server.found, [8] * warm_n, [2] * warm_n, np.zeros(warm_n), 8)
                await _post_json(session, urls.split(",")[0] + "/emulator/reset")
                running = asyncio.ensure_future(replay(server.found, prompts, outputs, arrivals, max_tokens))
                busy = []
                while not running.done():                    # when do requests wait in the proxy?
                    state = await _get_json(session, server.found + "/barrierlb/status")
                    busy.append((time.monotonic(), state["queued"]))
                    await asyncio.sleep(0.1)
                records = running.result()
                errors = [line for line in server.output().splitlines() if "error" in line.lower()]
                if errors:
                    print(f"  proxy reported {len(errors)} error lines, first: {errors[0]}")
                stats = await _get_json(session, urls.split(",")[0] + "/emulator/stats")
                status = await _get_json(session, server.found + "/barrierlb/status")
                return records, stats, status, busy
        records, stats, status, busy = asyncio.run(go())
    complete = [r for r, out in zip(records, outputs) if r["status"] == 200 and r["tokens"] == int(out)]
    t_start = min(r["sent"] for r in records)
    ttft = np.array([r["first"] - r["sent"] for r in complete])
    tpot = np.array([(r["last"] - r["first"]) / (r["tokens"] - 1) for r in complete if r["tokens"] > 1])
    end = max(r["last"] for r in complete) if complete else t_start
    tokens = sum(r["tokens"] for r in records)
    return {"policy": policy, "policy_spec": spec, "engine": "emulator", "ranks": ranks, "slots": slots,
            "workload": workload_name, "submitted": len(records), "completed": len(complete),
            "idle_fraction": idle_fraction(stats["steps"], t_start, end, busy),
            "idle_fraction_all_steps": idle_fraction(stats["steps"], t_start, end),
            "saturated_s": 0.1 * sum(1 for _, queued in busy if queued > 0),
            "tpot_p50_s": float(np.percentile(tpot, 50)), "tpot_p99_s": float(np.percentile(tpot, 99)),
            "ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p99_s": float(np.percentile(ttft, 99)),
            "throughput_tok_s": tokens / (end - t_start), "duration_s": end - t_start,
            "decision_ms_p50": status["decision_ms_p50"], "max_in_flight": max(stats["max_in_flight"]),
            "step_base_s": base_s, "step_token_s": token_s}


def workloads(quick: bool, seconds: float, seed: int):
    found = []
    burst = DATA / "burstgpt_sample_8000.json"
    azure = DATA / "azure_llm_2023_code.csv"
    found.append(("burstgpt", load_workload(f"burstgpt:{burst}") if burst.is_file() else None))
    if not quick:
        found.append(("azure-code", load_workload(f"azure:{azure}") if azure.is_file() else None))
    out = []
    for name, workload in found:
        if workload is None:
            print(f"{name}: {DATA} lacks the trace; using the synthetic generator with short outputs instead")
            name, workload = "synthetic-short", synthetic(4000, seed=seed, prompt_mean=400, prompt_std=300,
                                                         output_mean=60, output_std=50)
        out.append((name, workload))
    return out


def part1(args) -> list[dict]:
    from barrierlb.serving.background import BackgroundLoop

    rows = []
    rng = np.random.default_rng(args.seed)
    with BackgroundLoop() as loop:
        for name, workload in workloads(args.quick, args.seconds, args.seed):
            rows += _replay_workload(args, loop, rng, name, workload)
    return rows


def _replay_workload(args, loop, rng, name, workload) -> list[dict]:
    rows = []
    for ranks in ((32,) if args.quick else (8, 32)):
        slots = args.slots
        outputs_all = np.minimum(workload.output_tokens, args.max_output)
        prompts_all = np.minimum(workload.prompt_tokens, args.max_prompt)
        # t_l so that the load term is 3 c at mean occupancy (the paper's DeepSeek-V3 model is about 4 c)
        mean_load = slots * (prompts_all.mean() + outputs_all.mean() / 2)
        token_s = float(3 * args.step_base_s / mean_load)
        with hosted_emulator(loop, ranks, slots, args.step_base_s, token_s) as engine:
            sample = rng.choice(len(workload), size=2 * ranks * slots)
            with hosted_proxy(loop, engine.found, slots, "round-robin") as server:
                capacity_rps = asyncio.run(calibrate(server.found, prompts_all[sample], outputs_all[sample],
                                                     ranks * slots, args.max_output))
            rate = args.overload * capacity_rps
            n = int(rate * args.seconds)
            # The requests and their arrival gaps come from a generator of their own, as prefixes: two
            # runs whose calibrated rates differ replay the same requests in the same order, one
            # scaled in time (the calibration is timed, so on a loaded machine the rate moves).
            requests_rng = np.random.default_rng([args.seed, ranks])
            order = requests_rng.permutation(len(workload))
            pick = order[np.arange(n) % len(workload)]
            arrivals = np.cumsum(requests_rng.exponential(1.0, size=n)) / rate
            arrivals -= arrivals[0]
            prompts, outputs = prompts_all[pick], outputs_all[pick]
            print(f"{name}, {ranks} ranks x {slots} slots: {n} requests at {rate:.0f}/s ({args.overload:g}x "
                  f"the {capacity_rps:.1f}/s measured when saturated), step {args.step_base_s * 1e3:.0f} ms + "
                  f"{token_s * 1e6:.2f} us/token", flush=True)
            runs = [(policy, args.bfio if policy == "bfio" else spec, args.serve_options)
                    for policy, spec in POLICIES if policy in args.policies]
            runs += [(f"bfio[{label}]", args.bfio, {**args.serve_options, **options})
                     for label, options in args.variants]
            for run in range(args.repeat):
                for policy, spec, options in runs:
                    row = run_policy(name, prompts, outputs, arrivals, ranks=ranks, slots=slots,
                                     base_s=args.step_base_s, token_s=token_s, max_tokens=args.max_output,
                                     policy=policy, spec=spec, emulator_process=engine, loop=loop,
                                     proxy_options=options)
                    row.update(rate_rps=rate, capacity_rps=capacity_rps, run=run)
                    rows.append(row)
                    print(f"  {policy:11s} idle {row['idle_fraction']:6.2%}  TPOT p99 "
                          f"{row['tpot_p99_s'] * 1e3:6.1f} ms  TTFT p99 {row['ttft_p99_s']:6.2f} s  completed "
                          f"{row['completed']}/{row['submitted']}" + (f"  (run {run + 1})" if args.repeat > 1 else ""),
                          flush=True)
    return rows


def spread(rows: list[dict]) -> list[str]:
    """Per workload and rank count, bfio's idle over each other policy's in every run (the same
    requests each run): what varies from run to run is this machine's timing."""
    lines = []
    for key in sorted({(r["workload"], r["ranks"]) for r in rows}):
        group = [r for r in rows if (r["workload"], r["ranks"]) == key]
        runs = sorted({r.get("run", 0) for r in group})
        for other in [p for p in dict.fromkeys(r["policy"] for r in group) if p != "bfio"]:
            ratios = []
            for run in runs:
                by = {r["policy"]: r for r in group if r.get("run", 0) == run}
                if "bfio" in by and other in by and by[other]["idle_fraction"]:
                    ratios.append(by["bfio"]["idle_fraction"] / by[other]["idle_fraction"])
            if ratios:
                lines.append(f"{key[0]}, {key[1]} ranks: bfio idle / {other} idle over {len(ratios)} run(s): "
                             + ", ".join(f"{v:.2f}" for v in ratios)
                             + (f" (min {min(ratios):.2f}, median {np.median(ratios):.2f}, max {max(ratios):.2f})"
                                if len(ratios) > 1 else ""))
    return lines


# ------------------------------------------------------------------ overhead
async def _timed_requests(urls: list[str], rate: float, seconds: float, seed: int):
    """Open-loop short requests at ``rate``; per request the wire time, per chunk the chunk's delay."""
    import aiohttp

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    wire, chunk, failures = [], [], 0

    async def one(i, session, start):
        nonlocal failures
        await asyncio.sleep(max(0.0, start + arrivals[i] - time.monotonic()))
        stream = i % 4 == 0
        body = {"prompt": "short request " * 4, "max_tokens": 4, "stream": stream}
        url = urls[i % len(urls)] + "/v1/completions"
        sent = time.monotonic()
        async with session.post(url, json=body, headers={"X-Emulator-Stamp": "1"}) as response:
            if not stream:
                await response.read()
                back = time.monotonic()
                if response.status != 200:
                    failures += 1
                    return
                received = float(response.headers["X-Emulator-Received"])
                left = float(response.headers["X-Emulator-Sent"])
                wire.append((received - sent) + (back - left))
                return
            buffer = b""
            async for data in response.content.iter_any():
                now = time.monotonic()
                buffer += data
                for stamp in re.findall(rb": sent=([0-9.]+)\n", buffer):
                    chunk.append(now - float(stamp))
                buffer = buffer[buffer.rfind(b"\n") + 1:]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.monotonic() + 0.05
        await asyncio.gather(*(one(i, session, start) for i in range(n)))
    return np.array(wire), np.array(chunk), failures, n


def part2(args) -> dict:
    """The proxy's cost with its default options, and with prompts estimated instead of tokenized."""
    record = _overhead(args, ())
    if not args.quick or args.overhead_estimate:
        estimate = _overhead(args, ("--prompt-tokens", "estimate"), sweep=False)
        for key in ("overhead_p50_ms", "overhead_p99_ms", "chunk_overhead_p50_ms", "chunk_overhead_p99_ms",
                    "cpu_ms_per_request"):
            for prefix in ("", "baseline_", "bare_"):
                if prefix + key in estimate:
                    record[f"estimate_{prefix}{key}"] = estimate[prefix + key]
    return record


def _overhead(args, extra, *, sweep=True) -> dict:
    # Slots far above what 200 requests/s of 4-token requests occupy: a request never waits for
    # a slot, so what the proxy path adds is the proxy's own work, not queueing.
    ranks, slots = 8, 256
    loop = ("--event-loop", args.event_loop)
    baseline = args.baseline_src
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(emulator(ranks, slots, 0.001, 0.0, *loop))
        server = stack.enter_context(proxy(engine.found, slots, args.overhead_policy, *extra, *loop))
        servers = {"proxy": server}
        if baseline:
            servers["baseline"] = stack.enter_context(proxy(engine.found, slots, args.baseline_policy, *extra, *loop,
                                                            src=baseline))
        if args.bare and sweep:                  # once: they do not depend on the proxy's options
            servers["bare"] = stack.enter_context(bare_forwarder(engine.found, *loop))
            servers["bare_upstream"] = stack.enter_context(bare_forwarder(engine.found, *loop, client="upstream"))
            servers["bare_protocol"] = stack.enter_context(bare_forwarder(engine.found, *loop, client="protocol"))
        direct_urls = engine.found.split(",")
        for warm in servers.values():
            asyncio.run(_timed_requests([warm.found], 100, 1.0, 99))           # warm up: kernels, connections

        def measure(rate, blocks, block_s):
            paths = ("direct", *servers)
            wire = {path: [] for path in paths}
            chunks = {path: [] for path in paths}
            cpu = dict.fromkeys(servers, 0.0)
            requests = dict.fromkeys(servers, 0)
            for block in range(blocks):
                for path in paths:
                    through = servers.get(path)
                    cpu_before = through.cpu_s() if through else 0.0
                    w, c, failures, n = asyncio.run(_timed_requests(direct_urls if through is None else [through.found],
                                                                    rate, block_s, 1000 * block + int(rate)))
                    if failures:
                        raise RuntimeError(f"{failures} of {n} requests failed on the {path} path")
                    wire[path].append(w)
                    chunks[path].append(c)
                    if through:
                        cpu[path] += through.cpu_s() - cpu_before
                        requests[path] += n
            w = {k: np.concatenate(v) * 1e3 for k, v in wire.items()}
            c = {k: np.concatenate(v) * 1e3 for k, v in chunks.items()}
            out = {"rate_rps": rate}
            for path in servers:
                prefix = "" if path == "proxy" else f"{path}_"
                added = {q: float(np.percentile(w[path], q) - np.percentile(w["direct"], q)) for q in (50, 99)}
                added_chunk = {q: float(np.percentile(c[path], q) - np.percentile(c["direct"], q)) for q in (50, 99)}
                out.update({f"{prefix}overhead_p50_ms": added[50], f"{prefix}overhead_p99_ms": added[99],
                            f"{prefix}chunk_overhead_p50_ms": added_chunk[50],
                            f"{prefix}chunk_overhead_p99_ms": added_chunk[99],
                            f"{prefix}proxy_wire_p50_ms": float(np.percentile(w[path], 50)),
                            f"{prefix}cpu_ms_per_request": 1e3 * cpu[path] / requests[path]})
            out.update(direct_wire_p50_ms=float(np.percentile(w["direct"], 50)), requests=requests["proxy"])
            return out

        main = measure(args.overhead_rate, args.overhead_blocks, args.overhead_block_s)
        points = [main]
        for rate in (args.sweep if sweep else ()):
            point = measure(rate, 1, args.overhead_block_s)
            points.append(point)
            if point["overhead_p99_ms"] > 5.0:
                break
        passing = [p["rate_rps"] for p in points if p["overhead_p99_ms"] <= 5.0]
        status = asyncio.run(_status(server.found))
        loop_used = re.search(r"(\w+) loop\)", server.output()).group(1)
    return {"policy": "proxy", "policy_spec": args.overhead_policy, "engine": "emulator", "ranks": ranks,
            "slots": slots, "baseline_policy_spec": args.baseline_policy if baseline else None,
            "workload": "4-token requests, 1 in 4 streamed", **main, "baseline_src": baseline,
            "max_rate_rps": (max(passing) if passing else None) if sweep else None,
            "sweep": [{k: p[k] for k in ("rate_rps", "overhead_p50_ms", "overhead_p99_ms", "cpu_ms_per_request")}
                      for p in points],
            "decision_ms_p50": status["decision_ms_p50"],
            "prompt_tokens": "estimate" if "estimate" in extra else "tokenize",
            "event_loop": loop_used}


async def _status(url):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await _get_json(session, url + "/barrierlb/status")


def _serve_options(items) -> dict:
    """``FIELD=VALUE`` strings as ServeConfig keywords (values read as Python literals, else strings)."""
    options = {}
    for item in items:
        field, _, value = item.partition("=")
        try:
            options[field.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[field.strip()] = value.strip()
    return options


def main(argv=None) -> int:
    from barrierlb.serving.config import ServeConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 ranks on BurstGPT and the proxy's cost only")
    parser.add_argument("--seconds", type=float, default=None, help="arrivals last this long (default 20, quick 6)")
    parser.add_argument("--slots", type=int, default=4, help="slots per rank (default 4)")
    parser.add_argument("--step-base-s", type=float, default=0.01, help="emulator step cost c (default 0.01)")
    parser.add_argument("--overload", type=float, default=2.0,
                        help="arrival rate over the capacity measured when saturated (default 2)")
    parser.add_argument("--max-output", type=int, default=None, help="outputs capped at this (default 256, quick 128)")
    parser.add_argument("--max-prompt", type=int, default=4096, help="prompts capped at this (default 4096)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-replay", action="store_true", help="only the proxy's cost")
    parser.add_argument("--skip-overhead", action="store_true", help="only the trace replay")
    parser.add_argument("--overhead-estimate", action="store_true",
                        help="with --quick, also measure the proxy with --prompt-tokens estimate")
    parser.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="the proxy's and the emulator's loop in the cost part (default auto: uvloop if installed)")
    parser.add_argument("--bfio", default=ServeConfig.policy,
                        help=f"the bfio row's --policy (default serve's, {ServeConfig.policy})")
    parser.add_argument("--serve-option", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ServeConfig field for the replay's proxies, e.g. settle_passes=0 (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                        help="also replay bfio with these ServeConfig fields, its runs in turn with the others' "
                             "(row 'bfio[FIELD=VALUE]'; repeatable)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="replay each policy this many times, in turn (the same requests each time); the "
                             "spread of bfio's idle ratios is printed (default 1)")
    parser.add_argument("--policies", default=",".join(p for p, _ in POLICIES),
                        help=f"comma-separated subset of {', '.join(p for p, _ in POLICIES)}")
    parser.add_argument("--overhead-blocks", type=int, default=None,
                        help="alternating blocks per path in the cost part (default 4, quick 2)")
    parser.add_argument("--sweep", default=None, metavar="RATE,RATE,...",
                        help="rates swept after 200/s in the cost part ('' for none; default 400..1600, quick 400,800)")
    parser.add_argument("--overhead-rate", type=float, default=200.0,
                        help="requests/s of the cost part's main record (default 200, the issue's rate; a lower "
                             "one compares CPU per request on a machine too busy to serve 200/s)")
    parser.add_argument("--baseline-src", metavar="DIR",
                        help="the cost part also runs a proxy importing barrierlb from DIR (e.g. a checkout of main), "
                             "its blocks alternating with the others' (keys baseline_*)")
    parser.add_argument("--overhead-policy", default=None,
                        help=f"the cost part's --policy (default serve's, {ServeConfig.policy})")
    parser.add_argument("--baseline-policy", default=None,
                        help="the baseline proxy's --policy (default: --overhead-policy's)")
    parser.add_argument("--bare", action="store_true",
                        help="the cost part also runs three bare forwarders (no pool, no decision, no counting), "
                             "their blocks alternating with the others': on an aiohttp server with aiohttp's client "
                             "(keys bare_*) and with the proxy's own upstream client (keys bare_upstream_*), and that "
                             "client behind an asyncio.Protocol over httptools, no framework (keys bare_protocol_*)")
    parser.add_argument("--bare-forwarder", metavar="URLS", help=argparse.SUPPRESS)
    parser.add_argument("--bare-client", choices=("aiohttp", "upstream", "protocol"), default="aiohttp",
                        help=argparse.SUPPRESS)
    add_json_argument(parser, "write the records as a JSON list")
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    args.overhead_policy = args.overhead_policy or ServeConfig.policy
    args.baseline_policy = args.baseline_policy or args.overhead_policy
    args.serve_options = _serve_options(args.serve_option)
    args.variants = [(variant, _serve_options(variant.split(","))) for variant in args.variant]
    if args.bare_forwarder:
        return run_bare_forwarder(args.bare_forwarder, args.event_loop, args.bare_client)
    args.seconds = args.seconds or (6.0 if args.quick else 20.0)
    args.max_output = args.max_output or (128 if args.quick else 256)
    args.overhead_blocks = args.overhead_blocks or (2 if args.quick else 4)
    args.overhead_block_s = 2.0 if args.quick else 3.0
    if args.sweep is None:
        args.sweep = (400.0, 800.0) if args.quick else (400.0, 600.0, 800.0, 1200.0, 1600.0)
    else:
        try:
            args.sweep = tuple(float(rate) for rate in args.sweep.split(",") if rate.strip())
        except ValueError:
            parser.error(f"--sweep must list rates separated by commas, got {args.sweep!r}")
    started = time.monotonic()
    rows = [] if args.skip_replay else part1(args)
    columns = [("workload", "workload", "{}"), ("ranks", "G", "{}"), ("run", "run", "{}"), ("policy", "policy", "{}"),
               ("idle_fraction", "idle", "{:.2%}"), ("idle_ratio", "idle / bfio", "{:.2f}x"),
               ("tpot_p50_s", "TPOT p50 ms", lambda v: f"{v * 1e3:.1f}"),
               ("tpot_p99_s", "TPOT p99 ms", lambda v: f"{v * 1e3:.1f}"), ("tpot_ratio", "p99 / bfio", "{:.2f}x"),
               ("ttft_p50_s", "TTFT p50 s", "{:.2f}"), ("ttft_p99_s", "TTFT p99 s", "{:.2f}"),
               ("throughput_tok_s", "tok/s", "{:.0f}"), ("completed", "done", "{}"), ("submitted", "sent", "{}"),
               ("decision_ms_p50", "decide ms", "{:.2f}")]
    for key in {(r["workload"], r["ranks"], r.get("run", 0)) for r in rows}:
        group = [r for r in rows if (r["workload"], r["ranks"], r.get("run", 0)) == key]
        ref = next((r for r in group if r["policy"] == "bfio"), group[0])
        for r in group:
            r["idle_ratio"] = r["idle_fraction"] / ref["idle_fraction"] if ref["idle_fraction"] else float("nan")
            r["tpot_ratio"] = r["tpot_p99_s"] / ref["tpot_p99_s"]
    if rows:
        print_table(sorted(rows, key=lambda r: (r["workload"], r["ranks"], r.get("run", 0))), columns,
                    "Trace replay through barrierlb serve to the lockstep emulator (ratios against bfio)")
        for line in spread(rows):
            print(line)
    if args.skip_overhead:
        write_json(args.json, rows, force=args.force)
        return 0
    proxy_record = part2(args)
    print_table([proxy_record], [("rate_rps", "rate/s", "{:.0f}"), ("overhead_p50_ms", "added p50 ms", "{:.3f}"),
                                 ("overhead_p99_ms", "added p99 ms", "{:.3f}"),
                                 ("chunk_overhead_p50_ms", "chunk p50 ms", "{:.3f}"),
                                 ("chunk_overhead_p99_ms", "chunk p99 ms", "{:.3f}"),
                                 ("cpu_ms_per_request", "CPU ms/req", "{:.2f}"),
                                 ("baseline_overhead_p50_ms", "baseline p50 ms", "{:.3f}"),
                                 ("baseline_overhead_p99_ms", "baseline p99 ms", "{:.3f}"),
                                 ("baseline_cpu_ms_per_request", "baseline CPU ms/req", "{:.2f}"),
                                 ("bare_overhead_p50_ms", "bare aiohttp p50 ms", "{:.3f}"),
                                 ("bare_overhead_p99_ms", "bare aiohttp p99 ms", "{:.3f}"),
                                 ("bare_cpu_ms_per_request", "bare CPU ms/req", "{:.2f}"),
                                 ("bare_upstream_overhead_p50_ms", "bare upstream p50 ms", "{:.3f}"),
                                 ("bare_upstream_overhead_p99_ms", "bare upstream p99 ms", "{:.3f}"),
                                 ("bare_upstream_cpu_ms_per_request", "bare upstream CPU ms/req", "{:.2f}"),
                                 ("bare_protocol_overhead_p50_ms", "bare protocol p50 ms", "{:.3f}"),
                                 ("bare_protocol_overhead_p99_ms", "bare protocol p99 ms", "{:.3f}"),
                                 ("bare_protocol_cpu_ms_per_request", "bare protocol CPU ms/req", "{:.2f}"),
                                 ("estimate_overhead_p50_ms", "p50, estimated prompts", "{:.3f}"),
                                 ("estimate_overhead_p99_ms", "p99, estimated prompts", "{:.3f}"),
                                 ("estimate_cpu_ms_per_request", "CPU ms/req, estimated", "{:.2f}"),
                                 ("estimate_baseline_overhead_p50_ms", "baseline p50, estimated", "{:.3f}"),
                                 ("estimate_baseline_overhead_p99_ms", "baseline p99, estimated", "{:.3f}"),
                                 ("estimate_baseline_cpu_ms_per_request", "baseline CPU, estimated", "{:.2f}"),
                                 ("max_rate_rps", "max rate/s (p99 <= 5 ms)", "{:.0f}"),
                                 ("decision_ms_p50", "decide ms", "{:.2f}"), ("event_loop", "loop", "{}")],
                "The proxy's own cost (through the proxy minus directly, same emulator, alternating blocks)")
    sweep = (f"{p['rate_rps']:.0f}/s -> p99 +{p['overhead_p99_ms']:.2f} ms" for p in proxy_record["sweep"])
    print("sweep: " + ", ".join(sweep))
    print(f"total {time.monotonic() - started:.0f} s")
    write_json(args.json, rows + [proxy_record], force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
