"""Command line: ``barrierlb compare`` (the main job), ``barrierlb simulate``, ``barrierlb policies``,
``barrierlb presets``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from barrierlb.energy import (
    POWER_PRESETS,
    AbsolutePowerModel,
    RooflineStepTime,
    StepTimeModel,
    average_power_w,
    power_preset,
    relative_power,
)
from barrierlb.hardware import ACCELERATOR_PRESETS, MODEL_PRESETS, accelerator_preset, model_preset
from barrierlb.outputs import finite, output_file
from barrierlb.policies import available_policies, make_policy
from barrierlb.policies.bfio import (
    LLM_DECODE,
    LLM_DECODE_NO_ORACLE,
    LLM_DECODE_SHORT,
    SHORT_OUTPUT_TOKENS,
)
from barrierlb.predictors import make_predictor
from barrierlb.simulator import DEFAULT_MAX_STEPS, SimulationConfig, SimulationResult, Simulator
from barrierlb.workloads import MAX_REQUESTS, WorkloadError, load_workload, trace_path

#: ``--policies`` default: plain ``bfio`` tunes itself online (issue 15), so the list does
#: not depend on the workload's statistics. With sampled futures (``--predictor
#: scenarios:K``) the no-oracle preset is added (:func:`default_policies`).
DEFAULT_POLICIES = "fcfs;jsq-tokens;bfio:horizon=0;bfio"


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""


@contextlib.contextmanager
def _user_errors(*kinds: type[Exception], prefix: str = ""):
    """Re-raise the ``kinds`` of error (default ``TypeError``, ``ValueError``) as :class:`CLIError`."""
    try:
        yield
    except tuple(kinds or (TypeError, ValueError)) as error:
        raise CLIError(f"{prefix}{error}") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block), exit status 2.

    Subcommands' parsers are of this class too (``add_subparsers`` uses the parent's).
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int, what: str, maximum: int | None = None):
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum:,}, got {value:,}")
        return value
    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")
_request_count = _int_at_least(1, "positive", MAX_REQUESTS)


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
                        help="synthetic[:prompt_mean=M,prompt_std=S,output_mean=M,output_std=S,corr=C] | "
                             "long-context[:prompt_median=M,prompt_sigma=S,prompt_min=N,prompt_max=N,"
                             "output_mean=M,output_std=S,output_min=N,output_max=N] | burstgpt:PATH | "
                             "azure:PATH | mooncake:PATH | csv:PATH (default synthetic)")
    parser.add_argument("--requests", type=_request_count, default=None,
                        help=f"requests to simulate, at most {MAX_REQUESTS:,} (default 20000 for synthetic and "
                             f"long-context, else the whole trace); a shorter trace is repeated: a timed one "
                             f"back to back in its order, an untimed one sampled with replacement using --seed")
    parser.add_argument("--workers", type=_positive_int, default=32, help="data-parallel workers G (default 32)")
    parser.add_argument("--slots", type=_positive_int, default=72, help="batch slots per worker B (default 72)")
    parser.add_argument("--pool", type=_positive_int, default=128, help="visible waiting requests R (default 128)")
    parser.add_argument("--horizon", type=_nonnegative_int, default=None,
                        help="lookahead H for bfio/greedy policies that do not set their own")
    parser.add_argument("--predictor", default="oracle",
                        help="oracle | noisy[:SIGMA] | survival[:QUANTILE] | prompt-survival[:STRATA] | "
                             "scenarios[:DRAWS] | none (default oracle)")
    parser.add_argument("--arrivals", choices=("pool", "trace"), default="pool",
                        help="pool: overloaded, always R waiting (default); trace: the trace's timestamps")
    parser.add_argument("--rate-scale", type=_positive_float, default=1.0,
                        help="trace arrivals this many times faster than recorded (default 1)")
    _add_energy_flags(parser)
    parser.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the workload and seeded policies")
    parser.add_argument("--max-steps", type=_positive_int, default=DEFAULT_MAX_STEPS,
                        help=f"stop a run after this many barrier steps, an error if requests are left "
                             f"(default {DEFAULT_MAX_STEPS:,})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="overwrite output files (--json, --csv, --plot) that already exist; without it an "
                             "existing one is refused before the run")


def _add_energy_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("energy and step time (docs/energy.md; `barrierlb presets` lists the names)")
    group.add_argument("--power", default="relative",
                       help="relative: the reference code's model, utilization against the slowest worker "
                            "(default); absolute: the paper's formula, utilization against the accelerator's "
                            f"peaks. Earlier versions' preset names ({', '.join(POWER_PRESETS)}) mean relative "
                            "with that preset's powers")
    group.add_argument("--accelerator", default=None,
                       help=f"accelerator preset: {', '.join(ACCELERATOR_PRESETS)} (default paper: 100 W idle, "
                            "400 W max, A100 peaks)")
    group.add_argument("--model", default=None,
                       help=f"model preset for --step-time roofline: {', '.join(MODEL_PRESETS)} "
                            "(default deepseek-v3)")
    group.add_argument("--step-time", choices=("linear", "roofline"), default="linear",
                       help="linear: the paper's c + t_l * max L (default); roofline: each worker's FLOPs and "
                            "bytes against the accelerator's peaks")
    group.add_argument("--wait-w", type=_positive_float, default=None,
                       help="with --power absolute: power per accelerator while waiting at the barrier, for a "
                            "spin-wait (default: the accelerator's idle power)")


def energy_models(args) -> tuple:
    """``(step_time, power)`` for the energy flags; :class:`CLIError` names a bad or conflicting one."""
    legacy = args.power in POWER_PRESETS
    if args.power not in ("relative", "absolute") and not legacy:
        raise CLIError(f"--power: unknown power preset or model {args.power!r}; expected relative or absolute "
                       f"(or one of the earlier preset names {', '.join(POWER_PRESETS)})")
    if legacy and args.accelerator is not None:
        raise CLIError(f"--power {args.power} is a preset of its own; give --power relative --accelerator NAME "
                       "instead of both")
    if args.model is not None and args.step_time != "roofline":
        raise CLIError("--model needs --step-time roofline (the linear model's constants are the paper's "
                       "DeepSeek-V3-like ones)")
    if args.wait_w is not None and args.power != "absolute":
        raise CLIError("--wait-w applies to --power absolute only (the relative model has no barrier wait)")
    with _user_errors():
        chip = accelerator_preset(args.accelerator or "paper")
        model = model_preset(args.model or "deepseek-v3") if args.step_time == "roofline" else None
        if model is None:
            step_time, parallel = StepTimeModel.paper(args.slots), 1
        else:
            step_time, parallel = RooflineStepTime(chip, model), model.tensor_parallel
        if legacy:
            return step_time, power_preset(args.power)
        if args.power == "relative":
            return step_time, relative_power(chip, tensor_parallel=parallel)
        if args.wait_w is not None and not chip.idle_w <= args.wait_w <= chip.max_w:
            raise ValueError(f"--wait-w must lie between {chip.name}'s idle {chip.idle_w:g} W and max "
                             f"{chip.max_w:g} W, got {args.wait_w:g}")
        return step_time, AbsolutePowerModel.for_worker(chip, tensor_parallel=parallel, wait_w=args.wait_w)


def _energy_config(args) -> dict:
    """The energy flags as resolved, for ``--json``'s config."""
    legacy = args.power in POWER_PRESETS
    return {"power_model": "relative" if legacy else args.power,
            "accelerator": None if legacy else args.accelerator or "paper",
            "model": (args.model or "deepseek-v3") if args.step_time == "roofline" else None,
            "step_time": args.step_time, "wait_w": args.wait_w}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="barrierlb", description="Balance barrier-synchronized workers with BF-IO.")
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="compare policies on a workload (the main job)",
                             description="Simulate barrier-synchronized decode under each policy and print a "
                                         "table with every policy as a ratio to the first. With no arguments: the "
                                         "paper's setup (G=32, B=72, R=128) on 20,000 synthetic requests.")
    _add_common(compare)
    compare.add_argument("--policies", default=None,
                         help=f"list separated by ';' or ',' of policy specs, options after ':' "
                              f"(default {DEFAULT_POLICIES!r}: plain bfio tunes itself online; with "
                              f"--predictor scenarios, {LLM_DECODE_NO_ORACLE!r} is added; presets: "
                              f"{LLM_DECODE!r} for long outputs, {LLM_DECODE_SHORT!r} for outputs under "
                              f"{SHORT_OUTPUT_TOKENS} tokens); known: {', '.join(available_policies())}")
    compare.add_argument("--json", metavar="PATH", help="write config and results as JSON")
    compare.add_argument("--plot", metavar="PATH", help="write a plot of per-worker load and idle per policy "
                                                        "(.png, .pdf or .svg)")
    simulate = sub.add_parser("simulate", help="simulate one policy; optionally dump per-step loads as CSV")
    _add_common(simulate)
    simulate.add_argument("--policy", default="bfio", help="policy spec (default bfio)")
    simulate.add_argument("--csv", metavar="PATH", help="write per-step, per-worker loads as CSV")
    simulate.add_argument("--json", metavar="PATH", help="write config and result as JSON")
    sub.add_parser("policies", help="list the registered policies")
    sub.add_parser("presets", help="list the accelerator, model and power presets with their sources")
    from barrierlb.serving.cli import add_arguments as add_serve_arguments  # argparse only: no aiohttp import
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
    with _user_errors():
        return make_policy(spec, defaults=defaults)


