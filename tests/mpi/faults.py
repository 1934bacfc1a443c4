"""Faulty MPI programs for tests/test_mpi_launch.py: each must end with a clear error, never hang.

    mpiexec -n 2 python -m mpi4py tests/mpi/faults.py SCENARIO [--timeout-s S]

``leave-early``: the last rank runs one superstep fewer and returns. ``stuck``:
the last rank blocks inside a step. ``spec-exchange``: the last rank never
reaches the exchange that sends a large batch (the others wait in it).
"""

from __future__ import annotations

import argparse
import sys
import time


class Block:
    def __init__(self, spec):
        self.id = spec["id"]

    def advance(self, step):
        return None


def main() -> int:
    from mpi4py import MPI

    from barrierlb.backends.mpi import balance

    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=("leave-early", "stuck", "spec-exchange"))
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, last = comm.Get_rank(), comm.Get_size() - 1
    comm.Barrier()          # every rank has imported everything: only the fault can miss a deadline

    @balance(create=Block, comm=comm, policy="round-robin", timeout_s=args.timeout_s)
    def advance(block, step):
        if args.scenario == "stuck" and rank == last and step == 2:
            time.sleep(10**6)
        return block.advance(step)

    if rank == 0:
        for b in range(4 * comm.Get_size()):
            advance.submit(b, {"id": b, "pad": "x" * (4096 if args.scenario == "spec-exchange" else 1)})
    if args.scenario == "spec-exchange" and rank == last:
        return 0                         # leaves before the first exchange
    advance.balancer.exchange()
    steps = 5
    for step in range(steps - 1 if args.scenario == "leave-early" and rank == last else steps):
        advance(step)
    print(f"rank {rank} finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
