"""One request's router calls as ``barrierlb serve`` makes them, in a loop: add, route, progress, finish.

8 ranks x 256 slots, a policy (``--policy``; default the short-output preset
``decode_preset(0)``, serve's default before 3 December, so that older trees run the same
loop), a survival predictor with 500 lengths learned, ``--running`` requests running,
each new request with a ``max_tokens``; prints the best of five blocks in microseconds
a request. Compare two trees by running it with each on ``PYTHONPATH``:

    PYTHONPATH=. python benchmarks/router_loop.py
    PYTHONPATH=/path/to/other/tree python benchmarks/router_loop.py
    PYTHONPATH=. python benchmarks/router_loop.py --policy bfio:hold=0.05 --strata 16   # serve's default now
    PYTHONPATH=. python benchmarks/router_loop.py --policy bfio:hold=0.05 --strata 16 --admit   # as serve calls it

``--admit`` adds each request with ``DecodeRouter.admit`` (trees from 3 December, 15:00 UTC
on), as the proxy does since, in place of ``add_request`` and ``route``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from barrierlb.policies.bfio import decode_preset
from barrierlb.predictors import SurvivalPredictor
from barrierlb.router import DecodeRouter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=3, help="requests running throughout (default 3)")
    parser.add_argument("--requests", type=int, default=1000, help="requests a block (default 1000)")
    parser.add_argument("--strata", type=int, default=1,
                        help="prompt-length groups of the survival predictor (default 1; serve's default 16)")
    parser.add_argument("--policy", default=None, help="policy spec (default decode_preset(0))")
    parser.add_argument("--admit", action="store_true", help="add and decide with admit(), as serve does now")
    args = parser.parse_args()
    grouped = {"strata": args.strata} if args.strata > 1 else {}     # the default runs on trees before --strata
    policy = args.policy or decode_preset(0.0)
    router = DecodeRouter(8, 256, policy=policy, predictor=SurvivalPredictor(draws=0, **grouped))
    rng = np.random.default_rng(0)
    running: list[int] = []
    next_id = 0
    for _ in range(args.running + 1):
        router.add_request(next_id, float(rng.integers(50, 800)), max_output_tokens=float(rng.integers(10, 300)))
        running += list(router.route())
        next_id += 1
    if grouped:                    # with prompts only then, so that the default run is the one before --strata
        router.observe_output(rng.integers(10, 300, 500).tolist(), prompt_tokens=rng.integers(50, 800, 500).tolist())
    else:
        router.observe_output(rng.integers(10, 300, 500).tolist())

    def block(n: int) -> float:
        nonlocal next_id
        started = time.perf_counter()
        for _ in range(n):
            if args.admit:
                if router.admit(next_id, float(rng.integers(50, 800)), max_output_tokens=200.0) >= 0:
                    running.append(next_id)
            else:
                router.add_request(next_id, float(rng.integers(50, 800)), max_output_tokens=200.0)
                running.extend(router.route())
            next_id += 1
            router.progress_many(running[-3:], [5] * len(running[-3:]))
            router.finish(running.pop(0), 30)
        return (time.perf_counter() - started) / n

    block(200)                                       # warm up: numba loads the kernels
    best = min(block(args.requests) for _ in range(5))
    calls = "admit" if args.admit else "add, route"
    print(f"{best * 1e6:.1f} us a request ({calls}, progress, finish; {args.running} running, "
          f"8 ranks x 256 slots, {args.strata} prompt strata, policy {policy})")


if __name__ == "__main__":
    main()
