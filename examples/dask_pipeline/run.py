"""Dask pipeline example: LLM-decode-like stateful tasks on a LocalCluster, balanced by barrierlb.

    python examples/dask_pipeline/run.py --workers 3 --policy bfio --steps 60 --kill-worker-at 20 --json out.json

Requests come from a ``dask.bag`` (the paper's synthetic lengths, scaled down);
each superstep every worker runs its requests once (numpy work proportional to
each request's load) and the policy places waiting requests in free slots. With
``--policy dask`` the same requests run as plain Dask futures instead (state
passed from step to step, placed by Dask's scheduler with work stealing on), to
compare with Dask's own placement. After ``--steps`` supersteps no new requests
are admitted and the run drains, so every submitted request completes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decode  # noqa: E402


def requests(n: int, seed: int) -> list[dict]:
    import dask.bag as db

    from barrierlb.workloads import synthetic

    work = synthetic(n, seed=seed, prompt_mean=3200, prompt_std=2600, output_mean=24, output_std=14)
    bag = db.from_sequence(range(n), npartitions=4).map(
        lambda i: {"id": i, "prompt": int(work.prompt_tokens[i]), "output": int(work.output_tokens[i])})
    return bag.compute()


def kill_one_worker(client) -> str:
    """SIGKILL one worker process (as the OOM killer would); its nanny restarts it."""
    pids = client.run(os.getpid)
    address = sorted(pids)[-1]
    os.kill(pids[address], signal.SIGKILL)
    return address


def run_balanced(client, args, specs) -> dict:
    from barrierlb import make_policy
    from barrierlb.backends.dask import DaskBalancer

    balancer = DaskBalancer(client, decode.create, decode.step,
                            policy=make_policy(args.policy, defaults={"horizon": args.horizon}),
                            capacity=args.slots, checkpoint=decode.checkpoint,
                            cost=decode.cost if args.cost == "model" else None)
    queue = list(specs)
    started = time.perf_counter()
    step = 0
    killed = None
    while queue or balancer.active or balancer.waiting:
        if step < args.steps:
            room = args.pool - balancer.waiting
            for spec in queue[:max(room, 0)]:
                balancer.submit(spec["id"], spec)
            queue = queue[max(room, 0):]
        elif queue:
            queue = []          # stop admitting: requests never submitted are not counted
        if args.kill_worker_at is not None and step == args.kill_worker_at:
            killed = kill_one_worker(client)
        balancer.step()
        step += 1
        if step > args.steps + 10_000:
            raise RuntimeError("run did not drain")
    wall = time.perf_counter() - started
    return {"reports": balancer.stats, "results": balancer.results, "submitted": balancer.submitted,
            "duplicated": balancer.duplicates, "workers_lost": balancer.workers_lost,
            "tasks_recreated": balancer.tasks_recreated, "wall_s": wall, "killed": killed, "steps_run": step}


def run_dask_native(client, args, specs) -> dict:
    """Same requests as plain futures: Dask's scheduler places them (work stealing on).

    Each request's state is a future; a step is a task on it, so Dask runs it
    where the state lives unless it decides to move it. The client keeps up to
    ``workers * slots`` requests running, like the balanced run.
    """
    import operator

    from distributed import wait

    from barrierlb.backends.dask import Done

    def advance(request, step_index):
        begun = time.perf_counter()
        outcome = decode.step(request, step_index)
        return request, (outcome.result if isinstance(outcome, Done) else None, time.perf_counter() - begun,
                         request.workers[-1])

    queue = list(specs)
    running: dict = {}
    results, reports = {}, []
    started = time.perf_counter()
    step = submitted = 0
    while queue or running:
        if step < args.steps:
            room = args.workers * args.slots - len(running)
            for spec in queue[:max(room, 0)]:
                running[spec["id"]] = client.submit(decode.create, spec, pure=False)
                submitted += 1
            queue = queue[max(room, 0):]
        elif queue:
            queue = []
        outs = {tid: client.submit(advance, state, step, pure=False) for tid, state in running.items()}
        infos = {tid: client.submit(operator.itemgetter(1), out, pure=False) for tid, out in outs.items()}
        wait(list(infos.values()))
        busy: dict = {}
        running = {}
        for tid, (result, cost, address) in zip(infos, client.gather(list(infos.values()))):
            busy[address] = busy.get(address, 0.0) + cost
            if result is not None:
                results[tid] = result
            else:
                running[tid] = client.submit(operator.itemgetter(0), outs[tid], pure=False)
        del outs, infos
        slowest = max(busy.values(), default=0.0)
        reports.append({"barrier_wait_s": sum(slowest - b for b in busy.values())})
        step += 1
    return {"reports": reports, "results": results, "submitted": submitted, "duplicated": 0, "workers_lost": 0,
            "tasks_recreated": 0, "wall_s": time.perf_counter() - started, "killed": None, "steps_run": step}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--policy", default="bfio", help="placement policy, or 'dask' for Dask's own placement")
    parser.add_argument("--steps", type=int, default=60, help="supersteps that admit new requests")
    parser.add_argument("--slots", type=int, default=12, help="requests per worker")
    parser.add_argument("--pool", type=int, default=32, help="waiting requests visible to the policy")
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--cost", choices=("model", "measured"), default="model",
                        help="predict work from prompt and tokens so far, or from measured time")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kill-worker-at", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the summary to PATH (must not exist)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.steps < 1 or args.slots < 1:
        parser.error("--workers, --steps and --slots must be positive")
    from barrierlb.outputs import refuse_existing, write_text

    refuse_existing(parser, {"--json": args.json})
    if args.kill_worker_at is not None and args.policy == "dask":
        parser.error("--kill-worker-at is supported with barrierlb policies")

    from distributed import Client, LocalCluster

    specs = requests(args.requests, args.seed)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") \
            as cluster, Client(cluster) as client:
        outcome = (run_dask_native if args.policy == "dask" else run_balanced)(client, args, specs)
        dashboard = client.dashboard_link          # bound to 127.0.0.1: not reachable from other machines
    results = outcome["results"]
    by_id = {s["id"]: s for s in specs}
    wrong = [tid for tid, r in results.items()
             if r["checksum"] != decode.expected_checksum(by_id[tid]["prompt"], by_id[tid]["output"])]
    reports = outcome["reports"]
    wait = [r.barrier_wait_s if hasattr(r, "barrier_wait_s") else r["barrier_wait_s"] for r in reports]
    summary = {"policy": args.policy, "workers": args.workers, "steps": args.steps, "dashboard": dashboard,
               "steps_run": outcome["steps_run"], "barrier_wait_s": float(np.sum(wait)),
               "wall_s": outcome["wall_s"], "submitted": outcome["submitted"], "completed": len(results),
               "lost": outcome["submitted"] - len(results), "duplicated": outcome["duplicated"],
               "workers_lost": outcome["workers_lost"], "tasks_recreated": outcome["tasks_recreated"],
               "wrong_results": len(wrong), "per_step_barrier_wait_s": [float(w) for w in wait]}
    print(f"{args.policy:>10} workers={args.workers} steps={summary['steps_run']} submitted={summary['submitted']} "
          f"completed={summary['completed']} lost={summary['lost']} duplicated={summary['duplicated']} "
          f"workers_lost={summary['workers_lost']} barrier_wait={summary['barrier_wait_s']:.3f}s "
          f"wall={summary['wall_s']:.1f}s")
    if args.json:
        print(write_text(args.json, json.dumps(summary, indent=2) + "\n").note())
    ok = summary["lost"] == 0 and summary["duplicated"] == 0 and not wrong
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
