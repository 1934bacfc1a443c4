"""Run metrics of a barrier-step simulation.

Per step ``k`` with alive-worker loads ``L_g(k)``:

- imbalance ``G * max_g L_g - sum_g L_g`` (work units, the paper's metric);
- balancedness ``mean_g L_g / max_g L_g`` (vLLM / SGLang / TensorRT-LLM);
- ``max - min`` (BalanceRoute's tables).

The *idle fraction* is the share of worker-time spent waiting at the barrier,
``sum_k sum_g (max - L_g) / sum_k G * max``. Step-level metrics, throughput and
energy are taken over the *measurement window*: from the first step to the last
step in which a request was assigned, as the authors' reference simulator does,
so the drain at the end (when the pool is empty and no policy can act) does not
dilute the comparison. ``avg_imbalance_after`` is the reference's own reading of the
same window: the imbalance of the loads *after* each step (tokens grown, finished
requests gone), which is what the authors' simulator records. Latencies (TTFT, TPOT) cover every finished request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RunMetrics:
    """Summary of one simulated run (units in the field names)."""

    avg_imbalance: float
    avg_imbalance_after: float
    idle_fraction: float
    balancedness: float
    max_minus_min: float
    throughput_tok_s: float
    tpot_mean_s: float
    tpot_p99_s: float
    ttft_mean_s: float
    ttft_p99_s: float
    energy_j: float
    energy_per_token_j: float
    decision_ms_p50: float
    decision_ms_p99: float
    steps: int
    window_steps: int
    requests_completed: int
    simulated_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def summarize(*, max_load, sum_load, min_load, n_alive, step_time_s, energy_j, tokens, window_steps,
              decision_s, ttft_s, tpot_s, completed, max_after=None, sum_after=None) -> RunMetrics:
    """Compute :class:`RunMetrics` from per-step arrays (length ``steps``) and per-request latencies.

    ``max_after`` and ``sum_after`` (optional, length ``steps``) are the alive loads after
    each step; without them ``avg_imbalance_after`` is NaN.
    """
    steps = int(max_load.size)
    w = slice(0, max(1, min(window_steps, steps))) if steps else slice(0, 0)
    peak, total, low, alive = max_load[w], sum_load[w], min_load[w], n_alive[w]
    capacity_work = alive * peak
    busy = peak > 0
    window_time = float(step_time_s[w].sum())
    window_tokens = float(tokens[w].sum())
    window_energy = float(energy_j[w].sum())
    if max_after is None or sum_after is None:
        after = float("nan")
    else:
        after = float((alive * np.asarray(max_after)[w] - np.asarray(sum_after)[w]).mean()) if steps else 0.0
    return RunMetrics(
        avg_imbalance=float((capacity_work - total).mean()) if steps else 0.0,
        avg_imbalance_after=after,
        idle_fraction=float((capacity_work - total).sum() / capacity_work.sum()) if capacity_work.sum() else 0.0,
        balancedness=float((total[busy] / capacity_work[busy]).mean()) if busy.any() else 1.0,
        max_minus_min=float((peak - low).mean()) if steps else 0.0,
        throughput_tok_s=window_tokens / window_time if window_time else 0.0,
        tpot_mean_s=float(tpot_s.mean()) if tpot_s.size else float("nan"),
        tpot_p99_s=_percentile(tpot_s, 99),
        ttft_mean_s=float(ttft_s.mean()) if ttft_s.size else float("nan"),
        ttft_p99_s=_percentile(ttft_s, 99),
        energy_j=window_energy,
        energy_per_token_j=window_energy / window_tokens if window_tokens else float("nan"),
        decision_ms_p50=_percentile(decision_s * 1e3, 50),
        decision_ms_p99=_percentile(decision_s * 1e3, 99),
        steps=steps,
        window_steps=int(w.stop),
        requests_completed=int(completed),
        simulated_s=float(step_time_s.sum()),
    )
