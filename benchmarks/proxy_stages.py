"""Where one request's time goes inside ``barrierlb serve``: its stages timed in the proxy itself.

The proxy runs in this process in front of the lockstep emulator (8 ranks x ``--slots``, a
child process); requests go one at a time (4-token prompts, not streamed), so nothing
queues, and each stage is timed by wrapping the proxy's own functions:

- ``parse``: the request's JSON checked (:func:`barrierlb.serving.tokens.parse_request`);
- ``decide``: the router's one-request decision (``Proxy._enqueue``: the router's ``admit``, its counters);
- ``request_to``: the headers and body for the rank;
- ``answer_end``: the answer's end sent to the client (aiohttp's ``prepare`` and ``write_eof``);
- ``usage``: the answer's ``usage.completion_tokens`` read, after the answer;
- ``release``: the router's ``finish`` and the learning, after the answer.

The router's figures here include what its code and data cost when the event loop's work
between two requests has pushed them out of the caches, unlike ``benchmarks/router_loop.py``'s
tight loop. Prints microseconds a request per stage; ``--json PATH`` writes one record.

    python benchmarks/proxy_stages.py
"""

from __future__ import annotations

import argparse
import collections
import time

from _common import add_json_argument, check_json_argument, environment, write_json
from serve import emulator

STAGES = (("parse", "parse_request", False), ("decide", "Proxy._enqueue", False),
          ("request_to", "Proxy._request_to", False), ("answer_end", "_answered", True),
          ("usage", "completion_tokens", False), ("release", "Proxy._release", False))


def _timed(totals, name, function, is_async):
    if is_async:
        async def timed_async(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - started
        return timed_async

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - started
    return timed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests timed (default 1000, after 200 unseen)")
    parser.add_argument("--slots", type=int, default=256, help="slots per rank (default 256, as serve.py's cost part)")
    parser.add_argument("--policy", default=None, help="the proxy's --policy (default serve's)")
    parser.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="this process's loop (default auto: uvloop if installed, as barrierlb serve)")
    add_json_argument(parser, "write the record as JSON")
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    if args.requests < 1:
        parser.error(f"--requests must be at least 1, got {args.requests}")

    import aiohttp

    from barrierlb.serving import _loop
    from barrierlb.serving import proxy as proxy_module
    from barrierlb.serving.config import ServeConfig

    totals: dict[str, float] = collections.defaultdict(float)
    originals = []
    for name, where, is_async in STAGES:
        owner, _, attribute = where.rpartition(".")
        target = getattr(proxy_module, owner) if owner else proxy_module
        originals.append((target, attribute, getattr(target, attribute)))
        setattr(target, attribute, _timed(totals, name, getattr(target, attribute), is_async))

    async def run(urls: str) -> float:
        config = ServeConfig(ranks=tuple(urls.split(",")), slots=args.slots, port=0,
                             **({"policy": args.policy} if args.policy else {}))
        proxy = proxy_module.Proxy(config)
        url = await proxy.start()
        body = {"prompt": "short request " * 4, "max_tokens": 4, "stream": False}
        try:
            async with aiohttp.ClientSession() as session:
                for i in range(200 + args.requests):
                    if i == 200:
                        totals.clear()
                        started = time.perf_counter()
                    async with session.post(url + "/v1/completions", json=body) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"request {i} answered {response.status}")
            return time.perf_counter() - started
        finally:
            await proxy.stop()

    try:
        with emulator(8, args.slots, 0.001, 0.0) as engine:
            wall = _loop.run(run(engine.found), args.event_loop)
    finally:
        for target, attribute, original in originals:
            setattr(target, attribute, original)
    record = {"benchmark": "proxy_stages", "requests": args.requests, "slots": args.slots,
              "policy": args.policy or ServeConfig.policy, "event_loop": args.event_loop, "environment": environment(),
              "round_trip_us": wall / args.requests * 1e6,
              **{f"{name}_us": totals[name] / args.requests * 1e6 for name, _, _ in STAGES}}
    print(f"barrierlb serve, one request at a time ({args.requests}), 8 ranks x {args.slots} slots, "
          f"policy {record['policy']}: microseconds a request")
    for name, _, _ in STAGES:
        print(f"  {name:11s} {record[name + '_us']:8.1f}")
    print(f"  (round trip through the proxy and the emulator: {record['round_trip_us']:.0f})")
    write_json(args.json, [record], force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
