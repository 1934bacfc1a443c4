"""The serving replay's setting in the simulator: deterministic, over many samples of the requests.

``benchmarks/serve.py --quick`` replays about 700 BurstGPT requests through the proxy to the
lockstep emulator at 32 ranks x 4 slots, arriving at twice the saturated rate, and compares the
policies' barrier idle over the steps while requests waited. On this 2-core machine its
``bfio`` / ``vllm`` idle ratio moves from run to run with the timing of the requests
(docs/serving.md). This runs the same setting in barrierlb's simulator, where a run depends
only on the requests, so that the ratio's spread over request samples can be seen apart from
the machine's:

- each sample: 700 requests drawn from the BurstGPT sample (``../shared/data``; prompts capped
  at 4,096 tokens and outputs at 128, as the quick replay does), Poisson arrivals at
  ``--overload`` (2) times the rate ``round-robin`` completes them when saturated (simulated
  time, the pool kept full);
- every policy on the same arrivals, with the online survival predictor per prompt-length
  group that ``barrierlb serve`` uses (``prompt-survival``, cold at the start);
- ``idle_fraction``: the barrier idle ``1 - sum_t sum_g L / (G sum_t max_g L)`` over the steps
  after whose decision requests still waited (the replay's definition);
- for ``bfio``, two figures for the requests it had resident at each of those steps:
  ``idle_floor`` takes each step's maximum as only the larger of its largest resident request
  and the mean load, a lower bound for any placement of those requests, migrations
  allowed; ``idle_rearranged`` is the idle of re-placing them every step largest first onto
  the least loaded rank with a free slot (the LPT rule, slots respected), which migration
  could reach.

    python benchmarks/serve_simulated.py                       # 12 samples, 13 to 16 s on this 2-core machine
    python benchmarks/serve_simulated.py --samples 4 --json r.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_json_argument, check_json_argument, print_table, write_json  # noqa: E402
from serve import workloads  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.predictors import make_predictor  # noqa: E402
from barrierlb.simulator import SimulationConfig, Simulator  # noqa: E402
from barrierlb.workloads import Workload  # noqa: E402


def sample(workload: Workload, args, index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([args.seed, index])
    pick = rng.choice(len(workload), size=args.requests, replace=False)
    return (np.minimum(workload.prompt_tokens[pick], args.max_prompt),
            np.minimum(workload.output_tokens[pick], args.max_output))


def config(args, arrivals: str) -> SimulationConfig:
    # The proxy's pool is unbounded (a decision sees the oldest 512): a pool the size of the sample.
    return SimulationConfig(n_workers=args.ranks, slots=args.slots, pool=args.requests, arrivals=arrivals)


def saturated_rate(name, prompts, outputs, args) -> float:
    """Requests per simulated second that round-robin completes with the pool always full."""
    workload = Workload(name, prompts, outputs)
    result = Simulator(workload, make_policy("round-robin"), config=config(args, "pool"),
                       predictor=make_predictor(args.predictor, outputs)).run()
    return result.metrics.requests_completed / result.metrics.simulated_s


def run(workload: Workload, spec: str, args, *, bounds: bool) -> dict:
    sim = Simulator(workload, make_policy(spec), config=config(args, "trace"),
                    predictor=make_predictor(args.predictor, workload.output_tokens))
    prompts = workload.prompt_tokens.astype(np.float64)
    waited = []
    floor = rearranged = 0.0
    ranks, slots = args.ranks, args.slots
    while sim.step():
        waited.append(sim.state.n_waiting > 0)
        if not (bounds and waited[-1] and sim.state.n_active):
            continue
        # The step's loads of the requests still resident after it (its prompt plus the tokens
        # before this step's; those that just finished are gone, so the floor is if anything
        # lower than the step's own: still a lower bound).
        ids, age = sim.state.slot_ids(), sim.state.slot_age()
        held = ids >= 0
        load = np.sort(prompts[ids[held]] + age[held] - 1)[::-1]
        floor += max(load[0], load.sum() / ranks)
        level, count = np.zeros(ranks), np.zeros(ranks, dtype=np.int64)
        for value in load:
            rank = int(np.where(count < slots, level, np.inf).argmin())
            level[rank] += value
            count[rank] += 1
        rearranged += level.max()
    result = sim.result()
    steps = np.asarray(waited[:result.max_load.size], dtype=bool)
    total_sum, total_max = float(result.sum_load[steps].sum()), float(result.max_load[steps].sum())
    m = result.metrics
    row = {"policy": spec, "engine": "simulator", "ranks": ranks, "slots": slots, "submitted": len(workload),
           "completed": m.requests_completed, "steps_waiting": int(steps.sum()),
           "idle_fraction": 1 - total_sum / (ranks * total_max) if total_max else float("nan"),
           "idle_fraction_window": m.idle_fraction, "throughput_tok_s": m.throughput_tok_s,
           "tpot_p99_s": m.tpot_p99_s, "ttft_p99_s": m.ttft_p99_s}
    if bounds and total_max:
        # The bounds count the steps after which requests waited and requests ran, as does the idle.
        row["idle_floor"] = 1 - total_sum / (ranks * floor)
        row["idle_rearranged"] = 1 - total_sum / (ranks * rearranged)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=12, help="request samples (default 12)")
    parser.add_argument("--requests", type=int, default=700, help="requests per sample (default 700)")
    parser.add_argument("--ranks", type=int, default=32)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--overload", type=float, default=2.0,
                        help="arrival rate over round-robin's saturated rate (default 2)")
    parser.add_argument("--max-prompt", type=int, default=4096)
    parser.add_argument("--max-output", type=int, default=128)
    parser.add_argument("--predictor", default="prompt-survival", help="predictor spec (default prompt-survival)")
    parser.add_argument("--policies", default="vllm,jsq-tokens,bfio",
                        help="comma-separated policy specs without commas of their own; the first is the "
                             "reference of the ratios (default vllm,jsq-tokens,bfio)")
    parser.add_argument("--seed", type=int, default=0)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    if args.samples < 1 or args.requests < 1 or args.ranks < 1 or args.slots < 1 or args.overload <= 0:
        parser.error("--samples, --requests, --ranks and --slots must be positive, and --overload above 0")
    specs = [s.strip() for s in args.policies.split(",") if s.strip()]
    if not specs:
        parser.error("--policies is empty")
    for spec in specs:
        try:
            make_policy(spec)
        except (TypeError, ValueError) as error:
            parser.error(f"--policies: {error}")
    [(name, workload)] = workloads(True, 0.0, args.seed)      # the quick replay's: BurstGPT, or its stand-in
    if args.requests > len(workload):
        parser.error(f"--requests {args.requests} is more than the {len(workload)} requests of {name}")
    started = time.perf_counter()
    rows = []
    for index in range(args.samples):
        prompts, outputs = sample(workload, args, index)
        rate = args.overload * saturated_rate(name, prompts, outputs, args)
        gaps = np.random.default_rng([args.seed, index, 1]).exponential(1.0 / rate, size=args.requests)
        arrivals = np.cumsum(gaps) - gaps[0]
        timed = Workload(f"{name}[{index}]", prompts, outputs, arrivals)
        for spec in specs:
            row = run(timed, spec, args, bounds=spec.startswith("bfio"))
            row.update(workload=name, sample=index, rate_rps=rate, predictor=args.predictor, overload=args.overload)
            rows.append(row)
    reference = specs[0]
    by = {(r["sample"], r["policy"]): r for r in rows}
    for r in rows:
        base = by[r["sample"], reference]["idle_fraction"]
        r["idle_ratio"] = r["idle_fraction"] / base if base and math.isfinite(base) else float("nan")
        for key in ("idle_floor", "idle_rearranged"):
            if key in r:
                r[f"{key}_ratio"] = r[key] / base if base and math.isfinite(base) else float("nan")
    columns = [("sample", "sample", "{}"), ("policy", "policy", "{}"), ("idle_fraction", "idle", "{:.2%}"),
               ("idle_ratio", f"/ {reference}", "{:.3f}"), ("idle_floor", "floor", "{:.2%}"),
               ("idle_floor_ratio", f"floor / {reference}", "{:.3f}"), ("idle_rearranged", "rearranged", "{:.2%}"),
               ("throughput_tok_s", "tok/s", "{:,.0f}"), ("tpot_p99_s", "TPOT p99 s", "{:.4f}"),
               ("completed", "completed", "{}")]
    print_table(rows, columns, f"{name}, {args.ranks} ranks x {args.slots} slots, {args.requests} requests a sample "
                               f"at {args.overload:g}x the saturated rate, predictor {args.predictor}")
    for spec in specs[1:]:
        # A policy that keeps up leaves no request waiting: no idle "while requests waited", no ratio.
        ratios = [r["idle_ratio"] for r in rows if r["policy"] == spec and math.isfinite(r["idle_ratio"])]
        unmeasured = sum(r["policy"] == spec for r in rows) - len(ratios)
        if not ratios:
            print(f"{spec}: no sample with requests waiting under both it and {reference}")
            continue
        line = (f"{spec} idle / {reference} idle over {len(ratios)} samples: median {statistics.median(ratios):.3f}, "
                f"best {min(ratios):.3f}, worst {max(ratios):.3f}, at most 0.5 in {sum(x <= 0.5 for x in ratios)}"
                + (f" ({unmeasured} more with no request waiting under one of them)" if unmeasured else ""))
        floors = [r["idle_floor_ratio"] for r in rows
                  if r["policy"] == spec and math.isfinite(r.get("idle_floor_ratio", math.nan))]
        if floors:
            line += (f"; its resident requests' floor over {reference}'s idle is above 0.5 in "
                     f"{sum(x > 0.5 for x in floors)} of {len(floors)}")
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
