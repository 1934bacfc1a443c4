"""LLM serving adapter: route requests to data-parallel ranks, then replay a real trace.

    python examples/llm_serving/run.py --workload azure:PATH/azure_llm_2023_code.csv   # replayed 400x faster
    python examples/llm_serving/run.py --requests 4000        # the paper's synthetic workload (default)

``PATH/azure_llm_2023_code.csv`` is the Azure LLM inference trace 2023, code
service (Azure/AzurePublicDataset on GitHub); any ``--workload`` that
:func:`barrierlb.workloads.load_workload` reads works.

Part 1 drives :class:`barrierlb.router.DecodeRouter` the way an engine loop
would: requests arrive, each engine step reports which requests finished, and
the router answers with a ``data_parallel_rank`` for the queued ones (what vLLM
and SGLang accept per request). The router learns output lengths online
(no oracle).

Part 2 replays the same trace through the barrier-step simulator with its real
timestamps, comparing idle time, throughput, latency and energy per policy.
"""

from __future__ import annotations

import argparse
import sys

from barrierlb import make_policy
from barrierlb.cli import print_table
from barrierlb.policies.bfio import LLM_DECODE_NO_ORACLE, decode_preset
from barrierlb.predictors import SurvivalPredictor
from barrierlb.router import DecodeRouter
from barrierlb.simulator import SimulationConfig, simulate
from barrierlb.workloads import load_workload


def route_demo(workload, ranks: int, slots: int, steps: int, policy: str, draws: int) -> None:
    router = DecodeRouter(ranks, slots, policy=policy, predictor=SurvivalPredictor(draws=draws))
    remaining = {}
    next_request = 0
    shown = 0
    for step in range(steps):
        while router.queued < 2 * ranks and next_request < len(workload):     # arrivals
            router.add_request(next_request, int(workload.prompt_tokens[next_request]))
            remaining[next_request] = int(workload.output_tokens[next_request])
            next_request += 1
        for request_id, rank in sorted(router.route().items()):
            if shown < 8:
                print(f"  step {step:3d}: request {request_id:5d} ({int(workload.prompt_tokens[request_id]):5d} "
                      f"prompt tokens) -> data_parallel_rank={rank}")
                shown += 1
        running = [r for r, rank in ((r, _safe_rank(router, r)) for r in remaining) if rank is not None]
        finished = []
        for request_id in running:
            remaining[request_id] -= 1
            if remaining[request_id] == 0:
                finished.append(request_id)
        router.step_report(finished)
        router.observe_output([int(workload.output_tokens[r]) for r in finished])
        for request_id in finished:
            del remaining[request_id]
    load = router.load()
    print(f"  after {steps} steps: resident tokens per rank min {load.min():,.0f} / max {load.max():,.0f}, "
          f"idle share {1 - load.mean() / load.max():.1%}\n")


def _safe_rank(router, request_id):
    try:
        return router.rank_of(request_id)
    except KeyError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="synthetic")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--rate-scale", type=float, default=400.0,
                        help="replay the trace this much faster (default 400: the one-hour code trace "
                             "then keeps 8 x 32 slots busy)")
    args = parser.parse_args(argv)
    workload = load_workload(args.workload, n_requests=args.requests, seed=0)
    # No oracle here: the BF-IO preset for this traffic's output lengths without one
    # (LLM_DECODE_SHORT under 256 tokens, else LLM_DECODE_NO_ORACLE with 16 sampled futures).
    preset = decode_preset(float(workload.output_tokens.mean()), scenarios=True)
    draws = 16 if preset == LLM_DECODE_NO_ORACLE else 0
    print(f"Part 1: routing with DecodeRouter ({args.ranks} ranks x {args.slots} slots, {workload.name}, {preset})")
    route_demo(workload, args.ranks, args.slots, steps=300, policy=preset, draws=draws)
    timed = workload.arrival_s is not None
    config = SimulationConfig(n_workers=args.ranks, slots=args.slots, pool=4 * args.ranks,
                              arrivals="trace" if timed else "pool", rate_scale=args.rate_scale)
    mode = f"trace timestamps, {args.rate_scale:g}x faster" if timed else "overloaded pool"
    print(f"Part 2: replaying {len(workload):,} requests ({mode})")
    results = []
    for spec in ("fcfs", "jsq-tokens", "vllm", "bfio:horizon=0", preset):
        results.append((spec, simulate(workload, make_policy(spec), config=config,
                                       predictor=SurvivalPredictor(draws=draws), policy_name=spec)))
    print_table(results, workload.name)
    ttft = {spec: r.metrics.ttft_p99_s for spec, r in results}
    print("TTFT p99 (s): " + ", ".join(f"{k} {v:.2f}" for k, v in ttft.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