def _config(args, record_loads: bool) -> SimulationConfig:
    step_time, power = energy_models(args)
    with _user_errors():
        return SimulationConfig(n_workers=args.workers, slots=args.slots, pool=args.pool, arrivals=args.arrivals,
                                rate_scale=args.rate_scale, step_time=step_time, power=power,
                                record_loads=record_loads, max_steps=args.max_steps)


@contextlib.contextmanager
def _progress(enabled: bool, width: int = 28):
    """Yields ``advance(label, done, total)``: a rich progress bar if installed, else plain lines."""
    if not enabled:
        yield lambda label, done, total: None
        return
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        fancy = True
    except ImportError:
        fancy = False
    if not fancy:
        last = {}

        def print_tenths(label, done, total):
            step = int(10 * done / max(total, 1))
            if last.get(label) != step:
                last[label] = step
                print(f"  {label}: {done}/{total} requests", file=sys.stderr, flush=True)
        yield print_tenths
        return
    with Progress(TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("requests"), TimeElapsedColumn(), transient=False) as progress:
        tasks = {}

        def advance(label, done, total):
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)
        yield advance


def _run(workload, specs, args, *, record_loads: bool) -> list[tuple[str, SimulationResult]]:
    config = _config(args, record_loads)
    longest = int(workload.output_tokens.argmax())
    if workload.output_tokens[longest] > args.max_steps:
        # A request takes one step per output token: this run could only end at the cap.
        raise CLIError(f"request {longest} of {workload.name} has {int(workload.output_tokens[longest]):,} output "
                       f"tokens, more than --max-steps {args.max_steps:,} steps; the run could not finish")
    policies = [(spec, _policy(spec, args)) for spec in specs]
    with _user_errors(ValueError):
        # Build every predictor before the first run so a bad spec fails fast.
        make_predictor(args.predictor, workload.output_tokens, seed=args.seed)
    results = []
    with _progress(not args.no_progress, max(len(spec) for spec, _ in policies)) as advance:
        for spec, policy in policies:
            predictor = make_predictor(args.predictor, workload.output_tokens, seed=args.seed)
            with _user_errors(ValueError):
                simulator = Simulator(workload, policy, config=config, predictor=predictor, policy_name=spec)
            result = simulator.run(progress=lambda done, total, spec=spec: advance(spec, done, total))
            if result.truncated:
                left = len(workload) - result.metrics.requests_completed
                if simulator.idle_rounds >= args.max_steps:
                    raise CLIError(f"{spec}: placed nothing in {simulator.idle_rounds:,} decisions with no request "
                                   f"running ({left:,} of {len(workload):,} requests unfinished); a policy "
                                   f"without work conservation needs a waiting bound (max_wait)")
                raise CLIError(f"{spec}: stopped at --max-steps {args.max_steps:,} with {left:,} of "
                               f"{len(workload):,} requests unfinished (longest output "
                               f"{int(workload.output_tokens.max()):,} tokens); raise --max-steps to run longer")
            results.append((spec, result))
    return results


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path (symlinks followed) or the same inode."""
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def _check_outputs(args, outputs: dict) -> None:
    """Refuse, before any simulation, output paths that would fail or destroy something.

    ``outputs`` maps a flag to its path (or None). An output may not be a
    directory, lie in a missing directory, be the input trace (compared by
    resolved path and, for existing files, by inode), or be another output;
    nor an existing file, unless ``--force``.
    """
    given = {flag: Path(path) for flag, path in outputs.items() if path}
    source = trace_path(args.workload)
    seen: dict = {}
    for flag, path in given.items():
        if path.is_dir():
            raise CLIError(f"{flag} {path}: is a directory; give a file name")
        parent = path.resolve().parent
        if not parent.is_dir():
            raise CLIError(f"{flag} {path}: directory {parent} does not exist")
        if source is not None and _same_file(path, source):
            raise CLIError(f"{flag} {path}: is the input trace {source}; refusing to overwrite it")
        for other, other_path in seen.items():
            if _same_file(path, other_path):
                raise CLIError(f"{flag} and {other} name the same file {path}")
        if path.exists() and not args.force:
            raise CLIError(f"{flag} {path}: the file exists; pass --force to overwrite it")
        seen[flag] = path
    if "--plot" in given:
        from barrierlb.plots import check_plot_path

        with _user_errors(ValueError, prefix="--plot: "):
            check_plot_path(given["--plot"])


def _load(args):
    with _user_errors(WorkloadError), _user_errors(OSError, prefix="cannot read workload: "):
        return load_workload(args.workload, n_requests=args.requests, seed=args.seed)


_COLUMNS = [("idle_fraction", "idle", "{:.2%}"), ("avg_imbalance", "imbalance", "{:,.0f}"),
            ("throughput_tok_s", "tok/s", "{:,.0f}"), ("tpot_mean_s", "TPOT ms", "{:.2f}"),
            ("energy_per_token_j", "J/tok", "{:.4f}"), ("average_power_w", "avg W", "{:,.0f}")]
_RATIOS = [("throughput_tok_s", "tput"), ("energy_per_token_j", "J/tok")]


def _table_rows(results):
    base = metrics_dict(results[0][1])
    rows = []
    for spec, result in results:
        m = metrics_dict(result)
        cells = [spec] + [fmt.format(m[key] * (1e3 if key == "tpot_mean_s" else 1)) for key, _, fmt in _COLUMNS]
        cells += [f"{m[key] / base[key]:.3f}x" if base[key] else "-" for key, _ in _RATIOS]
        cells.append(f"{m['decision_ms_p50']:.2f} / {m['decision_ms_p99']:.2f}")
        rows.append(cells)
    header = (["policy"] + [title for _, title, _ in _COLUMNS] + [f"{title} vs 1st" for _, title in _RATIOS]
              + ["decide ms p50/p99"])
    return header, rows


def metrics_dict(result: SimulationResult) -> dict:
    """The run's metrics plus ``average_power_w`` (cluster power over the measurement window)."""
    m = result.metrics.as_dict()
    m["average_power_w"] = average_power_w(m["energy_per_token_j"], m["throughput_tok_s"])
    return m


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
    table.add_column(header[0], justify="left", overflow="fold")     # long policy strings fold
    for i, h in enumerate(header[1:], start=1):                      # the numbers are never cut
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
            "rate_scale": args.rate_scale, "power": args.power, "seed": args.seed, **_energy_config(args)}


