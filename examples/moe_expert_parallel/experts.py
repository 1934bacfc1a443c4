"""Mixture-of-experts expert parallelism: routing with drifting popularity, replica layouts, EPLB.

The sticky tasks are expert *replicas*: a replica holds a copy of its expert's
weights on one GPU, and the tokens routed to an expert are split evenly over
its replicas. A GPU's load in a step is the tokens its replicas process; the
MoE layer waits for the slowest GPU (the all-to-all is a barrier).

Every rebalancing interval the replica counts follow the predicted expert
loads (DeepSeek EPLB's replicate rule: the next replica goes to the expert with
the most load per replica). Then two ways of laying the replicas out on GPUs:

- ``eplb``: DeepSeek EPLB's pack, from scratch: replicas by decreasing load,
  each to the GPU with the least load that has room. Balanced, but it moves
  replicas that already had a home, and every move ships weights.
- sticky (any barrierlb policy): replicas that exist stay where they are; only
  the new ones are placed, by the policy, on the predicted loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Routing:
    """Tokens per expert per step: a Zipf popularity whose log-odds drift as a random walk.

    Parameters
    ----------
    n_experts : int
    tokens : int
        Token-to-expert assignments per step (tokens x top-k).
    zipf : float
        Skew of the initial popularity (rank ``r`` gets weight ``r**-zipf``).
    drift : float
        Standard deviation of the per-step change of each expert's log-odds.
    seed : int
    """

    def __init__(self, n_experts: int, tokens: int, *, zipf: float = 1.0, drift: float = 0.02, seed: int = 0):
        if n_experts < 1 or tokens < 1:
            raise ValueError(f"need n_experts >= 1 and tokens >= 1, got {n_experts} and {tokens}")
        self.rng = np.random.default_rng(seed)
        self.tokens = tokens
        self.drift = drift
        ranks = self.rng.permutation(n_experts) + 1
        self.logits = -zipf * np.log(ranks.astype(np.float64))

    def step(self) -> np.ndarray:
        """Token counts per expert for one step, shape (E,)."""
        self.logits += self.rng.normal(0.0, self.drift, self.logits.size)
        p = np.exp(self.logits - self.logits.max())
        return self.rng.multinomial(self.tokens, p / p.sum()).astype(np.float64)


def replica_counts(expert_load: np.ndarray, total: int) -> np.ndarray:
    """EPLB's replicate rule: one replica each, then each extra one to the expert with most load per replica."""
    n = expert_load.size
    if total < n:
        raise ValueError(f"{total} replicas cannot cover {n} experts")
    counts = np.ones(n, dtype=np.int64)
    for _ in range(total - n):
        counts[int(np.argmax(expert_load / counts))] += 1
    return counts


@dataclass
class Layout:
    """Which GPU holds each replica: ``expert[k]`` on ``gpu[k]``, at most ``slots`` per GPU."""

    n_gpus: int
    slots: int
    expert: list = field(default_factory=list)
    gpu: list = field(default_factory=list)

    def counts(self, n_experts: int) -> np.ndarray:
        return np.bincount(np.asarray(self.expert, dtype=np.int64), minlength=n_experts)

    def gpu_load(self, expert_tokens: np.ndarray) -> np.ndarray:
        """Tokens each GPU processes when ``expert_tokens`` are split evenly over replicas."""
        return self.replica_load(expert_tokens / np.maximum(self.counts(expert_tokens.size), 1))

    def replica_load(self, per_replica: np.ndarray) -> np.ndarray:
        """Each GPU's load when every replica of expert ``e`` carries ``per_replica[e]``."""
        expert = np.asarray(self.expert, dtype=np.int64)
        return np.bincount(np.asarray(self.gpu, dtype=np.int64), weights=per_replica[expert],
                           minlength=self.n_gpus)

    def homes(self) -> set:
        """(expert, gpu) pairs present: the weights each GPU holds."""
        return set(zip(self.expert, self.gpu))

    def check(self, n_experts: int) -> None:
        per_gpu = np.bincount(np.asarray(self.gpu, dtype=np.int64), minlength=self.n_gpus)
        if per_gpu.max(initial=0) > self.slots:
            raise AssertionError(f"a GPU holds {per_gpu.max()} replicas, more than its {self.slots} slots")
        if (self.counts(n_experts) < 1).any():
            raise AssertionError("an expert has no replica")


