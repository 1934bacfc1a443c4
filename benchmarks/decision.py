"""Decision-time and optimality-gap benchmark of the BF-IO step solvers.

Instances are decode decision points (:func:`barrierlb.snapshots.decode_snapshot`):

- ``decode``: the paper's synthetic workload (long outputs), 1 to 8 free slots;
- ``decode-burst``: the BurstGPT sample's lengths (short outputs: about 40 of
  32 x 72 slots free up every step), 16 to 64 free slots;
- ``cold-start``: every slot free.

Both solvers minimize the paper's objective here (uniform weights, peak weight
1), so ``gap`` = (fast objective - proven optimum) / optimum, over instances the
MILP proved optimal with a positive optimum. ``paths`` counts how the fast
solver reached each placement (``exact`` enumeration, ``water-filling``,
``heuristic``: the compiled greedy and local search).

    python benchmarks/decision.py --quick --json decision.json

``--pool-scaling`` runs only the pool-size section: one decision on an empty
32 x 72 cluster with 1k to 100k waiting tasks, plain ``bfio`` (bounded
candidate set) beside ``bfio:candidates=none`` (the whole pool), by
``policy.decide`` and by ``DecodeRouter.route()``:

    python benchmarks/decision.py --pool-scaling --json pool.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, add_json_argument, check_json_argument, percentiles_ms, print_table, write_json  # noqa: E402

from barrierlb.policies import make_policy  # noqa: E402
from barrierlb.problem import predicted_imbalance  # noqa: E402
from barrierlb.snapshots import decode_snapshot  # noqa: E402
from barrierlb.solvers import solve_exact, solve_fast  # noqa: E402
from barrierlb.workloads import load_workload, synthetic  # noqa: E402


def workloads():
    long = synthetic(20_000, seed=0)
    burst_file = DATA / "burstgpt_sample_8000.json"
    if burst_file.is_file():
        short = load_workload(f"burstgpt:{burst_file}")
    else:  # shape of the BurstGPT sample without the file: short, heavy-tailed outputs
        rng = np.random.default_rng(0)
        short = synthetic(8000, seed=0, prompt_mean=360, prompt_std=500, output_mean=57, output_std=150)
        short = type(short)("burst-like", short.prompt_tokens,
                            np.maximum(1, rng.lognormal(2.2, 1.4, 8000).astype(np.int64)))
    return {"decode": long, "decode-burst": short, "cold-start": long}


def problems(workload, case, n_workers, capacity, pool, horizon, free_range, count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        free = n_workers * capacity if case == "cold-start" else int(rng.integers(free_range[0], free_range[1] + 1))
        state = decode_snapshot(workload, n_workers, capacity, pool, free, seed=seed * 100_003 + k)
        out.append(state.step_problem(horizon))
    return out


def fast(problem):
    return solve_fast(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                      alive=problem.alive)


def time_rows(case, n_workers, capacity, pool, horizon, free_range, count, workload, baselines):
    """p50/p99 decision time of the fast solver (and of baselines) on the same instances, and the
    paths the fast solver took."""
    probs = problems(workload, case, n_workers, capacity, pool, horizon, free_range, count, seed=n_workers + horizon)
    rows = []
    base = dict(n_workers=n_workers, pool=pool, horizon=horizon, case=case, instances=len(probs),
                free=f"{free_range[0]}-{free_range[1]}" if case != "cold-start" else "all",
                gap_mean=None, gap_p99=None)
    fast(probs[0])   # warm up (and load the compiled kernels)
    seconds, paths = [], {}
    for problem in probs:
        started = time.perf_counter()
        result = fast(problem)
        seconds.append(time.perf_counter() - started)
        paths[result.path] = paths.get(result.path, 0) + 1
    p50, p99 = percentiles_ms(seconds)
    rows.append(dict(base, solver="bfio", engine="compiled", p50_ms=p50, p99_ms=p99,
                     paths=", ".join(f"{k} {v}" for k, v in sorted(paths.items()))))
    for name in baselines:
        policy = make_policy(name)
        seconds = []
        for problem in probs:
            started = time.perf_counter()
            policy.decide_problem(problem)
            seconds.append(time.perf_counter() - started)
        p50, p99 = percentiles_ms(seconds)
        rows.append(dict(base, solver=name, p50_ms=p50, p99_ms=p99))
    return rows


def gap_rows(case, n_workers, capacity, pool, horizon, max_free, count, workload, time_limit_s):
    probs = problems(workload, case, n_workers, capacity, pool, horizon, (1, max_free), count, seed=7)
    fast_s, exact_s, gaps = [], [], []
    for problem in probs:
        started = time.perf_counter()
        result = fast(problem)
        fast_s.append(time.perf_counter() - started)
        exact = solve_exact(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                            alive=problem.alive, time_limit_s=time_limit_s)
        exact_s.append(exact.solve_time_s)
        if exact.optimal:
            optimum = predicted_imbalance(problem, exact.task_index, exact.worker)
            if optimum > 0:
                gaps.append((result.objective - optimum) / optimum)
    base = dict(n_workers=n_workers, pool=pool, horizon=horizon, case=case, free=f"1-{max_free}")
    gaps = np.asarray(gaps)
    p50, p99 = percentiles_ms(fast_s)
    e50, e99 = percentiles_ms(exact_s)
    return [dict(base, solver="bfio", p50_ms=p50, p99_ms=p99, instances=int(gaps.size),
                 gap_mean=float(gaps.mean()) if gaps.size else None,
                 gap_p99=float(np.percentile(gaps, 99)) if gaps.size else None),
            dict(base, solver="bfio-exact", p50_ms=e50, p99_ms=e99, instances=int(gaps.size), gap_mean=0.0,
                 gap_p99=0.0)]


def alike_rows(n_workers, n_tasks, horizon, count):
    """A backend's batch: ``n_tasks`` new tasks costed alike on ranks whose loads are persistence
    lines (last cost plus trend). Times the count-vector path against the greedy on the same
    batch with costs made unequal by one part in 10^12 (which takes the greedy path), side by side."""
    rng = np.random.default_rng(n_workers * 1000 + n_tasks)
    rows = horizon + 1
    ahead = np.arange(rows) + 1.0
    weights = 0.9 ** np.arange(rows)
    alike_s, greedy_s, ratios = [], [], []
    for _ in range(count):
        loads = (rng.uniform(5e-3, 1e-2, n_workers)[None, :]
                 + rng.uniform(-2e-5, 2e-5, n_workers)[None, :] * ahead[:, None])
        work = np.full((n_tasks, rows), 3e-4)
        jitter = work * (1.0 + 1e-12 * rng.random((n_tasks, 1)))
        free = np.full(n_workers, n_tasks)
        results = []
        for pool, out in ((work, alike_s), (jitter, greedy_s)):
            started = time.perf_counter()
            results.append(solve_fast(loads, pool, free, weights))
            out.append(time.perf_counter() - started)
        ratios.append(results[0].objective / results[1].objective)
    a50, a99 = percentiles_ms(alike_s)
    g50, g99 = percentiles_ms(greedy_s)
    return dict(n_workers=n_workers, tasks=n_tasks, horizon=horizon, instances=count, alike_p50_ms=a50,
                greedy_p50_ms=g50, speedup=g50 / a50, objective_ratio_max=float(max(ratios)))


def limit_rows(workload, limits=(0.5, 2.0)):
    """Whole ``bfio-exact`` decisions against their ``time_limit_s`` (after a warm-up that loads
    the kernels): the limit bounds the decision, model building and fallback included."""
    make_policy("bfio:horizon=8").decide(decode_snapshot(workload, 32, 72, 128, 40, seed=9))
    rows = []
    for n_workers, capacity, pool, free, horizon in ((32, 72, 128, 40, 72), (64, 16, 256, 200, 32),
                                                     (8, 16, 24, 12, 8)):
        state = decode_snapshot(workload, n_workers, capacity, pool, free, seed=1)
        for limit in limits:
            policy = make_policy(f"bfio-exact:horizon={horizon},time_limit_s={limit}")
            started = time.perf_counter()
            decision = policy.decide(state)
            seconds = time.perf_counter() - started
            rows.append(dict(solver="bfio-exact", n_workers=n_workers, pool=pool, free=free, horizon=horizon,
                             time_limit_s=limit, decision_s=seconds, ratio=seconds / limit, branch=decision.branch))
    return rows


LIMIT_COLUMNS = [("n_workers", "G", "{}"), ("pool", "pool", "{}"), ("free", "free", "{}"), ("horizon", "H", "{}"),
                 ("time_limit_s", "limit s", "{}"), ("decision_s", "decision s", "{:.3f}"),
                 ("ratio", "decision / limit", "{:.2f}"), ("branch", "branch", "{}")]


ALIKE_COLUMNS = [("n_workers", "ranks", "{}"), ("tasks", "alike tasks", "{}"), ("horizon", "H", "{}"),
                 ("instances", "n", "{}"), ("alike_p50_ms", "counts p50 ms", "{:.3f}"),
                 ("greedy_p50_ms", "greedy p50 ms", "{:.3f}"), ("speedup", "speedup", "{:.1f}x"),
                 ("objective_ratio_max", "objective counts/greedy, max", "{:.6f}")]


COLUMNS = [("case", "case", "{}"), ("solver", "solver", "{}"), ("n_workers", "G", "{}"), ("pool", "pool", "{}"),
           ("horizon", "H", "{}"), ("free", "free", "{}"), ("instances", "n", "{}"), ("p50_ms", "p50 ms", "{:.3f}"),
           ("p99_ms", "p99 ms", "{:.3f}"), ("paths", "fast solver paths", "{}"),
           ("gap_mean", "gap mean", "{:.3%}"), ("gap_p99", "gap p99", "{:.3%}")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer instances; under a minute on 2 cores")
    add_json_argument(parser, "write the records as JSON")
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    started = time.perf_counter()
    data = workloads()
    n = 60 if args.quick else 300
    rows = []
    for case, free in (("decode", (1, 8)), ("decode-burst", (16, 64)), ("cold-start", None)):
        rows += time_rows(case, 32, 72, 128, 80, free or (0, 0), n if case != "cold-start" else n // 6,
                          data[case], baselines=("fcfs", "jsq-tokens"))
    rows += gap_rows("decode", 8, 16, 24, 8, 12, 110 if args.quick else 300, data["decode"], time_limit_s=10.0)
    rows += gap_rows("decode-burst", 8, 16, 24, 8, 12, 110 if args.quick else 300, data["decode-burst"],
                     time_limit_s=10.0)
    rows += time_rows("decode", 1024, 72, 4096, 32, (1, 64), 10 if args.quick else 40, data["decode"], baselines=())
    print_table(rows, COLUMNS, f"BF-IO step solvers ({'quick' if args.quick else 'full'} run)")
    alike = [alike_rows(g, k, 8, 20 if args.quick else 100) for g, k in ((4, 16), (4, 64), (16, 64), (64, 64),
                                                                           (64, 256))]
    print_table(alike, ALIKE_COLUMNS, "Backend batches: new tasks costed alike (persistence-line loads)")
    limits = limit_rows(data["decode"])
    print_table(limits, LIMIT_COLUMNS, "bfio-exact: whole decision against time_limit_s")
    print(f"total {time.perf_counter() - started:.1f} s")
    write_json(args.json, {"solvers": rows, "alike_batches": alike, "time_limits": limits}, force=args.force)
    return 0



# ------------------------------------------------------------------------------------------ fleet
# Fleet-scale decision points: the round-based solver (barrierlb.solvers.batched) against the
# fast solver on the CPU, on the same instances. ``--fleet`` runs only this section:
#
#     python benchmarks/decision.py --fleet --quick --json fleet.json          # numpy stand-in
#     python benchmarks/decision.py --fleet --gpu --json fleet.json            # plus CuPy rows

#: (case, G, pool, H, free slots range, instances, quick instances): steady decode frees about
#: G * B / (mean output) slots a step (the 1-64 and 1-256 ranges); short outputs free many more.
FLEET_CASES = (("decode", 1024, 4096, 32, (1, 64), 8, 3), ("decode", 4096, 16384, 32, (1, 256), 3, 2),
               ("decode-burst", 1024, 4096, 32, (256, 1024), 3, 2))

FLEET_COLUMNS = [("case", "case", "{}"), ("solver", "solver", "{}"), ("engine", "engine", "{}"),
                 ("n_workers", "G", "{}"), ("pool", "pool", "{}"), ("horizon", "H", "{}"), ("free", "free", "{}"),
                 ("instances", "n", "{}"), ("p50_ms", "p50 ms", "{:.1f}"), ("p99_ms", "p99 ms", "{:.1f}"),
                 ("speedup", "p50 cpu/this", "{:.2f}x"), ("objective_ratio_max", "objective / cpu, max", "{:.6f}"),
                 ("reduction_ratio_min", "reduction / cpu's, min", "{:.4f}"), ("rounds_mean", "rounds", "{:.1f}")]


def _fleet_solve_cpu(problem):
    return solve_fast(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                      alive=problem.alive)


def fleet_rows(case, n_workers, pool, horizon, free_range, count, workload, namespaces):
    """One row for the fast solver on the CPU and one per namespace for the batched solver, on the
    same instances: p50/p99 time, the objective ratio to the CPU solver's (max over instances) and
    the share of the CPU solver's reduction of the objective (against placing nothing) achieved."""
    from barrierlb.solvers.batched import solve_batched

    probs = problems(workload, case, n_workers, 72, pool, horizon, free_range, count, seed=n_workers + horizon)
    base = dict(case=case, n_workers=n_workers, pool=pool, horizon=horizon, instances=len(probs),
                free=f"{free_range[0]}-{free_range[1]}")
    nothing = [predicted_imbalance(p, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) for p in probs]
    seconds, cpu_objective, cpu_paths = [], [], set()
    for problem in probs:
        started = time.perf_counter()
        result = _fleet_solve_cpu(problem)
        seconds.append(time.perf_counter() - started)
        cpu_objective.append(result.objective)
        cpu_paths.add(result.path)
    p50, p99 = percentiles_ms(seconds)
    # ``cpu_engine``: the fast solver's one implementation (numba kernels around array code; it
    # had two engines before 0.2). ``cpu_path``: the paths its results report over the instances
    # (``exact``, ``water-filling``, ``heuristic``), joined with "/".
    rows = [dict(base, solver="bfio", engine="cpu", cpu_engine="numba", cpu_path="/".join(sorted(cpu_paths)),
                 p50_ms=p50, p99_ms=p99, objective_ratio_max=1.0, reduction_ratio_min=1.0)]
    for name, xp, synchronize in namespaces:
        arrays = [[xp.asarray(a) for a in (p.projected_load, p.pool_work, p.free_slots, p.weights, p.alive)]
                  for p in probs]
        started = time.perf_counter()
        solve_batched(*arrays[0][:4], alive=arrays[0][4])        # first call: kernel compilation, caches
        synchronize()
        first_call_s = time.perf_counter() - started
        seconds, ratios, reductions, rounds = [], [], [], []
        for args, cpu, empty in zip(arrays, cpu_objective, nothing):
            started = time.perf_counter()
            result = solve_batched(*args[:4], alive=args[4])
            synchronize()
            seconds.append(time.perf_counter() - started)
            ratios.append(result.objective / cpu)
            reductions.append((empty - result.objective) / (empty - cpu) if empty != cpu else 1.0)
            rounds.append(result.rounds)
        b50, b99 = percentiles_ms(seconds)
        rows.append(dict(base, solver="bfio-batched", engine=name, p50_ms=b50, p99_ms=b99, speedup=p50 / b50,
                         objective_ratio_max=float(max(ratios)), reduction_ratio_min=float(min(reductions)),
                         rounds_mean=float(np.mean(rounds)), first_call_s=first_call_s))
    return rows


