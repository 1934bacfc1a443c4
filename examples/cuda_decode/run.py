"""CUDA decode example: decode-like requests on CUDA streams (or devices), placed by each policy.

    python examples/cuda_decode/run.py --device cuda --workers 4 --json cuda_decode.json
    python examples/cuda_decode/run.py --device cpu             # the host executor, no GPU needed

Each request holds a key matrix on its worker that grows one row per step and
multiplies it by its query every step (:mod:`decode_tasks`). The same requests (the
paper's synthetic length shape, scaled down) run once per policy; every
superstep the balancer places waiting requests in free slots, launches each
worker's steps, and the barrier waits for all workers' CUDA events. The pool of
waiting requests is kept topped up to ``--pool`` until all are submitted.
Reported per policy, over the supersteps that began with requests waiting (the
overloaded regime; the drain at the end is left out): the mean barrier wait per
superstep (sum over workers of the slowest worker's time less their own), the
idle fraction, and the wait relative to round-robin's. ``--workers N`` makes N non-blocking streams on the current
device (workers share its SMs, so a stream's time includes contention);
``--per-device`` makes one worker per visible GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decode_tasks as decode  # noqa: E402


def requests(n: int, *, seed: int, dim: int, prompt_mean: float, output_mean: float) -> list[dict]:
    from barrierlb.workloads import synthetic

    # The reference workload's shape (prompt ~ N(3200, 2600), output ~ N(1200, 700)), scaled.
    work = synthetic(n, seed=seed, prompt_mean=prompt_mean, prompt_std=prompt_mean * 2600 / 3200,
                     output_mean=output_mean, output_std=output_mean * 700 / 1200)
    block_rows = int(work.prompt_tokens.max())
    return [{"id": i, "prompt": int(work.prompt_tokens[i]), "output": int(work.output_tokens[i]), "dim": dim,
             "block_rows": block_rows} for i in range(n)]


def make_workers(args):
    if args.device == "cpu":
        return args.workers
    from barrierlb.backends.cuda import devices, streams

    return devices() if args.per_device else streams(args.workers)


def run_policy(name: str, specs: list[dict], args) -> dict:
    from barrierlb import make_policy
    from barrierlb.backends.cuda import CudaBalancer

    balancer = CudaBalancer(make_workers(args), create=decode.create, step=decode.step, cost=decode.cost,
                            policy=make_policy(name, defaults={"horizon": args.horizon}), capacity=args.slots,
                            device=args.device, host_clock=args.host_clock)
    queue = list(specs)
    loaded = []                   # whether requests were waiting when the superstep began
    started = time.perf_counter()
    for _ in range(100_000):
        while queue and balancer.waiting < args.pool:
            spec = queue.pop(0)
            balancer.submit(spec["id"], spec)
        if not balancer.waiting and not balancer.active:
            break
        loaded.append(balancer.waiting > 0)
        balancer.step()
    wall_s = time.perf_counter() - started
    reports = balancer.reports
    # The means are over the loaded supersteps (requests waiting: the overloaded regime the
    # policies place in), after the warm-up ones; the drain at the end is left out.
    kept = [r for r, busy in zip(reports, loaded) if busy][args.warmup_steps:] or reports
    waits = np.array([r.barrier_wait_s for r in kept])
    busy = np.array([r.worker_s.sum() for r in kept])
    slowest = np.array([r.worker_s.max() for r in kept])
    return {"policy": name, "device": args.device, "workers": balancer.n_workers, "slots": args.slots,
            "requests": len(specs), "supersteps": len(reports), "loaded_supersteps": len(kept), "wall_s": wall_s,
            "barrier_wait_ms_mean": float(waits.mean() * 1e3), "barrier_wait_ms_p50": float(np.median(waits) * 1e3),
            "step_ms_mean": float(slowest.mean() * 1e3),
            "idle_fraction": float(waits.sum() / (balancer.n_workers * slowest.sum())) if slowest.sum() else 0.0,
            "busy_ms_mean": float(busy.mean() * 1e3 / balancer.n_workers),
            "balance_ms_p50": float(np.median([r.balance_s for r in reports]) * 1e3),
            "overhead_us_per_task": balancer.time_model.overhead_s * 1e6,
            "unit_ns_per_row": balancer.time_model.unit_s * 1e9}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--workers", type=int, default=4, help="streams on the current device (or host lanes)")
    parser.add_argument("--host-clock", choices=("wall", "thread"), default="wall",
                        help="with --device cpu: time lanes by wall clock or by the thread's CPU time")
    parser.add_argument("--per-device", action="store_true", help="one worker per visible GPU instead of streams")
    parser.add_argument("--slots", type=int, default=8, help="most requests per worker")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--pool", type=int, default=32, help="waiting requests kept visible to the policy")
    parser.add_argument("--dim", type=int, default=512, help="key width (floats per row)")
    parser.add_argument("--prompt-mean", type=float, default=3200.0, help="mean prompt rows")
    parser.add_argument("--output-mean", type=float, default=120.0, help="mean decode steps")
    parser.add_argument("--horizon", type=int, default=16, help="lookahead of the policies that use one")
    parser.add_argument("--policies", default="round-robin,greedy,bfio")
    parser.add_argument("--warmup-steps", type=int, default=3, help="first supersteps left out of the means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the per-policy records as JSON")
    args = parser.parse_args(argv)
    for name in ("workers", "slots", "requests", "pool", "dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    from barrierlb.outputs import refuse_existing, write_text

    refuse_existing(parser, {"--json": args.json})
    from barrierlb.cli import plain_table

    try:
        from barrierlb import make_policy

        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        for name in policies:
            make_policy(name)
        if args.device == "cuda":
            make_workers(args)
    except (ValueError, ImportError) as error:
        print(f"cuda_decode: {error}", file=sys.stderr)
        return 2
    specs = requests(args.requests, seed=args.seed, dim=args.dim, prompt_mean=args.prompt_mean,
                     output_mean=args.output_mean)
    rows = [run_policy(name, specs, args) for name in policies]
    reference = next((r for r in rows if r["policy"] == "round-robin"), None)
    for row in rows:
        for key, ref in (("wait_vs_round_robin", "barrier_wait_ms_mean"), ("wait_p50_vs_round_robin",
                                                                           "barrier_wait_ms_p50")):
            if reference is not None and reference[ref] > 0:
                row[key] = row[ref] / reference[ref]
    print(plain_table(["policy", "steps", "step ms", "wait ms", "p50 ms", "idle", "wait/rr", "overhead us",
                       "ns/row", "wall s"],
                      [[r["policy"], str(r["supersteps"]), f"{r['step_ms_mean']:.3f}",
                        f"{r['barrier_wait_ms_mean']:.3f}",
                        f"{r['barrier_wait_ms_p50']:.3f}", f"{r['idle_fraction']:.2%}",
                        f"{r['wait_vs_round_robin']:.2f}x" if "wait_vs_round_robin" in r else "-",
                        f"{r['overhead_us_per_task']:.2f}", f"{r['unit_ns_per_row']:.2f}", f"{r['wall_s']:.2f}"]
                       for r in rows]))
    if args.json:
        print(write_text(args.json, json.dumps(rows, indent=2) + "\n").note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
