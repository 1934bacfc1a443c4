"""Energy saved by BF-IO against FCFS and JSQ under both power models and both step-time models.

In the pool (overloaded) regime the placements do not depend on the clock, so each
policy is simulated once with its per-step loads recorded, and every energy model
prices the same steps (:func:`barrierlb.energy.step_cost`, the function the simulator
calls); a row therefore equals ``barrierlb compare`` with the flags printed beside it.
In the trace regime arrivals depend on the clock, so every model runs its own
``barrierlb compare`` (in this process, through :func:`barrierlb.cli.main`).

    python benchmarks/energy.py --json energy.json                 # the docs/energy.md tables
    python benchmarks/energy.py --sweep-only --workers 8,32,128    # the G sweep alone
    python benchmarks/energy.py --quick                            # a small smoke run

Traces are read from ../shared/data (the project's test data); rows whose trace is
missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.cli import build_parser, energy_models  # noqa: E402
from barrierlb.cli import main as cli_main
from barrierlb.energy import AbsolutePowerModel, StepTimeModel, step_cost  # noqa: E402
from barrierlb.hardware import accelerator_preset  # noqa: E402
from barrierlb.policies.bfio import LLM_DECODE, LLM_DECODE_SHORT  # noqa: E402
from barrierlb.simulator import SimulationConfig, Simulator  # noqa: E402
from barrierlb.workloads import load_workload  # noqa: E402

#: Energy models by label: the ``barrierlb compare`` flags that select them.
MODELS: dict[str, list[str]] = {
    "relative, linear (paper)": [],
    "absolute, linear": ["--power", "absolute"],
    "absolute, linear, spin 400 W": ["--power", "absolute", "--wait-w", "400"],
    "relative, roofline H200 DSV3": ["--step-time", "roofline", "--accelerator", "h200"],
    "absolute, roofline H200 DSV3": ["--power", "absolute", "--step-time", "roofline", "--accelerator", "h200"],
    "absolute, roofline H200 DSV3, spin 700 W": ["--power", "absolute", "--step-time", "roofline",
                                                 "--accelerator", "h200", "--wait-w", "700"],
    "absolute, roofline H200 Llama-70B TP4": ["--power", "absolute", "--step-time", "roofline",
                                              "--accelerator", "h200", "--model", "llama-3-70b"],
}
TRACE_MODELS = ["relative, linear (paper)", "absolute, linear", "absolute, roofline H200 DSV3",
                "absolute, roofline H200 Llama-70B TP4"]


@dataclass(frozen=True)
class RecordingLinear(StepTimeModel):
    """The paper's linear model that also keeps every step's loads, tokens and liveness."""

    log: list = field(default_factory=list, compare=False, repr=False)

    def busy_s(self, loads, tokens, alive):
        self.log.append((np.array(loads, dtype=np.float64), np.array(tokens, dtype=np.int32), np.array(alive)))
        return super().busy_s(loads, tokens, alive)


def _models_for(argv_tail: list[str], slots: int):
    args = build_parser().parse_args(["compare", "--slots", str(slots), *argv_tail])
    return energy_models(args)


def price(log, window: int, step_time, power) -> dict:
    """Energy per token, throughput and average power of the first ``window`` recorded steps."""
    energy = duration = tokens = 0.0
    for loads, step_tokens, alive in log[:window]:
        seconds, joules = step_cost(step_time, power, loads, step_tokens, alive)
        energy += joules
        duration += seconds
        tokens += float(step_tokens[alive].sum())
    return {"energy_per_token_j": energy / tokens, "throughput_tok_s": tokens / duration,
            "average_power_w": energy / duration}


def pool_rows(label: str, spec: str, n_requests: int | None, workers: int, slots: int, pool: int,
              policies: list[str]) -> list[dict]:
    """One simulation per policy, priced under every model in :data:`MODELS`."""
    workload = load_workload(spec, n_requests=n_requests, seed=0)
    chip = accelerator_preset("paper")
    priced = {}
    for policy in policies:
        recorder = RecordingLinear(**{k: getattr(StepTimeModel.paper(slots), k) for k in ("overhead_s", "per_unit_s")})
        config = SimulationConfig(n_workers=workers, slots=slots, pool=pool, step_time=recorder,
                                  power=AbsolutePowerModel.for_worker(chip))
        result = Simulator(workload, make_policy(policy), config=config, policy_name=policy).run()
        window = result.metrics.window_steps
        for model, flags in MODELS.items():
            priced[policy, model] = dict(price(recorder.log, window, *_models_for(flags, slots)),
                                         idle_fraction=result.metrics.idle_fraction)
            if model == "absolute, linear":     # the model the simulation itself ran (sums in another order)
                if not np.isclose(priced[policy, model]["energy_per_token_j"], result.metrics.energy_per_token_j,
                                  rtol=1e-9, atol=0.0):
                    raise RuntimeError(f"re-pricing disagrees with the simulation for {label} / {policy}")
        recorder.log.clear()
    base = ["--workload", spec, "--workers", str(workers), "--slots", str(slots), "--pool", str(pool)]
    if n_requests is not None:
        base += ["--requests", str(n_requests)]
    return [_row(label, "pool", workers, model, priced, policies, base + flags) for model, flags in MODELS.items()]


def _row(label, regime, workers, model, priced, policies, argv) -> dict:
    fcfs, jsq, bfio = (priced[p, model] for p in policies)
    return {"workload": label, "regime": regime, "workers": workers, "model": model,
            "fcfs_j_per_token": fcfs["energy_per_token_j"], "jsq_j_per_token": jsq["energy_per_token_j"],
            "bfio_j_per_token": bfio["energy_per_token_j"], "bfio_policy": policies[2],
            "saved_vs_fcfs": 1 - bfio["energy_per_token_j"] / fcfs["energy_per_token_j"],
            "saved_vs_jsq": 1 - bfio["energy_per_token_j"] / jsq["energy_per_token_j"],
            "bfio_power_w": bfio["average_power_w"], "fcfs_power_w": fcfs["average_power_w"],
            "fcfs_idle": fcfs.get("idle_fraction"), "bfio_idle": bfio.get("idle_fraction"),
            "command": "barrierlb compare " + " ".join(_quote(a) for a in argv) + _policies_flag(policies)}


def _policies_flag(policies: list[str]) -> str:
    """No flag where ``compare``'s default list holds these policies (its preset is the last row)."""
    if policies[:2] == ["fcfs", "jsq-tokens"] and policies[2] in (LLM_DECODE, LLM_DECODE_SHORT):
        return ""
    return f" --policies '{';'.join(policies)}'"


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ";, ") else arg