def fleet_namespaces(gpu: bool):
    """``(name, array module, synchronize)`` for the batched rows: numpy, plus CuPy with ``gpu``."""
    out = [("numpy", np, lambda: None)]
    if gpu:
        try:
            import cupy

            cupy.zeros(1)
        except (ImportError, RuntimeError) as error:
            raise SystemExit(f"decision.py: --gpu needs CuPy and a CUDA device: {type(error).__name__}: {error}") \
                from None
        out.append(("cupy", cupy, cupy.cuda.Device().synchronize))
    return out


def fleet_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fleet section of decision.py: the round-based solver "
                                     "against the CPU fast solver on the same instances.")
    parser.add_argument("--fleet", action="store_true", help="run this section (required)")
    parser.add_argument("--quick", action="store_true", help="fewer instances")
    parser.add_argument("--gpu", action="store_true", help="add the CuPy rows (fails without CuPy and a GPU)")
    parser.add_argument("--sizes", default="1024,4096", help="fleet sizes G to run, comma-separated")
    add_json_argument(parser, "write the records as JSON")
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    try:
        sizes = {int(size) for size in args.sizes.split(",")}
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    namespaces = fleet_namespaces(args.gpu)
    started = time.perf_counter()
    data = workloads()
    warm = problems(data["decode"], "decode", 32, 72, 128, 8, (1, 8), 1, seed=1)[0]
    _fleet_solve_cpu(warm)                      # load the CPU solver's compiled kernels before timing
    rows = []
    for case, n_workers, pool, horizon, free, count, quick_count in FLEET_CASES:
        if n_workers in sizes:
            rows += fleet_rows(case, n_workers, pool, horizon, free, quick_count if args.quick else count,
                               data[case], namespaces)
    print_table(rows, FLEET_COLUMNS, f"Fleet decision points ({'quick' if args.quick else 'full'} run)")
    print(f"total {time.perf_counter() - started:.1f} s")
    write_json(args.json, {"fleet": rows}, force=args.force)
    return 0


