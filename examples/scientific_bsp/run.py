"""Scientific BSP adapter: spawning, refining reaction-diffusion blocks balanced over MPI ranks.

    mpiexec -n 2 python -m mpi4py examples/scientific_bsp/run.py --policy bfio --steps 60 --json out.json

Each block stays on the rank that received it; new blocks are placed by the
policy. Reports per rank and per step the measured compute time and barrier
wait, the barrier wait the cost model gives for the placement that ran
(``modelled_wait_s``: free of timing noise, which on a shared machine can
exceed the imbalance itself), checks that total mass is conserved and hashes
the final global state (identical whatever the policy: the science does not
depend on placement). ``placement_digest`` hashes where every block was placed:
the same in every run with ``--cost model``; with ``--cost measured`` it follows
the measured times, which differ from run to run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blocks import STEP_US, Block, cost_model, make_spec, size_at  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.outputs import refuse_existing, write_text  # noqa: E402


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="bfio", help="placement policy (default bfio)")
    parser.add_argument("--steps", type=int, default=60, help="supersteps (default 60)")
    parser.add_argument("--blocks", type=int, default=16, help="initial blocks (default 16)")
    parser.add_argument("--horizon", type=int, default=32, help="lookahead for bfio/greedy (default 32)")
    parser.add_argument("--cost", choices=("model", "measured"), default="model",
                        help="predict block cost from the refinement schedule, or from measured time")
    parser.add_argument("--mode", choices=("replicated", "root"), default="replicated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="write the summary to PATH (rank 0; must not exist)")
    parser.add_argument("--fail-on-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.blocks < 1 or args.horizon < 0:
        parser.error("--steps and --blocks must be positive, --horizon non-negative")
    refuse_existing(parser, {"--json": args.json})
    return args


def main(argv=None) -> int:
    from mpi4py import MPI

    from barrierlb.backends.mpi import balance

    args = parse(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    policy = make_policy(args.policy, defaults={"horizon": args.horizon})

    @balance(create=Block, comm=comm, policy=policy, cost=cost_model if args.cost == "model" else None,
             mode=args.mode)
    def advance(block, step):
        if args.fail_on_rank == rank and step == 2:
            raise ValueError("injected failure")
        return block.advance(step)

    if rank == 0:
        for b in range(args.blocks):
            advance.submit(b, make_spec(b, 0, seed=args.seed * 1000 + b, steps=args.steps))
    advance.balancer.exchange()          # place the initial blocks
    placements = hashlib.sha256(repr(sorted(advance.balancer.last_placement.items())).encode())
    advance.balancer.barrier()
    started = time.perf_counter()
    for step in range(args.steps):
        advance(step)
        placements.update(repr((step, sorted(advance.balancer.last_placement.items()))).encode())
    wall = time.perf_counter() - started

    stats = advance.stats
    compute = np.array([s.compute_s for s in stats])
    wait = np.array([s.wait_s for s in stats])
    balance_s = np.array([s.balance_s for s in stats])
    per_rank = comm.gather({"rank": rank, "compute_s": compute.tolist(), "barrier_wait_s": wait.tolist(),
                            "balance_s": balance_s.tolist(), "blocks": len(advance.tasks)}, root=0)
    # What the placement costs in the cost model's terms, free of timing noise: each rank's
    # modelled work per step (its blocks live from their birth to the end) and the wait it implies.
    modelled = np.zeros(args.steps)
    for block in advance.tasks.values():
        for k in range(block.spec["born"], args.steps):
            modelled[k] += STEP_US[size_at(block.spec, k)] * 1e-6
    modelled = np.array(comm.allgather(modelled))                        # (ranks, steps)
    modelled_wait = float((modelled.max(axis=0) - modelled).sum())
    mass = comm.allreduce(sum(b.mass() for b in advance.tasks.values()))
    initial = comm.allreduce(sum(b.initial_mass for b in advance.tasks.values()))
    blocks = comm.gather([(bid, b.digest_bytes()) for bid, b in advance.tasks.items()], root=0)
    wall = comm.allreduce(wall, op=MPI.MAX)
    if rank != 0:
        return 0
    digest = hashlib.sha256()
    all_blocks = sorted(item for items in blocks for item in items)
    for bid, data in all_blocks:
        digest.update(bid.to_bytes(8, "little"))
        digest.update(data)
    summary = {
        "policy": args.policy, "ranks": size, "steps": args.steps, "cost": args.cost, "mode": args.mode,
        "compute_s": float(sum(sum(r["compute_s"]) for r in per_rank)),
        "barrier_wait_s": float(sum(sum(r["barrier_wait_s"]) for r in per_rank)),
        "balance_s": float(sum(sum(r["balance_s"]) for r in per_rank)),
        "wall_s": wall, "conserved": mass, "initial_mass": initial,
        "mass_error": abs(mass - initial) / initial, "state_digest": digest.hexdigest(),
        "blocks": len(all_blocks), "modelled_wait_s": modelled_wait,
        "placement_digest": placements.hexdigest(),
        "per_rank": [{"rank": r["rank"], "blocks": r["blocks"], "compute_s": sum(r["compute_s"]),
                      "barrier_wait_s": sum(r["barrier_wait_s"])} for r in per_rank],
        "per_step": [{"step": k, "compute_s": [r["compute_s"][k] for r in per_rank],
                      "barrier_wait_s": [r["barrier_wait_s"][k] for r in per_rank]} for k in range(args.steps)],
    }
    print(f"{args.policy:>12} ranks={size} steps={args.steps} blocks={len(all_blocks)} "
          f"compute={summary['compute_s']:.3f}s barrier_wait={summary['barrier_wait_s']:.3f}s "
          f"(modelled {modelled_wait:.3f}s) balance={summary['balance_s'] * 1e3:.1f}ms wall={wall:.3f}s "
          f"mass_error={summary['mass_error']:.1e} "
          f"digest={summary['state_digest'][:12]}")
    for r in summary["per_rank"]:
        print(f"  rank {r['rank']}: {r['blocks']} blocks, compute {r['compute_s']:.3f}s, "
              f"barrier wait {r['barrier_wait_s']:.3f}s")
    if summary["mass_error"] > 1e-9:
        print(f"mass not conserved: relative error {summary['mass_error']:.2e}", file=sys.stderr)
        return 1
    if args.json:
        print(write_text(args.json, json.dumps(summary, indent=2) + "\n").note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
