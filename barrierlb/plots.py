"""Plots of simulation results (matplotlib, from the ``cli`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from barrierlb.simulator import SimulationResult

#: File types :func:`plot_loads` writes, chosen by the path's suffix.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot_path(path) -> Path:
    """``path`` as a Path if :func:`plot_loads` can write it, else ValueError naming it.

    The suffix picks the format (one of :data:`PLOT_SUFFIXES`); a directory is
    refused (matplotlib would write ``DIR.png`` beside it).
    """
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"plot path {str(path)!r} is a directory; give a file name")
    if file.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"plot path {str(path)!r} must end in {', '.join(PLOT_SUFFIXES)}, "
                         f"got {file.suffix or 'no suffix'!r}")
    return file


def plot_loads(results: list[SimulationResult], path, *, max_points: int = 2000) -> None:
    """Write a plot (PNG, PDF or SVG by ``path``'s suffix): per policy, per-worker
    load over the steps and the per-step idle fraction.

    One row of panels per policy, sharing the axes so that the policies compare
    at a glance; loads in thousands of work units (tokens) on the left axis,
    idle share of worker time on the right.
    """
    file = check_plot_path(path)
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
    fig.savefig(file, dpi=110, format=file.suffix.lower()[1:])
    plt.close(fig)
