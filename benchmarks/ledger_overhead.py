"""Bookkeeping cost per superstep: the ledger's calls and the planner, on MPI-exchange-sized batches.

What ``MPIBalancer.exchange`` asks of its ledger each superstep, timed without
communication: every rank ends ``new`` tasks and submits ``new`` others (64
tasks on 2 workers), the planner gets each rank's report and plans
(``planner`` rows, with ``bfio:horizon=8`` and ``round-robin``), and the
ledger's ``complete``, ``submit_arrays`` and ``place`` are timed alone for a
batch of ``new`` tasks (``ledger.*`` rows). Each figure is the median over the
runs of a run's p50. With ``--baseline-src DIR`` (a folder holding another
checkout's ``barrierlb`` package, e.g. ``git archive 9d3cecb barrierlb | tar -x
-C DIR``) the same loop runs against that code too, in fresh processes taken
in turn (this, baseline, this, ...), and the table gives the ratio.

    python benchmarks/ledger_overhead.py --baseline-src /tmp/main-src --json ledger_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

# Runs in the child, which imports barrierlb from the source given: prints {case: p50 microseconds}.
_CHILD = """
import json, sys, time
import numpy as np
import barrierlb
from barrierlb import ClusterState, make_policy
from barrierlb.state import Placement
from barrierlb.superstep import SuperstepPlanner

steps = int(sys.argv[1])
out = {}

def planner_loop(policy, new, workers=2, tasks=32):
    planner = SuperstepPlanner(workers, policy=make_policy(policy))
    rows = planner.horizon + 1
    planner.submit_many(np.arange(workers * tasks))
    planner.plan()
    next_id, times = workers * tasks, []
    rng = np.random.default_rng(0)
    for _ in range(steps):
        held = [sorted(planner.tasks_on(r).tolist()) for r in range(workers)]
        loads = rng.uniform(0, 1, (workers, rows))
        started = time.perf_counter()
        for r in range(workers):
            planner.report(r, finished=held[r][:new], load=loads[r], measured=(1e-3, len(held[r])))
        planner.active_count                     # the exchange's consistency check reads it
        planner.submit_many(np.arange(next_id, next_id + workers * new))
        planner.plan()
        times.append(time.perf_counter() - started)
        next_id += workers * new
    return float(np.median(times) * 1e6)

def ledger_calls(new):
    state = ClusterState(2, 64)
    state.submit_arrays(np.arange(64), 1.0)
    state.place(Placement(np.arange(64), np.arange(64) % 2))
    fifo, next_id = list(range(64)), 64
    times = {"complete": [], "submit_arrays": [], "place": []}
    for _ in range(steps):
        done, fifo = fifo[:new], fifo[new:]
        homes = np.array([state.worker_of(t) for t in done])
        fresh = np.arange(next_id, next_id + new)
        next_id += new
        for name, call in (("complete", lambda: state.complete(done)),
                           ("submit_arrays", lambda: state.submit_arrays(fresh, 0.0)),
                           ("place", lambda: state.place(Placement(fresh, homes, np.arange(new))))):
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
        fifo += fresh.tolist()
    return {name: float(np.median(t) * 1e6) for name, t in times.items()}

for new in (1, 4, 16):
    for policy in ("bfio:horizon=8", "round-robin"):
        out[f"planner {policy}|{new}"] = planner_loop(policy, new)
    for name, value in ledger_calls(new).items():
        out[f"ledger.{name}|{new}"] = value
out["source|0"] = barrierlb.__file__
print(json.dumps(out))
"""


def measure(src: Path, steps: int) -> dict:
    """One run in a fresh process importing barrierlb from ``src`` (``-S``: no editable-install hook;
    run outside any checkout, since ``-c`` puts the working directory first on the path)."""
    path = os.pathsep.join([str(src), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-S", "-c", _CHILD, str(steps)], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=path), cwd=folder, check=False, timeout=600)
    if done.returncode:
        raise SystemExit(f"ledger_overhead: the run against {src} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="supersteps per run (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per source, taken in turn (default 3)")
    parser.add_argument("--baseline-src", type=Path, help="folder with another barrierlb package to compare")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    if args.steps < 1 or args.runs < 1:
        parser.error("--steps and --runs must be >= 1")
    sources = [("this", ROOT)] + ([("baseline", args.baseline_src.resolve())] if args.baseline_src else [])
    runs: dict[str, list[dict]] = {name: [] for name, _ in sources}
    for _ in range(args.runs):
        for name, src in sources:
            runs[name].append(measure(src, args.steps))
    for name, _ in sources:
        print(f"{name}: {runs[name][0].pop('source|0')}")
        for run in runs[name][1:]:
            run.pop("source|0")
    rows = []
    for key in runs["this"][0]:
        case, new = key.split("|")
        row = {"case": case, "new_per_worker": int(new), "steps": args.steps, "runs": args.runs}
        for name, _ in sources:
            row[f"{name}_p50_us"] = float(np.median([run[key] for run in runs[name]]))
        if args.baseline_src:
            row["ratio"] = row["this_p50_us"] / row["baseline_p50_us"]
        rows.append(row)
    columns = [("case", "case", "{}"), ("new_per_worker", "batch", "{}")]
    columns += [(f"{name}_p50_us", f"{name} p50 us", "{:.1f}") for name, _ in sources]
    if args.baseline_src:
        columns.append(("ratio", "this / baseline", "{:.2f}x"))
    print_table(rows, columns, "ledger and planner bookkeeping per superstep (64 tasks on 2 workers)")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
