"""Plots of simulation results (matplotlib, from the ``cli`` extra)."""

from __future__ import annotations

import numpy as np

from barrierlb.simulator import SimulationResult


def plot_loads(results: list[SimulationResult], path: str, *, max_points: int = 2000) -> None:
    """Write a PNG: per policy, per-worker load over the steps and the per-step idle fraction.

    One row of panels per policy, sharing the axes so that the policies compare
    at a glance; loads in thousands of work units (tokens) on the left axis,
    idle share of worker time on the right.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'barrierlb[cli]'") from None
    if not results:
        raise ValueError("nothing to plot: no results")
    for result in results:
        if result.loads is None:
            raise ValueError(f"result for {result.policy!r} has no per-worker loads (record_loads=False)")
    steps = max(r.metrics.window_steps for r in results)
    stride = max(1, steps // max_points)
    top = max(float(r.loads[:steps].max()) for r in results) / 1e3
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 2.6 * len(results) + 0.6), sharex=True, squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        loads = result.loads[:steps:stride] / 1e3
        x = np.arange(0, min(steps, result.loads.shape[0]), stride)[: loads.shape[0]]
        ax.plot(x, loads, linewidth=0.6, alpha=0.55)
        ax.set_ylim(0, top * 1.05)
        ax.set_ylabel("load per worker\n(k tokens)")
        peak = loads.max(axis=1)
        idle = np.where(peak > 0, 1 - loads.mean(axis=1) / np.where(peak > 0, peak, 1), 0.0)
        twin = ax.twinx()
        twin.fill_between(x, idle * 100, color="tab:red", alpha=0.25, linewidth=0)
        twin.set_ylim(0, 100)
        twin.set_ylabel("idle %", color="tab:red")
        m = result.metrics
        ax.set_title(f"{result.policy}: idle {m.idle_fraction:.1%}, avg imbalance {m.avg_imbalance:,.0f}, "
                     f"{m.throughput_tok_s:,.0f} tok/s", loc="left", fontsize=10)
    axes[-1, 0].set_xlabel("decode step (measurement window)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
