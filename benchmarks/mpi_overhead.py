"""Cost of the MPI balancer per superstep, as a fraction of a 10 ms superstep.

Per superstep every rank ends ``new`` of its tasks and creates ``new`` others
(so the cluster stays at ``tasks`` tasks per rank), then the balancer exchanges
loads and specs, decides and builds the received tasks. What is timed is
``MPIBalancer.exchange`` plus the explicit barrier before it is *not* counted
(that is the wait). Runs itself under ``mpiexec`` for 2 and 4 ranks:

    python benchmarks/mpi_overhead.py --json mpi_overhead.json

With more ranks than cores (4 on this 2-core machine) MPICH busy-polls, so the
-n 4 rows include the cost of sharing cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_json_argument, check_json_argument, write_json  # noqa: E402

STEP_S = 0.010


def worker(args) -> None:
    from mpi4py import MPI

    from barrierlb import make_policy
    from barrierlb.backends.mpi import MPIBalancer

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = []
    for policy_spec in args.policies.split(";"):
        for mode in ("replicated", "root"):
            for new in (1, 4, 16):
                balancer = MPIBalancer(dict, comm=comm, policy=make_policy(policy_spec), mode=mode)
                next_id = rank * 10**9
                for _ in range(args.tasks):
                    balancer.submit(next_id, {"id": next_id})
                    next_id += 1
                balancer.exchange()
                rng = np.random.default_rng(rank)
                times = []
                for _ in range(args.steps):
                    for task_id in list(balancer.tasks):
                        balancer.record(task_id, float(rng.uniform(1e-4, 5e-4)))
                    for task_id in sorted(balancer.tasks)[:new]:
                        balancer.remove(task_id)
                    for _ in range(new):
                        balancer.submit(next_id, {"id": next_id})
                        next_id += 1
                    balancer.barrier()
                    started = time.perf_counter()
                    balancer.exchange()
                    times.append(time.perf_counter() - started)
                slowest = comm.allreduce(float(np.median(times[5:])), op=MPI.MAX)
                p99 = comm.allreduce(float(np.percentile(times[5:], 99)), op=MPI.MAX)
                rows.append({"ranks": size, "policy": policy_spec, "mode": mode, "tasks_per_rank": args.tasks,
                             "new_per_rank": new, "p50_ms": slowest * 1e3, "p99_ms": p99 * 1e3,
                             "fraction_of_10ms": slowest / STEP_S})
    if rank == 0:
        Path(args.out).write_text(json.dumps(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_argument(parser)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=32, help="tasks per rank")
    parser.add_argument("--policies", default="bfio:horizon=8;greedy:horizon=8;round-robin")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    check_json_argument(parser, args)
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if mpiexec is None:
        print("mpiexec not found: pip install 'barrierlb[mpi,mpi-runtime]'", file=sys.stderr)
        return 2
    rows = []
    for ranks in (2, 4):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", __file__, "--worker", "--out", out.name,
                   "--steps", str(args.steps), "--tasks", str(args.tasks), "--policies", args.policies]
            subprocess.run(cmd, check=True, timeout=600)
            rows += json.loads(Path(out.name).read_text())
    print(f"{'ranks':>5} {'policy':>16} {'mode':>10} {'new/rank':>8} {'p50 ms':>8} {'p99 ms':>8} {'of 10 ms':>9}")
    for r in rows:
        print(f"{r['ranks']:>5} {r['policy']:>16} {r['mode']:>10} {r['new_per_rank']:>8} {r['p50_ms']:>8.3f} "
              f"{r['p99_ms']:>8.3f} {r['fraction_of_10ms']:>9.2%}")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
