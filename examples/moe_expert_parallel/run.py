"""MoE expert parallelism: place new expert replicas with BF-IO instead of re-packing every expert.

    python examples/moe_expert_parallel/run.py                       # 8 GPUs, 64 experts, 16 redundant
    python examples/moe_expert_parallel/run.py --gpus 16 --experts 256 --redundant 32 --json moe.json

Each step routes ``--tokens`` token-to-expert assignments over the experts
with a drifting Zipf popularity (``experts.Routing``); a GPU's load is the
tokens its replicas process and the MoE layer waits for the slowest GPU. Every
``--interval`` steps the replica counts follow the last interval's loads
(EPLB's replicate rule), and each policy lays the replicas out:

- ``static``: the initial EPLB layout, never changed (no redundancy updates);
- ``eplb``: DeepSeek EPLB's greedy pack of every replica, from scratch;
- any barrierlb policy (``bfio:horizon=0``, ``greedy``, ``round-robin``,
  ``jsq-tokens``, ...): existing replicas stay (sticky), the policy places the
  new ones on the predicted per-replica loads.

Reported per policy: idle fraction (GPU time spent waiting for the slowest
GPU), mean max/mean load, replicas whose weights had to be copied to a GPU and
the bytes that costs (``--expert-mb`` per copy), and the decision time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experts import Routing, eplb_pack, replica_counts, sticky_update  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.cli import plain_table  # noqa: E402

DEFAULT_POLICIES = "static;eplb;round-robin;jsq-tokens;bfio:horizon=0"


def run_policy(spec: str, args) -> dict:
    """Simulate ``args.steps`` steps under one layout policy; returns its metrics."""
    routing = Routing(args.experts, args.tokens, zipf=args.zipf, drift=args.drift, seed=args.seed)
    total = args.experts + args.redundant
    slots = -(-total // args.gpus) + args.spare
    policy = None if spec in ("static", "eplb") else make_policy(spec)
    warm = np.mean([routing.step() for _ in range(args.interval)], axis=0)       # first interval's loads
    layout = eplb_pack(replica_counts(warm, total), warm, args.gpus, slots)
    idle, ratio, copies, decide_s = [], [], 0, []
    window = []
    for step in range(args.steps):
        tokens = routing.step()
        load = layout.gpu_load(tokens)
        idle.append(1.0 - load.mean() / load.max())
        ratio.append(load.max() / load.mean())
        window.append(tokens)
        if (step + 1) % args.interval or spec == "static":
            continue
        predicted = np.mean(window, axis=0)                                   # persistence: last interval
        window = []
        counts = replica_counts(predicted, total)
        before = layout.homes()
        started = time.perf_counter()
        if spec == "eplb":
            layout = eplb_pack(counts, predicted, args.gpus, slots)
            decide_s.append(time.perf_counter() - started)
        else:
            layout, info = sticky_update(layout, counts, predicted, policy, churn=args.churn)
            if info["placed"]:
                decide_s.append(info["solve_time_s"])
        layout.check(args.experts)
        copies += len(layout.homes() - before)                              # weights shipped to a GPU
    return {"policy": spec, "idle_fraction": float(np.mean(idle)), "max_over_mean": float(np.mean(ratio)),
            "p99_max_over_mean": float(np.percentile(ratio, 99)), "weight_copies": copies,
            "copied_gb": copies * args.expert_mb / 1024,
            "decision_ms_p50": float(np.median(decide_s) * 1e3) if decide_s else 0.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--redundant", type=int, default=16, help="replicas beyond one per expert")
    parser.add_argument("--spare", type=int, default=1, help="slots per GPU beyond an even share")
    parser.add_argument("--tokens", type=int, default=32768, help="token-to-expert assignments per step")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--drift", type=float, default=0.02, help="per-step drift of expert log-odds")
    parser.add_argument("--churn", type=int, default=8,
                        help="sticky policies: heavy replicas on hot GPUs re-created per interval (default 8)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--interval", type=int, default=100, help="steps between rebalancing")
    parser.add_argument("--expert-mb", type=float, default=42.0,
                        help="weights per expert replica (DeepSeek-V3: 3 x 7168 x 2048 FP8 = 42 MiB)")
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    for name in ("gpus", "experts", "tokens", "steps", "interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.redundant < 0 or args.spare < 0 or args.churn < 0:
        parser.error("--redundant, --spare and --churn must be >= 0")
    rows = []
    for spec in [s for s in args.policies.split(";") if s]:
        try:
            rows.append(run_policy(spec, args))
        except (TypeError, ValueError) as error:
            print(f"moe: error: {spec}: {error}", file=sys.stderr)
            return 2
    header = ["policy", "idle", "max/mean", "p99 max/mean", "weight copies", "copied GB", "decide ms p50"]
    table = [[r["policy"], f"{r['idle_fraction']:.2%}", f"{r['max_over_mean']:.3f}", f"{r['p99_max_over_mean']:.3f}",
              str(r["weight_copies"]), f"{r['copied_gb']:.1f}", f"{r['decision_ms_p50']:.3f}"] for r in rows]
    print(f"MoE expert parallelism: {args.gpus} GPUs, {args.experts} experts + {args.redundant} redundant replicas, "
          f"{args.steps} steps, rebalance every {args.interval}")
    print(plain_table(header, table))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
