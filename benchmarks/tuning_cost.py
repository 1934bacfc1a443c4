"""What plain ``bfio``'s online controller costs a decision, beside the decision itself.

Runs plain ``bfio`` on one workload (G=32, B=72, R=128, oracle lengths), keeps the
slots each decision saw, then replays them through a fresh
:class:`~barrierlb.policies.bfio.OnlineTuning` (``update``: the lifetime observer, its
Kaplan-Meier estimate every 32nd decision, the options) and times it per decision,
``--repeats`` times in turn. Prints the controller's median and p99 microseconds a
decision, the run's decision p50 and p99, and the controller's share of the p50; and
checks that the replay chose the options the run chose, decision by decision.

    python benchmarks/tuning_cost.py --workload burstgpt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import DATA, add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.policies.bfio import OnlineTuning  # noqa: E402
from barrierlb.predictors import make_predictor  # noqa: E402
from barrierlb.simulator import SimulationConfig, Simulator  # noqa: E402
from barrierlb.workloads import load_workload  # noqa: E402

SPECS = {"synthetic": "synthetic", "burstgpt": f"burstgpt:{DATA / 'burstgpt_sample_8000.json'}",
         "long-context": "long-context"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(SPECS), default="burstgpt")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    workload = load_workload(SPECS[args.workload], n_requests=args.requests, seed=0)
    policy = make_policy("bfio")
    seen, chosen = [], []
    decide = policy.decide

    def recording(state):
        # What update() reads, copied: the ledger changes in place after the decision.
        seen.append(SimpleNamespace(_slot_id=state._slot_id.copy(), _slot_age=state._slot_age.copy(),
                                    free_slots=state.free_slots, n_waiting=state.n_waiting))
        decision = decide(state)
        chosen.append(decision.info["tuning"])
        return decision

    policy.decide = recording
    result = Simulator(workload, policy, config=SimulationConfig(n_workers=32, slots=72, pool=128),
                       predictor=make_predictor("oracle", workload.output_tokens)).run()
    rows = []
    for repeat in range(args.repeats):
        tuning, times, replayed = OnlineTuning(), np.empty(len(seen)), []
        for i, state in enumerate(seen):
            started = time.perf_counter()
            replayed.append(tuning.update(state))
            times[i] = time.perf_counter() - started
        if replayed != chosen:
            raise SystemExit("the replay chose other options than the run: the controller is not deterministic")
        m = result.metrics
        rows.append(dict(workload=args.workload, repeat=repeat, decisions=len(seen),
                         update_us_p50=float(np.percentile(times, 50) * 1e6),
                         update_us_p99=float(np.percentile(times, 99) * 1e6),
                         decision_ms_p50=m.decision_ms_p50, decision_ms_p99=m.decision_ms_p99,
                         share_of_p50=float(np.percentile(times, 50) * 1e3 / m.decision_ms_p50)))
    print_table(rows, [("repeat", "repeat", "{}"), ("decisions", "decisions", "{:,}"),
                       ("update_us_p50", "update p50 us", "{:.1f}"), ("update_us_p99", "update p99 us", "{:.1f}"),
                       ("decision_ms_p50", "decide p50 ms", "{:.3f}"), ("decision_ms_p99", "decide p99 ms", "{:.3f}"),
                       ("share_of_p50", "share of p50", "{:.1%}")],
                f"plain bfio's controller on {args.workload}: G=32 B=72 R=128, {args.requests:,} requests")
    write_json(args.json, {"rows": rows}, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