# ------------------------------------------------------------------------------------ pool scaling
# One decision on an empty 32 x 72 cluster as the waiting pool grows: the bounded candidate set
# (plain bfio) against the whole pool (candidates=none), timed by the policy and by the router.

POOL_COLUMNS = [("pool", "pool", "{}"), ("solver", "solver", "{}"), ("via", "via", "{}"),
                ("considered", "considered", "{}"), ("placed", "placed", "{}"), ("ms", "ms", "{:.1f}"),
                ("ratio", "unbounded / bounded", "{:.1f}x"), ("objective", "objective", "{:.0f}")]


def _pool_state(workload, n):
    from barrierlb.state import ClusterState

    state = ClusterState(32, 72)
    _submit(state, workload, n)
    return state


def pool_rows(sizes, unbounded_max, workload):
    from barrierlb.router import DecodeRouter

    rows = []
    for n in sizes:
        bounded_ms = None
        for name in ("bfio", "bfio:candidates=none"):
            if name != "bfio" and n > unbounded_max:
                rows.append({"case": "pool-scaling", "pool": n, "solver": name, "via": "decide",
                             "considered": n, "ms": None, "skipped": f"pool above --unbounded-max {unbounded_max}"})
                continue
            policy = make_policy(name)
            state = _pool_state(workload, n)
            began = time.perf_counter()
            decision = policy.decide(state)
            ms = (time.perf_counter() - began) * 1e3
            bounded_ms = ms if name == "bfio" else bounded_ms
            rows.append({"case": "pool-scaling", "pool": n, "solver": name, "via": "decide",
                         "considered": decision.info.get("pool_considered"), "placed": int(decision.task_ids.size),
                         "ms": ms, "ratio": ms / bounded_ms if name != "bfio" and bounded_ms else None,
                         "objective": decision.objective, "deadline_cut": decision.info.get("deadline_cut")})
            # The router's public API: queue the same requests (its state, one batch: add_request
            # a request at a time would time the queueing), then one route().
            router = DecodeRouter(32, 72, policy=name)
            _submit(router.state, workload, n)
            began = time.perf_counter()
            routed = router.route()
            rows.append({"case": "pool-scaling", "pool": n, "solver": name, "via": "route", "placed": len(routed),
                         "ms": (time.perf_counter() - began) * 1e3})
    return rows


