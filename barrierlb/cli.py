"""Command line: ``barrierlb compare`` (the main job), ``barrierlb simulate``, ``barrierlb policies``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from barrierlb.energy import POWER_PRESETS, power_preset
from barrierlb.policies import available_policies, make_policy
from barrierlb.policies.bfio import (LLM_DECODE, LLM_DECODE_NO_ORACLE, LLM_DECODE_SHORT, SHORT_OUTPUT_TOKENS,
                                    decode_preset)
from barrierlb.predictors import make_predictor
from barrierlb.simulator import SimulationConfig, SimulationResult, Simulator
from barrierlb.workloads import WorkloadError, load_workload

#: ``--policies`` default; ``{decode}`` becomes the BF-IO preset for the workload's
#: mean output length (:func:`barrierlb.policies.bfio.decode_preset`).
DEFAULT_POLICIES = "fcfs;jsq-tokens;bfio:horizon=0;{decode}"


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="synthetic",
                        help="synthetic | burstgpt:PATH | azure:PATH | mooncake:PATH | csv:PATH (default synthetic)")
    parser.add_argument("--requests", type=_positive_int, default=None,
                        help="requests to simulate (default 20000 for synthetic, else the whole trace)")
    parser.add_argument("--workers", type=_positive_int, default=32, help="data-parallel workers G (default 32)")
    parser.add_argument("--slots", type=_positive_int, default=72, help="batch slots per worker B (default 72)")
    parser.add_argument("--pool", type=_positive_int, default=128, help="visible waiting requests R (default 128)")
    parser.add_argument("--horizon", type=_nonnegative_int, default=None,
                        help="lookahead H for bfio/greedy policies that do not set their own")
    parser.add_argument("--predictor", default="oracle",
                        help="oracle | noisy[:SIGMA] | survival[:QUANTILE] | scenarios[:DRAWS] | none (default oracle)")
    parser.add_argument("--arrivals", choices=("pool", "trace"), default="pool",
                        help="pool: overloaded, always R waiting (default); trace: the trace's timestamps")
    parser.add_argument("--rate-scale", type=_positive_float, default=1.0,
                        help="trace arrivals this many times faster than recorded (default 1)")
    parser.add_argument("--power", default="paper", help=f"power preset: {', '.join(POWER_PRESETS)} (default paper)")
    parser.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the workload and seeded policies")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="barrierlb",
                                     description="Balance barrier-synchronized workers with BF-IO.")
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="compare policies on a workload (the main job)",
                             description="Simulate barrier-synchronized decode under each policy and print a "
                                         "table with every policy as a ratio to the first. With no arguments: the "
                                         "paper's setup (G=32, B=72, R=128) on 20,000 synthetic requests.")
    _add_common(compare)
    compare.add_argument("--policies", default=None,
                         help=f"list separated by ';' or ',' of policy specs, options after ':' "
                              f"(default {DEFAULT_POLICIES!r}, where {{decode}} is {LLM_DECODE!r}, or "
                              f"{LLM_DECODE_SHORT!r} when the workload's mean output is under "
                              f"{SHORT_OUTPUT_TOKENS} tokens; with --predictor scenarios on longer outputs, "
                              f"{LLM_DECODE_NO_ORACLE!r}); "
                              f"known: {', '.join(available_policies())}")
    compare.add_argument("--json", metavar="PATH", help="write config and results as JSON")
    compare.add_argument("--plot", metavar="PATH", help="write a PNG of per-worker load and idle per policy")
    simulate = sub.add_parser("simulate", help="simulate one policy; optionally dump per-step loads as CSV")
    _add_common(simulate)
    simulate.add_argument("--policy", default="bfio", help="policy spec (default bfio)")
    simulate.add_argument("--csv", metavar="PATH", help="write per-step, per-worker loads as CSV")
    simulate.add_argument("--json", metavar="PATH", help="write config and result as JSON")
    sub.add_parser("policies", help="list the registered policies")
    from barrierlb.serving.cli import add_arguments as add_serve_arguments   # argparse only: no aiohttp import
    add_serve_arguments(sub.add_parser("serve", help="OpenAI-compatible BF-IO router in front of data-parallel "
                                                     "engine ranks (needs barrierlb[serve])"))
    return parser


def split_policies(text: str) -> list[str]:
    """Split ``"fcfs,bfio:horizon=0,gamma=0.9,jsq"`` into policy specs.

    A comma starts a new spec unless what follows looks like ``key=value``
    (an option of the previous spec). ``;`` always separates.
    """
    specs: list[str] = []
    for chunk in text.split(";"):
        for part in chunk.split(","):
            part = part.strip()
            if not part:
                continue
            if specs and "=" in part and ":" not in part.split("=")[0] and specs[-1].count(":") == 1 \
                    and not specs[-1].endswith(";"):
                specs[-1] += "," + part
            else:
                specs.append(part)
        if specs:
            specs[-1] += ";"
    specs = [s.rstrip(";") for s in specs]
    if not specs:
        raise CLIError("no policies given")
    return specs


def _policy(spec: str, args):
    defaults = {"seed": args.seed} if args.horizon is None else {"seed": args.seed, "horizon": args.horizon}
    try:
        return make_policy(spec, defaults=defaults)
    except (TypeError, ValueError) as error:
        raise CLIError(str(error)) from None


def _config(args, record_loads: bool) -> SimulationConfig:
    try:
        return SimulationConfig(n_workers=args.workers, slots=args.slots, pool=args.pool, arrivals=args.arrivals,
                                rate_scale=args.rate_scale, power=power_preset(args.power),
                                record_loads=record_loads)
    except (TypeError, ValueError) as error:
        raise CLIError(str(error)) from None


def _progress_factory(enabled: bool, width: int = 28):
    """A context manager yielding ``advance(label, done, total)``; rich if installed, else plain lines."""
    import contextlib

    if not enabled:
        @contextlib.contextmanager
        def silent():
            yield lambda label, done, total: None
        return silent
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        @contextlib.contextmanager
        def plain():
            last = {}

            def advance(label, done, total):
                step = int(10 * done / max(total, 1))
                if last.get(label) != step:
                    last[label] = step
                    print(f"  {label}: {done}/{total} requests", file=sys.stderr, flush=True)
            yield advance
        return plain

    @contextlib.contextmanager
    def fancy():
        with Progress(TextColumn("{task.description:<%d}" % width), BarColumn(), MofNCompleteColumn(),
                      TextColumn("requests"), TimeElapsedColumn(), transient=False) as progress:
            tasks = {}

            def advance(label, done, total):
                if label not in tasks:
                    tasks[label] = progress.add_task(label, total=total)
                progress.update(tasks[label], completed=done)
            yield advance
    return fancy


def _run(workload, specs, args, *, record_loads: bool) -> list[tuple[str, SimulationResult]]:
    config = _config(args, record_loads)
    policies = [(spec, _policy(spec, args)) for spec in specs]
    try:
        # Build every predictor before the first run so a bad spec fails fast.
        make_predictor(args.predictor, workload.output_tokens, seed=args.seed)
    except ValueError as error:
        raise CLIError(str(error)) from None
    results = []
    with _progress_factory(not args.no_progress, max(len(spec) for spec, _ in policies))() as advance:
        for spec, policy in policies:
            predictor = make_predictor(args.predictor, workload.output_tokens, seed=args.seed)
            try:
                simulator = Simulator(workload, policy, config=config, predictor=predictor, policy_name=spec)
            except ValueError as error:
                raise CLIError(str(error)) from None
            result = simulator.run(progress=lambda done, total, spec=spec: advance(spec, done, total))
            results.append((spec, result))
    return results


def _load(args):
    try:
        return load_workload(args.workload, n_requests=args.requests, seed=args.seed)
    except WorkloadError as error:
        raise CLIError(str(error)) from None
    except OSError as error:
        raise CLIError(f"cannot read workload: {error}") from None


_COLUMNS = [("idle_fraction", "idle", "{:.2%}"), ("avg_imbalance", "imbalance", "{:,.0f}"),
            ("throughput_tok_s", "tok/s", "{:,.0f}"), ("tpot_mean_s", "TPOT ms", "{:.2f}"),
            ("energy_per_token_j", "J/tok", "{:.4f}")]
_RATIOS = [("throughput_tok_s", "tput"), ("energy_per_token_j", "J/tok")]


def _table_rows(results):
    base = results[0][1].metrics.as_dict()
    rows = []
    for spec, result in results:
        m = result.metrics.as_dict()
        cells = [spec] + [fmt.format(m[key] * (1e3 if key == "tpot_mean_s" else 1)) for key, _, fmt in _COLUMNS]
        cells += [f"{m[key] / base[key]:.3f}x" if base[key] else "-" for key, _ in _RATIOS]
        cells.append(f"{m['decision_ms_p50']:.2f} / {m['decision_ms_p99']:.2f}")
        rows.append(cells)
    header = (["policy"] + [title for _, title, _ in _COLUMNS] + [f"{title} vs 1st" for _, title in _RATIOS]
              + ["decide ms p50/p99"])
    return header, rows


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    """Right-aligned fixed-width text table of string cells (no dependencies)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header, *rows])


