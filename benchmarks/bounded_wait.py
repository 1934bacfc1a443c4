"""The bounded-waiting trade-off: imbalance against how long a request may be passed over.

BF-IO picks the requests that fit the holes; without a bound, requests that fit
nowhere wait indefinitely. ``max_wait`` forces a request placed after it has
been passed over that many decisions. Synthetic workload, G=32, B=72, R=128.

    python benchmarks/bounded_wait.py --json bounded_wait.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.policies.bfio import LLM_DECODE  # noqa: E402
from barrierlb.simulator import SimulationConfig, Simulator  # noqa: E402
from barrierlb.workloads import synthetic  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    workload = synthetic(args.requests, seed=0)
    rows = []
    for base in ("bfio:horizon=0", LLM_DECODE.replace(",max_wait=1024", "")):
        for bound in ("64", "256", "1024", "none"):
            spec = f"{base},max_wait={bound}"
            sim = Simulator(workload, make_policy(spec), config=SimulationConfig(), policy_name=spec)
            result = sim.run()
            m = result.metrics
            finished = ~np.isnan(sim._finish_s)
            queue = sim._first_token_s[finished] - sim._enqueued_s[finished]
            rows.append({"policy": base, "max_wait": bound, "avg_imbalance": m.avg_imbalance,
                         "idle_fraction": m.idle_fraction, "ttft_p99_s": m.ttft_p99_s,
                         "ttft_max_s": float(queue.max())})
    print_table(rows, [("policy", "policy", "{}"), ("max_wait", "max_wait", "{}"),
                       ("avg_imbalance", "avg imbalance", "{:,.0f}"), ("idle_fraction", "idle", "{:.2%}"),
                       ("ttft_p99_s", "TTFT p99 s", "{:.1f}"), ("ttft_max_s", "TTFT max s", "{:.1f}")],
                f"bounded waiting, synthetic, {args.requests:,} requests")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