def trace_rows(label: str, spec: str, workers: int, slots: int, rate_scale: float, policies: list[str]) -> list[dict]:
    """Trace arrivals: one ``barrierlb compare`` per model, run in this process."""
    rows = []
    base = ["--workload", spec, "--arrivals", "trace", "--rate-scale", f"{rate_scale:g}", "--workers", str(workers),
            "--slots", str(slots)]
    with tempfile.TemporaryDirectory() as tmp:
        for model in TRACE_MODELS:
            out = Path(tmp) / "r.json"
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli_main(["compare", *base, *MODELS[model], "--policies", ";".join(policies), "--no-progress",
                                 "--json", str(out), "--force"])          # one file, rewritten per model
            if code != 0:
                raise SystemExit(f"barrierlb compare failed for {label} / {model}")
            results = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
            priced = {(p, model): results[p] for p in policies}
            rows.append(_row(label, f"trace x{rate_scale:g}", workers, model, priced, policies, base + MODELS[model]))
    return rows


COLUMNS = [("workload", "workload", "{}"), ("regime", "regime", "{}"), ("workers", "G", "{}"),
           ("model", "power, step time", "{}"), ("fcfs_j_per_token", "FCFS J/tok", "{:.4f}"),
           ("jsq_j_per_token", "JSQ J/tok", "{:.4f}"), ("bfio_j_per_token", "BF-IO J/tok", "{:.4f}"),
           ("saved_vs_fcfs", "saved vs FCFS", "{:+.1%}"), ("saved_vs_jsq", "saved vs JSQ", "{:+.1%}"),
           ("bfio_power_w", "BF-IO avg W", "{:,.0f}"), ("fcfs_idle", "FCFS idle", "{:.1%}"),
           ("bfio_idle", "BF-IO idle", "{:.1%}")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads and G, a smoke run")
    parser.add_argument("--sweep-only", action="store_true", help="only the G sweep")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--workers", default="8,32,128,512,1024", help="G values of the sweep")
    parser.add_argument("--sweep-turnovers", type=float, default=2.0,
                        help="sweep requests: this many times G x B (at least 20,000; default 2)")
    parser.add_argument("--sweep-pool-cap", type=int, default=256,
                        help="sweep pool R = min(4G, this) (default 256: the greedy's fill decisions grow "
                             "with R squared times G)")
    parser.add_argument("--rates", default="50,400", help="trace regime rate scales (default 50,400)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    rows: list[dict] = []
    quick = args.quick
    n = 2000 if quick else 20000
    if not args.sweep_only:
        traces = {"burstgpt": DATA / "burstgpt_sample_8000.json", "azure-code": DATA / "azure_llm_2023_code.csv"}
        workloads = [("synthetic", "synthetic", n, LLM_DECODE)]
        for name, path in traces.items():
            if path.exists():
                kind = "burstgpt" if name == "burstgpt" else "azure"
                workloads.append((name, f"{kind}:../shared/data/{path.name}", n if name == "burstgpt" else None,
                                  LLM_DECODE_SHORT))
            else:
                print(f"skipping {name}: {path} not found (the project's test data)")
        g, b, r = (8, 16, 32) if quick else (32, 72, 128)
        for label, spec, count, preset in workloads:
            spec_path = spec if not spec.startswith(("burstgpt:", "azure:")) else \
                spec.split(":", 1)[0] + ":" + str(DATA / Path(spec.split(":", 1)[1]).name)
            new = pool_rows(label, spec_path, count, g, b, r, ["fcfs", "jsq-tokens", preset])
            for row in new:     # print the user's spelling of the path, not this process's
                row["command"] = row["command"].replace(spec_path, spec)
            rows += new
            print_table(new, COLUMNS, f"{label}: pool regime, G={g} B={b} R={r}")
        if traces["azure-code"].exists():
            spec = f"azure:{traces['azure-code']}"
            for rate in [float(x) for x in args.rates.split(",")]:
                new = trace_rows("azure-code", spec, 8, 32, rate, ["fcfs", "jsq-tokens", LLM_DECODE_SHORT])
                for row in new:
                    row["command"] = row["command"].replace(spec, "azure:../shared/data/azure_llm_2023_code.csv")
                rows += new
                print_table(new, COLUMNS, f"azure-code: trace regime x{rate:g}, G=8 B=32 R=128")
    if not args.skip_sweep:
        sweep = []
        for g in [int(x) for x in args.workers.split(",")] if not quick else [4, 8]:
            count = max(n, int(args.sweep_turnovers * g * 72)) if not quick else 2000
            pool = min(4 * g, args.sweep_pool_cap)
            started = time.perf_counter()
            new = pool_rows("synthetic", "synthetic", count, g, 72, pool, ["fcfs", "jsq-tokens", "bfio:horizon=0"])
            for row in new:
                row.update(requests=count, pool=pool)
            sweep += new
            print_table(new, COLUMNS, f"G sweep: synthetic, pool regime, G={g} B=72 R={pool}, {count:,} requests "
                                      f"({time.perf_counter() - started:.0f} s)")
        rows += sweep
    for row in rows:
        print(f"{row['workload']} / {row['regime']} / G={row['workers']} / {row['model']}: {row['command']}")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