def print_table(results, workload_name: str) -> None:
    header, rows = _table_rows(results)
    title = f"{workload_name}: {len(results)} policies"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(plain_table(header, rows))
        return
    table = Table(title=title, caption=f"ratios vs {results[0][0]}; all metrics: --json")
    for i, h in enumerate(header):
        if i == 0:      # long policy strings fold; the numbers are never cut
            table.add_column(h, justify="left", overflow="fold")
        else:
            table.add_column(h, justify="right", no_wrap=True, min_width=max(len(r[i]) for r in rows))
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def _config_dict(args, workload) -> dict:
    return {"workload": args.workload, "workload_name": workload.name, "requests": len(workload),
            "zero_output_rows": workload.zero_output_rows, "workers": args.workers, "slots": args.slots,
            "pool": args.pool, "horizon": args.horizon, "predictor": args.predictor, "arrivals": args.arrivals,
            "rate_scale": args.rate_scale, "power": args.power, "seed": args.seed}


def _result_dict(spec: str, result: SimulationResult) -> dict:
    out = {"policy": spec}
    out.update(result.metrics.as_dict())
    out["decisions"] = result.decisions
    out["truncated"] = result.truncated
    return out


def _write_json(path: str, payload: dict) -> None:
    try:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error}") from None


def default_policies(workload, predictor: str = "oracle") -> str:
    """:data:`DEFAULT_POLICIES` with the BF-IO preset that suits ``workload``'s output lengths
    and the predictor (sampled futures: ``LLM_DECODE_NO_ORACLE`` on long outputs)."""
    mean_output = float(workload.output_tokens.mean()) if len(workload) else 0.0
    return DEFAULT_POLICIES.format(decode=decode_preset(mean_output, scenarios=predictor.startswith("scenarios")))


