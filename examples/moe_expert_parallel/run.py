"""MoE expert parallelism: priced replica moves against DeepSeek EPLB and sticky placement.

    python examples/moe_expert_parallel/run.py --routing phases                 # 8 GPUs, 64 experts
    python examples/moe_expert_parallel/run.py --routing phases --gpus 16 --experts 256 --redundant 32 \\
        --json moe.json --plot docs/moe_pareto.png

Each step routes ``--tokens`` token-to-expert assignments over the experts
(``--routing walk``: a drifting Zipf popularity; ``--routing phases``:
popularity that switches between phases, with noise within a phase); a GPU's
load is the tokens its replicas process and the MoE layer waits for the
slowest GPU. Policies (``--policies``, separated by ``;``, options after a
colon):

- ``static``: the first interval's EPLB layout, never changed;
- ``eplb`` / ``eplb-hierarchical``: DeepSeek EPLB from scratch every
  ``--interval`` steps (option ``interval=N``) on the last interval's loads
  (``tracked=1``: on the priced policy's phase-aware prediction instead);
- ``priced``: every ``--check`` steps, replica moves and re-targets, each taken
  only if the barrier time it saves over the predicted rest of the phase
  exceeds its copy time (options ``budget``, ``check``, ``horizon``,
  ``scenarios``, ``memory``; see ``experts.PricedRebalancer``);
- any barrierlb policy (``bfio:horizon=0``, ``jsq-tokens``, ...): sticky,
  replica counts follow EPLB's replicate rule each interval, existing replicas
  stay, the policy places the new ones (and ``--churn`` re-created ones).

Time: a step takes ``--step-overhead-us + --us-per-token * max_g tokens_g``;
copies run at the start of the step after a decision, every GPU receiving over
its own link in parallel, with ``--stall-ms`` more if the decision copies
anything. Links (``--link``, comma-separated to run several): ``nvlink``, every
copy at ``--nvlink-gbs``; ``inter-node``, copies within a node of
``--gpus-per-node`` at ``--nvlink-gbs`` and across nodes at ``--inter-node-gbs``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experts import (  # noqa: E402
    Links,
    PhaseRouting,
    PhaseTracker,
    PricedRebalancer,
    Routing,
    eplb_layout,
    replica_counts,
    sticky_update,
)

from barrierlb import make_policy  # noqa: E402
from barrierlb.cli import plain_table  # noqa: E402
from barrierlb.outputs import output_file, refuse_existing, write_text  # noqa: E402

DEFAULT_POLICIES = "static;eplb;eplb-hierarchical;jsq-tokens;bfio:horizon=0;priced"
LINKS = ("nvlink", "inter-node")
_OWN = {"static": (), "eplb": ("interval", "tracked"), "eplb-hierarchical": ("interval", "tracked"),
        "priced": ("budget", "check", "horizon", "scenarios", "memory")}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"name:key=value,..."`` of this example's own policies; other names go to barrierlb as they are."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in _OWN:
        return name, {}
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in _OWN[name]:
            raise ValueError(f"{name} takes options {', '.join(_OWN[name]) or 'none'} as key=value, got {item!r}")
        try:
            options[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"{name}: option {key.strip()} must be an integer, got {value!r}") from None
        least = 0 if key.strip() in ("scenarios", "memory", "tracked") else 1
        if options[key.strip()] < least:
            raise ValueError(f"{name}: option {key.strip()} must be >= {least}, got {value}")
    return name, options


def make_routing(args):
    if args.routing == "walk":
        return Routing(args.experts, args.tokens, zipf=args.zipf, drift=args.drift, seed=args.seed)
    return PhaseRouting(args.experts, args.tokens, phases=args.phases, phase_steps=args.phase_steps,
                        zipf=args.zipf, noise=args.noise, seed=args.seed)


def make_links(args, link: str) -> Links:
    intra = args.nvlink_gbs * 1e9
    inter = intra if link == "nvlink" else args.inter_node_gbs * 1e9
    return Links(intra, inter, args.gpus_per_node)


def run_policy(spec: str, args, link: str) -> dict:
    """Simulate ``args.steps`` steps under one layout policy and link; returns its record."""
    name, options = parse_spec(spec)
    interval = options.get("interval", args.interval)
    routing = make_routing(args)
    links = make_links(args, link)
    total = args.experts + args.redundant
    slots = total // args.gpus + args.spare
    n_nodes = args.gpus // args.gpus_per_node
    expert_bytes = args.expert_mb * 2**20
    seconds_per_token = args.us_per_token * 1e-6
    policy = None if name in _OWN else make_policy(spec)
    priced = tracker = None
    if name == "priced":
        priced = PricedRebalancer(args.experts, expert_bytes, seconds_per_token, links,
                                  budget=options.get("budget", args.budget), stall_s=args.stall_ms * 1e-3)
        tracker = PhaseTracker(args.experts, scenarios=options.get("scenarios", args.scenarios),
                               memory=options.get("memory", args.memory), seed=args.seed)
        interval = options.get("check", args.check)
    elif options.get("tracked"):
        tracker = PhaseTracker(args.experts, memory=args.memory, seed=args.seed)
    horizon = options.get("horizon", args.horizon)
    warm = np.mean([routing.step() for _ in range(args.interval)], axis=0)       # first interval's loads
    layout = eplb_layout(warm, total, args.gpus, slots=slots)
    peak, mean, ratio, decide_s = [], [], [], []
    compute_s = transfer_s = 0.0
    copies = moves = retargets = 0
    window = []
    for step in range(args.steps):
        tokens = routing.step()
        load = layout.gpu_load(tokens)
        peak.append(load.max())
        mean.append(load.mean())
        ratio.append(load.max() / load.mean())
        compute_s += args.step_overhead_us * 1e-6 + seconds_per_token * load.max()
        window.append(tokens)
        if tracker is not None:
            tracker.observe(tokens)
        if (step + 1) % interval or name == "static":
            continue
        predicted = np.mean(window, axis=0) if tracker is None else tracker.predicted_load()
        window = []
        before = layout
        started = time.perf_counter()
        if name in ("eplb", "eplb-hierarchical"):
            groups, nodes = (args.groups, n_nodes) if name == "eplb-hierarchical" else (1, 1)
            layout = eplb_layout(predicted, total, args.gpus, n_groups=groups, n_nodes=nodes, slots=slots)
        elif priced is not None:
            layout, info = priced.update(layout, tracker.scenarios(), tracker.horizon(horizon))
            moves += info["moves"]
            retargets += info["retargets"]
        else:
            layout, info = sticky_update(layout, replica_counts(predicted, total), predicted, policy,
                                         churn=args.churn)
        decide_s.append(time.perf_counter() - started)
        layout.check(args.experts)
        n_copies, seconds = links.copy_seconds(before, layout, expert_bytes)
        copies += n_copies
        transfer_s += seconds + (args.stall_ms * 1e-3 if n_copies else 0.0)
    record = {"policy": spec, "gpus": args.gpus, "experts": args.experts, "redundant": args.redundant,
              "routing": args.routing, "link": link,
              "idle_fraction": 1.0 - float(np.sum(mean) / np.sum(peak)),      # share of GPU time waiting
              "balancedness": float(np.mean(1.0 / np.asarray(ratio))), "max_over_mean": float(np.mean(ratio)),
              "p99_max_over_mean": float(np.percentile(ratio, 99)), "weight_copies": copies,
              "bytes_moved": copies * expert_bytes, "compute_time_s": compute_s, "transfer_time_s": transfer_s,
              "total_time_s": compute_s + transfer_s, "decisions": len(decide_s),
              "decision_ms_p50": float(np.median(decide_s) * 1e3) if decide_s else 0.0,
              "steps": args.steps, "tokens": args.tokens, "interval": interval, "seed": args.seed,
              "intra_node_gbs": links.intra_bytes_per_s / 1e9, "inter_node_gbs": links.inter_bytes_per_s / 1e9,
              "gpus_per_node": args.gpus_per_node, "expert_mb": args.expert_mb, "us_per_token": args.us_per_token,
              "step_overhead_us": args.step_overhead_us, "stall_ms": args.stall_ms, **routing.params}
    if priced is not None:
        record.update({"moves": moves, "retargets": retargets, "budget": priced.budget, "horizon": horizon})
    return record


def plot_pareto(records: list[dict], path: str) -> None:
    """Write a PNG: idle fraction against bytes moved, one panel per (GPUs, experts) and link.

    Each panel's legend gives every policy's total time; the lowest is ringed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'barrierlb[cli]'") from None
    policies = list(dict.fromkeys(r["policy"] for r in records))
    colors = plt.get_cmap("tab20")
    panels = sorted({(r["gpus"], r["experts"], LINKS.index(r["link"]), r["link"]) for r in records})
    figure, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, (gpus, experts, _, link) in zip(axes[0], panels):
        rows = [r for r in records if (r["gpus"], r["experts"], r["link"]) == (gpus, experts, link)]
        fastest = min(r["total_time_s"] for r in rows)
        for r in rows:
            name = r["policy"]
            marker = "s" if name.startswith("eplb") else "o" if name.startswith("priced") else \
                "D" if name == "static" else "^"
            x, y = max(r["bytes_moved"] / 1e9, 1e-2), 100 * r["idle_fraction"]
            ax.scatter(x, y, s=55, marker=marker, color=colors(policies.index(name) % 20),
                       label=f"{name}: {r['total_time_s']:.2f} s", zorder=3)
            if r["total_time_s"] == fastest:
                ax.scatter(x, y, s=260, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel("weights copied, GB (log scale; none drawn at 0.01)")
        ax.set_ylabel("idle fraction of GPU time, %")
        ax.set_title(f"{gpus} GPUs, {experts} experts, {link} link: total time per policy\n"
                     f"(ringed: lowest total time)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right", framealpha=0.85)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--redundant", type=int, default=16, help="replicas beyond one per expert")
    parser.add_argument("--spare", type=int, default=1, help="slots per GPU beyond an even share")
    parser.add_argument("--tokens", type=int, default=32768, help="token-to-expert assignments per step")
    parser.add_argument("--routing", choices=("walk", "phases"), default="walk")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--drift", type=float, default=0.02, help="walk: per-step drift of expert log-odds")
    parser.add_argument("--phases", type=int, default=4, help="phases: distinct popularity profiles")
    parser.add_argument("--phase-steps", type=int, nargs=2, default=(300, 700), metavar=("MIN", "MAX"),
                        help="phases: shortest and longest phase in steps")
    parser.add_argument("--noise", type=float, default=0.2, help="phases: per-step log-odds noise")
    parser.add_argument("--churn", type=int, default=8,
                        help="sticky policies: heavy replicas on hot GPUs re-created per interval (default 8)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--interval", type=int, default=100, help="steps between rebalancing (EPLB, sticky)")
    parser.add_argument("--check", type=int, default=10, help="priced: steps between decisions")
    parser.add_argument("--budget", type=int, default=8, help="priced: most moves per decision")
    parser.add_argument("--horizon", type=int, default=200,
                        help="priced: steps a move is priced over before any phase length is seen")
    parser.add_argument("--scenarios", type=int, default=32,
                        help="priced: sampled steps the saving is averaged over (0: the mean alone)")
    parser.add_argument("--memory", type=int, default=100,
                        help="priced: about how many steps of statistics the prediction keeps, like EPLB's "
                             "window (0: all since the last switch)")
    parser.add_argument("--groups", type=int, default=8, help="eplb-hierarchical: expert groups")
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--link", default=",".join(LINKS), help=f"comma-separated, of {', '.join(LINKS)}")
    parser.add_argument("--nvlink-gbs", type=float, default=450.0, help="NVLink-class copy bandwidth, GB/s")
    parser.add_argument("--inter-node-gbs", type=float, default=50.0,
                        help="inter-node copy bandwidth, GB/s (400 Gb/s InfiniBand)")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="synchronous stall per decision that copies")
    parser.add_argument("--us-per-token", type=float, default=0.1,
                        help="GPU time per token-expert assignment, microseconds (DeepSeek-V3 expert, FP8)")
    parser.add_argument("--step-overhead-us", type=float, default=0.0, help="fixed time per step")
    parser.add_argument("--expert-mb", type=float, default=42.0,
                        help="weights per expert replica, MiB (DeepSeek-V3: 3 x 7168 x 2048 FP8 = 42 MiB)")
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the records (a list) to PATH (must not exist)")
    parser.add_argument("--plot", metavar="PATH", help="write the Pareto plot (PNG) to PATH (must not exist)")
    args = parser.parse_args(argv)
    for name in ("gpus", "experts", "tokens", "steps", "interval", "check", "budget", "horizon", "groups",
                 "gpus_per_node", "phases"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("redundant", "spare", "churn", "scenarios", "memory", "stall_ms", "us_per_token",
                 "step_overhead_us", "expert_mb", "noise", "drift"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{name.replace('_', '-')} must be finite, got {value}")
    if min(args.nvlink_gbs, args.inter_node_gbs) <= 0:
        parser.error("--nvlink-gbs and --inter-node-gbs must be > 0")
    if not 1 <= args.phase_steps[0] <= args.phase_steps[1]:
        parser.error(f"--phase-steps must be 1 <= MIN <= MAX, got {args.phase_steps[0]} {args.phase_steps[1]}")
    total = args.experts + args.redundant
    if total % args.gpus or args.gpus % args.gpus_per_node or args.experts % args.groups \
            or args.groups % (args.gpus // args.gpus_per_node):
        parser.error(f"EPLB needs experts + redundant ({total}) a multiple of --gpus ({args.gpus}), --gpus a "
                     f"multiple of --gpus-per-node ({args.gpus_per_node}), --experts a multiple of --groups "
                     f"({args.groups}) and --groups a multiple of the nodes")
    links = [link.strip() for link in args.link.split(",") if link.strip()]
    if not links or any(link not in LINKS for link in links):
        parser.error(f"--link must list some of {', '.join(LINKS)}, got {args.link!r}")
    refuse_existing(parser, {"--json": args.json, "--plot": args.plot})
    rows = []
    for spec in [s.strip() for s in args.policies.split(";") if s.strip()]:
        for link in links:
            try:
                rows.append(run_policy(spec, args, link))
            except (TypeError, ValueError) as error:
                print(f"moe: error: {spec}: {error}", file=sys.stderr)
                return 2
    eplb_rows = {r["link"]: r for r in rows if r["policy"] == "eplb"}
    header = ["policy", "link", "idle", "mean/max", "copies", "GB moved", "vs EPLB bytes", "compute s",
              "transfer s", "total s", "vs EPLB time", "decide ms"]
    table = []
    for r in rows:
        reference = eplb_rows.get(r["link"])
        table.append([r["policy"], r["link"], f"{r['idle_fraction']:.2%}", f"{r['balancedness']:.3f}",
                      str(r["weight_copies"]), f"{r['bytes_moved'] / 1e9:.1f}",
                      f"{r['bytes_moved'] / reference['bytes_moved']:.3f}" if reference and reference["bytes_moved"]
                      else "-", f"{r['compute_time_s']:.3f}", f"{r['transfer_time_s']:.3f}",
                      f"{r['total_time_s']:.3f}",
                      f"{r['total_time_s'] / reference['total_time_s']:.4f}" if reference else "-",
                      f"{r['decision_ms_p50']:.2f}"])
    print(f"MoE expert parallelism: {args.gpus} GPUs ({args.gpus_per_node} per node), {args.experts} experts + "
          f"{args.redundant} redundant, {args.routing} routing, {args.steps} steps, seed {args.seed}")
    print(plain_table(header, table))
    if args.json:
        print(write_text(args.json, json.dumps(rows, indent=2) + "\n").note())
    if args.plot:
        with output_file(args.plot) as out:
            plot_pareto(rows, str(out.partial))
        print(out.note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
