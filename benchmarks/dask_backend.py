"""Dask backend: per-superstep overhead, and BF-IO against Dask's own placement.

Runs the example workload of ``examples/dask_pipeline`` (decode-like requests,
numpy work proportional to each request's load) on a LocalCluster of worker
processes, side by side in one run:

- ``dask``: plain futures placed by Dask's scheduler (work stealing on);
- barrierlb policies on the actor backend: ``bfio``, ``greedy``, ``round-robin``.

Every mode processes the same requests to completion. Barrier wait is summed
over supersteps and workers as (slowest worker's busy time - own busy time),
from times measured inside the tasks, so it isolates placement quality from
scheduling overhead; the overhead is reported separately per superstep.

    python benchmarks/dask_backend.py --json dask_backend.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "dask_pipeline"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run as pipeline  # noqa: E402
from _common import add_json_argument, check_json_argument, write_json  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (the table shows the mean)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    from distributed import Client, LocalCluster

    specs = pipeline.requests(args.requests, 0)
    modes = ["dask", "bfio", "greedy", "round-robin"]
    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") \
            as cluster, Client(cluster) as client:
        for repeat in range(args.repeats):
            for mode in modes:
                run_args = argparse.Namespace(workers=args.workers, policy=mode, steps=10**9, slots=12, pool=32,
                                              horizon=8, requests=args.requests, kill_worker_at=None, cost="model")
                runner = pipeline.run_dask_native if mode == "dask" else pipeline.run_balanced
                out = runner(client, run_args, specs)
                reports = out["reports"]
                wait = sum(r["barrier_wait_s"] if isinstance(r, dict) else r.barrier_wait_s for r in reports)
                if mode == "dask":
                    overhead = None
                else:
                    overhead = float(np.median([r.wall_s - max(r.busy_s.values(), default=0.0) for r in reports]))
                rows.append({"mode": mode, "repeat": repeat, "barrier_wait_s": wait, "wall_s": out["wall_s"],
                             "steps": out["steps_run"], "completed": len(out["results"]),
                             "overhead_ms_per_step": None if overhead is None else overhead * 1e3})
    print(f"{'mode':>12} {'barrier wait s':>15} {'vs dask':>8} {'wall s':>8} {'steps':>6} {'overhead ms/step':>17}")
    base = np.mean([r["barrier_wait_s"] for r in rows if r["mode"] == "dask"])
    summary = []
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        wait = float(np.mean([r["barrier_wait_s"] for r in mine]))
        over = [r["overhead_ms_per_step"] for r in mine if r["overhead_ms_per_step"] is not None]
        entry = {"mode": mode, "barrier_wait_s": wait, "vs_dask": wait / base,
                 "wall_s": float(np.mean([r["wall_s"] for r in mine])), "steps": mine[0]["steps"],
                 "overhead_ms_per_step": float(np.mean(over)) if over else None}
        summary.append(entry)
        print(f"{mode:>12} {wait:>15.3f} {wait / base:>8.2f} {entry['wall_s']:>8.1f} {entry['steps']:>6} "
              f"{'-' if not over else format(entry['overhead_ms_per_step'], '.1f'):>17}")
    write_json(args.json, {"runs": rows, "summary": summary}, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