def cmd_compare(args) -> int:
    workload = _load(args)
    specs = split_policies(args.policies if args.policies is not None else default_policies(workload, args.predictor))
    started = time.perf_counter()
    results = _run(workload, specs, args, record_loads=bool(args.plot))
    print_table(results, workload.name)
    print(f"simulated {len(workload):,} requests x {len(results)} policies in {time.perf_counter() - started:.1f} s")
    if args.json:
        _write_json(args.json, {"config": _config_dict(args, workload),
                                "results": [_result_dict(spec, r) for spec, r in results]})
    if args.plot:
        from barrierlb.plots import plot_loads

        try:
            plot_loads([r for _, r in results], args.plot)
        except (RuntimeError, OSError) as error:
            raise CLIError(str(error)) from None
    return 0


def cmd_simulate(args) -> int:
    workload = _load(args)
    [(spec, result)] = _run(workload, [args.policy], args, record_loads=bool(args.csv))
    print_table([(spec, result)], workload.name)
    if args.csv:
        try:
            with open(args.csv, "w") as handle:
                handle.write("step,step_time_s," + ",".join(f"worker_{g}" for g in range(args.workers)) + "\n")
                for k, (duration, loads) in enumerate(zip(result.step_time_s, result.loads)):
                    handle.write(f"{k},{duration:.9g}," + ",".join(f"{v:.0f}" for v in loads) + "\n")
        except OSError as error:
            raise CLIError(f"cannot write {args.csv}: {error}") from None
    if args.json:
        _write_json(args.json, {"config": _config_dict(args, workload), "results": [_result_dict(spec, result)]})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "policies":
            print("\n".join(available_policies()))
            return 0
        if args.command == "serve":
            from barrierlb.serving.cli import run as run_serve
            return run_serve(args)
        return {"compare": cmd_compare, "simulate": cmd_simulate}[args.command](args)
    except CLIError as error:
        print(f"barrierlb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("barrierlb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