def eplb_pack(counts: np.ndarray, expert_load: np.ndarray, n_gpus: int, slots: int) -> Layout:
    """EPLB's pack: replicas by decreasing load, each to the least-loaded GPU with room."""
    replicas = [(expert_load[e] / counts[e], e) for e in range(counts.size) for _ in range(counts[e])]
    replicas.sort(key=lambda item: (-item[0], item[1]))
    load = np.zeros(n_gpus)
    used = np.zeros(n_gpus, dtype=np.int64)
    layout = Layout(n_gpus, slots)
    for weight, e in replicas:
        room = np.flatnonzero(used < slots)
        g = int(room[np.argmin(load[room])])
        layout.expert.append(e)
        layout.gpu.append(g)
        load[g] += weight
        used[g] += 1
    return layout


def sticky_update(layout: Layout, counts: np.ndarray, expert_load: np.ndarray, policy,
                  churn: int = 0) -> tuple[Layout, dict]:
    """Move to replica ``counts`` without moving any existing replica; the policy places new ones.

    An expert that loses replicas loses them from the GPUs with the most
    predicted load. With ``churn``, up to that many of the heaviest replicas
    on GPUs above the mean predicted load are also retired and re-created (a
    replica re-created on its own GPU costs nothing; elsewhere it is a weight
    copy). The new replicas are the pool of a BF-IO step problem whose placed
    load is every GPU's predicted load under the new counts. Returns the new
    layout and the policy's decision info.
    """
    kept = Layout(layout.n_gpus, layout.slots, list(layout.expert), list(layout.gpu))
    expert, gpu = kept.expert, kept.gpu
    retired = []
    current = kept.counts(counts.size)
    per_replica = expert_load / counts
    # Retire surplus replicas, from the most loaded GPUs first.
    for e in np.flatnonzero(current > counts):
        for _ in range(int(current[e] - counts[e])):
            load = kept.replica_load(per_replica)
            mine = [k for k, x in enumerate(expert) if x == e]
            k = max(mine, key=lambda k: (load[gpu[k]], -k))
            retired.append((expert[k], gpu[k]))
            del expert[k], gpu[k]
    new = [int(e) for e in np.flatnonzero(counts > current) for _ in range(int(counts[e] - current[e]))]
    if churn and expert:
        load = kept.replica_load(per_replica)
        hot = [k for k in range(len(expert)) if load[gpu[k]] > load.mean()]
        hot.sort(key=lambda k: (-per_replica[expert[k]], k))
        for k in sorted(hot[:churn], reverse=True):
            new.append(expert[k])
            retired.append((expert[k], gpu[k]))
            del expert[k], gpu[k]
    decision_info = {"placed": len(new), "retired": retired, "solve_time_s": 0.0}
    if new:
        placed = kept.replica_load(per_replica)
        free = layout.slots - np.bincount(np.asarray(gpu, dtype=np.int64), minlength=layout.n_gpus)
        rows = int(getattr(policy, "horizon", 0)) + 1
        decision = policy.decide_arrays(np.tile(placed, (rows, 1)),
                                        np.tile(per_replica[new][:, None], (1, rows)),
                                        free, np.arange(len(new), dtype=np.int64))
        if decision.task_ids.size != len(new):
            raise RuntimeError(f"policy placed {decision.task_ids.size} of {len(new)} new replicas")
        for index, g in zip(decision.task_ids.tolist(), decision.workers.tolist()):     # ids = positions
            expert.append(new[index])
            gpu.append(int(g))
        decision_info["solve_time_s"] = decision.solve_time_s
    return kept, decision_info