def _submit(state, workload, n):
    prompt = workload.prompt_tokens[:n].astype(np.float64)
    state.submit_arrays(np.arange(n), prompt, growth=1.0, steps=workload.output_tokens[:n].astype(np.float64),
                        prompt=prompt)


def pool_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Pool-scaling section of decision.py: one bfio decision on an "
                                     "empty 32 x 72 cluster, bounded candidate set against the whole pool")
    parser.add_argument("--pool-scaling", action="store_true", help="run this section (required)")
    parser.add_argument("--sizes", default="1000,5000,20000,100000", help="pool sizes, comma-separated")
    parser.add_argument("--unbounded-max", type=int, default=5000,
                        help="largest pool the unbounded policy runs on (20,000 took 100 s here)")
    add_json_argument(parser, "write the records as JSON")
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if any(size < 1 or size > 100_000 for size in sizes):
        parser.error(f"--sizes must be between 1 and 100000, got {args.sizes!r}")
    workload = synthetic(100_000, seed=0)
    make_policy("bfio").decide(_pool_state(workload, 600))          # compile and load the kernels first
    rows = pool_rows(sizes, args.unbounded_max, workload)
    print_table(rows, POOL_COLUMNS, "One bfio decision on an empty 32 x 72 cluster by pool size")
    write_json(args.json, {"pool_scaling": rows}, force=args.force)
    return 0


if __name__ == "__main__":
    if "--pool-scaling" in sys.argv[1:]:
        sys.exit(pool_main(sys.argv[1:]))
    sys.exit(fleet_main(sys.argv[1:]) if "--fleet" in sys.argv[1:] else main())