def _result_dict(spec: str, result: SimulationResult) -> dict:
    return {"policy": spec, **metrics_dict(result), "decisions": result.decisions, "truncated": result.truncated}


@contextlib.contextmanager
def _written(path: str, force: bool):
    """Yields a temporary path next to ``path``, published once the writing has finished
    (:func:`barrierlb.outputs.output_file`): a write that fails or is interrupted leaves no
    partial file; ``--force`` replaces the file at once; without it a file that appeared at
    ``path`` during the run is left as it was and the output goes to ``PATH.1``, said on stderr."""
    with output_file(path, force=force) as out:
        yield out.partial
    if out.moved_aside:
        print(f"barrierlb: {out.note()}", file=sys.stderr)


def _write_json(path: str, payload: dict, force: bool) -> None:
    """Write ``payload`` as standard JSON: a metric that is not a number (NaN, e.g. TPOT when no
    request decoded two tokens) or infinite is written as ``null``, which every parser reads."""
    with _user_errors(OSError, prefix=f"cannot write {path}: "), _written(path, force) as partial:
        partial.write_text(json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def default_policies(workload, predictor: str = "oracle") -> str:
    """:data:`DEFAULT_POLICIES`, plus ``LLM_DECODE_NO_ORACLE`` for sampled futures (``scenarios``).

    ``workload`` is not read: plain ``bfio`` learns the traffic as it runs."""
    return DEFAULT_POLICIES + (f";{LLM_DECODE_NO_ORACLE}" if predictor.startswith("scenarios") else "")


def cmd_compare(args) -> int:
    _check_outputs(args, {"--json": args.json, "--plot": args.plot})
    workload = _load(args)
    specs = split_policies(args.policies if args.policies is not None else default_policies(workload, args.predictor))
    started = time.perf_counter()
    results = _run(workload, specs, args, record_loads=bool(args.plot))
    print_table(results, workload.name)
    print(f"simulated {len(workload):,} requests x {len(results)} policies in {time.perf_counter() - started:.1f} s")
    if args.json:
        _write_json(args.json, {"config": _config_dict(args, workload),
                                "results": [_result_dict(spec, r) for spec, r in results]}, args.force)
    if args.plot:
        from barrierlb.plots import plot_loads

        with _user_errors(RuntimeError, OSError, ValueError), _written(args.plot, args.force) as partial:
            plot_loads([r for _, r in results], partial)
    return 0


def cmd_simulate(args) -> int:
    _check_outputs(args, {"--csv": args.csv, "--json": args.json})
    workload = _load(args)
    [(spec, result)] = _run(workload, [args.policy], args, record_loads=bool(args.csv))
    print_table([(spec, result)], workload.name)
    if args.csv:
        with _user_errors(OSError, prefix=f"cannot write {args.csv}: "), _written(args.csv, args.force) as partial, \
                open(partial, "w") as handle:
            handle.write("step,step_time_s," + ",".join(f"worker_{g}" for g in range(args.workers)) + "\n")
            for k, (duration, loads) in enumerate(zip(result.step_time_s, result.loads)):
                handle.write(f"{k},{duration:.9g}," + ",".join(f"{v:.0f}" for v in loads) + "\n")
    if args.json:
        _write_json(args.json, {"config": _config_dict(args, workload), "results": [_result_dict(spec, result)]},
                    args.force)
    return 0


def cmd_presets(args) -> int:
    """Print the accelerator, model and power presets, each with its source."""
    chips = [[c.name, f"{c.peak_bf16_flops / 1e12:,.1f}",
              "-" if c.peak_fp8_flops is None else f"{c.peak_fp8_flops / 1e12:,.1f}", f"{c.hbm_bytes_s / 1e12:.3g}",
              f"{c.hbm_bytes / 1e9:.0f}", f"{c.idle_w:g}", f"{c.max_w:g}"] for c in ACCELERATOR_PRESETS.values()]
    print("accelerators (--accelerator; dense peaks)")
    print(plain_table(["name", "BF16 TFLOP/s", "FP8 TFLOP/s", "HBM TB/s", "HBM GB", "idle W", "max W"], chips))
    models = [[m.name, f"{m.total_params / 1e9:.1f}", f"{m.active_params / 1e9:.1f}", str(m.n_layers),
               f"{m.kv_bytes_per_token:,.0f}", f"{m.attention_flops_per_token / 1e6:.2f}",
               f"{m.weight_bytes_per_param:g}", str(m.tensor_parallel)] for m in MODEL_PRESETS.values()]
    print("\nmodels (--model, with --step-time roofline)")
    print(plain_table(["name", "params B", "active B", "layers", "KV B/token", "attn MFLOP/token", "weight B",
                       "accelerators/worker"], models))
    print("\npower presets of earlier versions (--power NAME: the relative model with these powers)")
    rows = [[name, f"{p.idle_w:g}", f"{p.max_w:g}", f"{p.exponent:g}"] for name, p in POWER_PRESETS.items()]
    print(plain_table(["name", "idle W", "max W", "exponent"], rows))
    print("\nsources")
    for preset in [*ACCELERATOR_PRESETS.values(), *MODEL_PRESETS.values()]:
        print(f"  {preset.name}: {preset.source}")
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
        return {"compare": cmd_compare, "simulate": cmd_simulate, "presets": cmd_presets}[args.command](args)
    except CLIError as error:
        print(f"barrierlb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("barrierlb: interrupted", file=sys.stderr)
        return 130
    except MemoryError as error:
        print(f"barrierlb: error: out of memory{': ' + str(error) if str(error) else ''}; "
              f"try fewer --requests or a smaller cluster", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
