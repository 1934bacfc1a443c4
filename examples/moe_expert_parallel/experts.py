"""Mixture-of-experts expert parallelism: routing, replica layouts, DeepSeek EPLB and priced moves.

The sticky tasks are expert *replicas*: a replica holds a copy of its expert's
weights on one GPU, and the tokens routed to an expert are split evenly over
its replicas. A GPU's load in a step is the tokens its replicas process; the
MoE layer waits for the slowest GPU (the all-to-all is a barrier).

Layouts, each from the same starting layout on the same routing:

- ``eplb`` / ``eplb-hierarchical``: DeepSeek EPLB (:func:`eplb_layout`), every
  interval from scratch on the last interval's loads: replicate (the next
  replica to the expert with the most load per replica), then balanced packing
  (each item, heaviest first, to the lightest pack that still has room, every
  pack getting the same number of items); hierarchical first packs expert
  groups to nodes and replicates and packs within each node.
- sticky (any barrierlb policy, :func:`sticky_update`): existing replicas stay;
  the policy places the new ones.
- ``priced`` (:class:`PricedRebalancer` on :class:`PhaseTracker`'s
  prediction): every few steps, moves and replica re-targets taken one at a
  time, each only when the barrier time it saves over the predicted rest of
  the phase exceeds its transfer time (:func:`barrierlb.migration.plan_moves`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from barrierlb.migration import imbalance_time_s, plan_moves


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

    name = "walk"

    def __init__(self, n_experts: int, tokens: int, *, zipf: float = 1.0, drift: float = 0.02, seed: int = 0):
        if n_experts < 1 or tokens < 1:
            raise ValueError(f"need n_experts >= 1 and tokens >= 1, got {n_experts} and {tokens}")
        self.rng = np.random.default_rng(seed)
        self.tokens = tokens
        self.drift = drift
        self.params = {"routing": "walk", "zipf": zipf, "drift": drift, "routing_seed": seed}
        ranks = self.rng.permutation(n_experts) + 1
        self.logits = -zipf * np.log(ranks.astype(np.float64))

    def step(self) -> np.ndarray:
        """Token counts per expert for one step, shape (E,)."""
        self.logits += self.rng.normal(0.0, self.drift, self.logits.size)
        p = np.exp(self.logits - self.logits.max())
        return self.rng.multinomial(self.tokens, p / p.sum()).astype(np.float64)


class PhaseRouting:
    """Tokens per expert per step: popularity that switches between phases, with noise within a phase.

    Each of ``phases`` phases has its own Zipf popularity over a random
    ordering of the experts (a workload mix: code, chat, another language).
    A phase lasts a uniform random number of steps in ``phase_steps``, then a
    different phase, drawn at random, takes over. Within a phase each step
    perturbs every expert's log-odds by independent ``N(0, noise)`` noise and
    draws the tokens from a multinomial.

    Parameters
    ----------
    n_experts, tokens : int
    phases : int
        Distinct popularity profiles (>= 2).
    phase_steps : (int, int)
        Shortest and longest phase, in steps.
    zipf : float
    noise : float
        Standard deviation of the per-step log-odds noise.
    seed : int
    """

    name = "phases"

    def __init__(self, n_experts: int, tokens: int, *, phases: int = 4, phase_steps=(300, 700), zipf: float = 1.0,
                 noise: float = 0.2, seed: int = 0):
        if n_experts < 1 or tokens < 1:
            raise ValueError(f"need n_experts >= 1 and tokens >= 1, got {n_experts} and {tokens}")
        if phases < 2:
            raise ValueError(f"phases must be >= 2, got {phases}")
        shortest, longest = (int(x) for x in phase_steps)
        if not 1 <= shortest <= longest:
            raise ValueError(f"phase_steps must be 1 <= shortest <= longest, got {phase_steps}")
        self.rng = np.random.default_rng(seed)
        self.tokens = tokens
        self.noise = noise
        self.phase_steps = (shortest, longest)
        self.params = {"routing": "phases", "phases": phases, "phase_steps": [shortest, longest], "zipf": zipf,
                       "noise": noise, "routing_seed": seed}
        ranks = np.stack([self.rng.permutation(n_experts) + 1 for _ in range(phases)])
        self.profiles = -zipf * np.log(ranks.astype(np.float64))             # (phases, E) log-odds
        self.phase = int(self.rng.integers(phases))
        self.left = int(self.rng.integers(shortest, longest + 1))
        self.switches = 0

    def step(self) -> np.ndarray:
        """Token counts per expert for one step, shape (E,)."""
        if self.left == 0:
            others = [p for p in range(len(self.profiles)) if p != self.phase]
            self.phase = int(others[self.rng.integers(len(others))])
            self.left = int(self.rng.integers(self.phase_steps[0], self.phase_steps[1] + 1))
            self.switches += 1
        self.left -= 1
        logits = self.profiles[self.phase] + self.rng.normal(0.0, self.noise, self.profiles.shape[1])
        p = np.exp(logits - logits.max())
        return self.rng.multinomial(self.tokens, p / p.sum()).astype(np.float64)


# ----------------------------------------------------------------------------- DeepSeek EPLB

def balanced_packing(weight: np.ndarray, n_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """EPLB's balanced packing: ``n`` items into ``n_packs`` packs of exactly ``n / n_packs`` items each.

    Items by decreasing weight (ties by index), each to the lightest pack that
    still has room (ties to the lowest pack). With one item per pack, item
    ``i`` goes to pack ``i``.

    Parameters
    ----------
    weight : ndarray, shape (n,)
    n_packs : int, dividing ``n``

    Returns
    -------
    pack, rank : ndarray of int64, shape (n,)
        Each item's pack and its position in the pack (order of arrival).
    """
    n = weight.size
    if n_packs < 1 or n % n_packs:
        raise ValueError(f"{n} items do not split evenly into {n_packs} packs")
    per_pack = n // n_packs
    if per_pack == 1:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    pack = np.full(n, -1, dtype=np.int64)
    rank = np.full(n, -1, dtype=np.int64)
    pack_weight = np.zeros(n_packs)
    pack_items = np.zeros(n_packs, dtype=np.int64)
    for item in np.argsort(-weight, kind="stable").tolist():
        room = np.flatnonzero(pack_items < per_pack)
        chosen = int(room[np.argmin(pack_weight[room])])
        pack[item], rank[item] = chosen, pack_items[chosen]
        pack_weight[chosen] += weight[item]
        pack_items[chosen] += 1
    return pack, rank


def replicate(weight: np.ndarray, n_physical: int) -> tuple[np.ndarray, np.ndarray]:
    """EPLB's replicate rule: one replica per expert, each extra one to the expert with most load per replica.

    Returns
    -------
    physical_expert : ndarray of int64, shape (n_physical,)
        Expert of each replica: ``0..E-1`` first, then the extra ones in the order they were added.
    count : ndarray of int64, shape (E,)
        Replicas per expert.
    """
    n = weight.size
    if n_physical < n:
        raise ValueError(f"{n_physical} replicas cannot cover {n} experts")
    count = np.ones(n, dtype=np.int64)
    physical = list(range(n))
    for _ in range(n_physical - n):
        e = int(np.argmax(weight / count))
        physical.append(e)
        count[e] += 1
    return np.array(physical, dtype=np.int64), count


def replica_counts(expert_load: np.ndarray, total: int) -> np.ndarray:
    """Replicas per expert under EPLB's replicate rule (:func:`replicate`), shape (E,)."""
    return replicate(expert_load, total)[1]


def eplb_layout(weight: np.ndarray, n_physical: int, n_gpus: int, *, n_groups: int = 1, n_nodes: int = 1,
                slots: int | None = None) -> Layout:
    """DeepSeek EPLB's layout; global with one group and one node, hierarchical otherwise.

    Hierarchical (as ``rebalance_experts_hierarchical``): the ``n_groups``
    contiguous expert groups are packed to nodes by their total load
    (:func:`balanced_packing`), each node replicates its own experts to
    ``n_physical / n_nodes`` replicas (:func:`replicate`), and packs those to
    its GPUs by load per replica. Global is the same with one group and one
    node (DeepSeek's entry point when the groups do not divide the nodes).

    Parameters
    ----------
    weight : ndarray, shape (E,)
        Load of each expert (tokens per step).
    n_physical : int
        Replicas in all; a multiple of ``n_gpus``.
    n_gpus, n_groups, n_nodes : int
        ``n_groups`` divides ``E`` and is a multiple of ``n_nodes``; ``n_nodes`` divides ``n_gpus``.
    slots : int, optional
        Slots per GPU in the returned layout (default ``n_physical / n_gpus``).
    """
    n_experts = weight.size
    if n_physical % n_gpus or n_gpus % n_nodes or n_experts % n_groups or n_groups % n_nodes:
        raise ValueError(f"EPLB needs replicas ({n_physical}) a multiple of GPUs ({n_gpus}), GPUs of nodes "
                         f"({n_nodes}), experts ({n_experts}) of groups ({n_groups}), groups of nodes")
    per_gpu = n_physical // n_gpus
    group_size = n_experts // n_groups
    gpus_per_node = n_gpus // n_nodes
    group_pack, group_rank = balanced_packing(weight.reshape(n_groups, group_size).sum(axis=1), n_nodes)
    layout = Layout(n_gpus, per_gpu if slots is None else slots)
    for node in range(n_nodes):
        groups = np.flatnonzero(group_pack == node)
        groups = groups[np.argsort(group_rank[groups])]
        experts = (groups[:, None] * group_size + np.arange(group_size)).ravel()     # this node's experts
        physical, count = replicate(weight[experts], n_physical // n_nodes)
        pack, rank = balanced_packing((weight[experts] / count)[physical], gpus_per_node)
        order = np.lexsort((rank, pack))                                              # slot order on the node
        layout.expert.extend(experts[physical[order]].tolist())
        layout.gpu.extend((node * gpus_per_node + pack[order]).tolist())
    return layout


# ----------------------------------------------------------------------------- layouts

@dataclass
class Layout:
    """Which GPU holds each replica: ``expert[k]`` on ``gpu[k]``, at most ``slots`` per GPU."""

    n_gpus: int
    slots: int
    expert: list = field(default_factory=list)
    gpu: list = field(default_factory=list)

    def copy(self) -> Layout:
        return Layout(self.n_gpus, self.slots, list(self.expert), list(self.gpu))

    def counts(self, n_experts: int) -> np.ndarray:
        return np.bincount(np.asarray(self.expert, dtype=np.int64), minlength=n_experts)

    def gpu_load(self, expert_tokens: np.ndarray) -> np.ndarray:
        """Tokens each GPU processes when ``expert_tokens`` are split evenly over replicas."""
        return self.replica_load(expert_tokens / np.maximum(self.counts(expert_tokens.size), 1))

    def gpu_loads(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`gpu_load` of each row of ``rows`` (S, E): shape (S, G)."""
        per_replica = rows / np.maximum(self.counts(rows.shape[1]), 1)
        loads = np.zeros((rows.shape[0], self.n_gpus))
        expert = np.asarray(self.expert, dtype=np.int64)
        np.add.at(loads.T, np.asarray(self.gpu, dtype=np.int64), per_replica[:, expert].T)
        return loads

    def replica_load(self, per_replica: np.ndarray) -> np.ndarray:
        """Each GPU's load when every replica of expert ``e`` carries ``per_replica[e]``."""
        expert = np.asarray(self.expert, dtype=np.int64)
        return np.bincount(np.asarray(self.gpu, dtype=np.int64), weights=per_replica[expert],
                           minlength=self.n_gpus)

    def free_slots(self) -> np.ndarray:
        return self.slots - np.bincount(np.asarray(self.gpu, dtype=np.int64), minlength=self.n_gpus)

    def homes(self) -> set:
        """(expert, gpu) pairs present: the weights each GPU holds."""
        return set(zip(self.expert, self.gpu))

    def check(self, n_experts: int) -> None:
        per_gpu = np.bincount(np.asarray(self.gpu, dtype=np.int64), minlength=self.n_gpus)
        if per_gpu.max(initial=0) > self.slots:
            raise AssertionError(f"a GPU holds {per_gpu.max()} replicas, more than its {self.slots} slots")
        if (self.counts(n_experts) < 1).any():
            raise AssertionError("an expert has no replica")


@dataclass(frozen=True)
class Links:
    """Copy bandwidth between GPUs: ``intra`` within a node, ``inter`` across nodes (bytes per second)."""

    intra_bytes_per_s: float
    inter_bytes_per_s: float
    gpus_per_node: int

    def matrix(self, n_gpus: int) -> np.ndarray:
        """Bandwidth from GPU ``a`` to GPU ``b``, shape (G, G)."""
        node = np.arange(n_gpus) // self.gpus_per_node
        return np.where(node[:, None] == node[None, :], self.intra_bytes_per_s, self.inter_bytes_per_s)

    def copy_seconds(self, before: Layout, after: Layout, expert_bytes: float) -> tuple[int, float]:
        """Weight copies from ``before`` to ``after`` and the time they take.

        A copy is an (expert, GPU) pair ``after`` holds and ``before`` did not;
        it is fetched from a GPU that held the expert, on the same node if one
        did. GPUs receive in parallel, each over its own link, so the time is
        the largest total receive time of one GPU.
        """
        held = before.homes()
        holders: dict[int, list] = {}
        for e, g in held:
            holders.setdefault(e, []).append(g)
        bandwidth = self.matrix(after.n_gpus)
        receive = np.zeros(after.n_gpus)
        new = after.homes() - held
        for e, g in new:
            receive[g] += expert_bytes / max(bandwidth[source, g] for source in holders[e])
        return len(new), float(receive.max(initial=0.0))


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
    kept = layout.copy()
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
        free = kept.free_slots()
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


# ----------------------------------------------------------------------------- priced moves

class PhaseTracker:
    """Predicts each expert's load from the steps since the last detected phase switch.

    A switch is detected when the mean token shares of the last ``window``
    steps differ from the phase's mean shares by more than ``switch_distance``
    in total variation; the phase's statistics then restart from that window.
    The prediction is the phase's mean (over about the last ``memory`` steps
    when ``memory`` is set), and :meth:`scenarios` adds that many typical
    steps' noise; the phase lengths seen so far predict how long the current
    phase has left (:meth:`horizon`).

    Parameters
    ----------
    n_experts : int
    window : int
        Steps in the detection window.
    switch_distance : float
        Total variation distance (0 to 1) that counts as a switch.
    scenarios : int
        Noise draws in :meth:`scenarios` (0: the mean alone).
    memory : int
        Past this many steps, older steps' weight decays (0: keep all since the switch).
    seed : int
        Seed of the noise draws.
    """

    def __init__(self, n_experts: int, *, window: int = 5, switch_distance: float = 0.2, scenarios: int = 0,
                 memory: int = 0, seed: int = 0):
        self.memory = memory
        self.age = 0
        self.window = deque(maxlen=window)
        self.normal = np.random.default_rng(seed).standard_normal((scenarios, n_experts))
        self.phase_sumsq = np.zeros(n_experts)
        self.switch_distance = switch_distance
        self.phase_sum = np.zeros(n_experts)
        self.phase_steps = 0
        self.lengths: list[int] = []
        self.switched = False

    def observe(self, tokens: np.ndarray) -> None:
        self.window.append(tokens)
        self.phase_sum += tokens
        self.phase_sumsq += tokens**2
        self.phase_steps += 1
        self.age += 1
        self.switched = False
        if self.memory and self.phase_steps > self.memory:            # keep about the last `memory` steps
            scale = self.memory / self.phase_steps
            self.phase_sum *= scale
            self.phase_sumsq *= scale
            self.phase_steps = self.memory
        if len(self.window) == self.window.maxlen and self.age > 2 * self.window.maxlen:
            recent = np.sum(self.window, axis=0)
            distance = 0.5 * np.abs(recent / recent.sum() - self.phase_sum / self.phase_sum.sum()).sum()
            if distance > self.switch_distance:
                self.lengths.append(self.age - len(self.window))
                self.phase_sum = recent.astype(np.float64)
                self.phase_sumsq = np.sum(np.square(self.window), axis=0)
                self.phase_steps = self.age = len(self.window)
                self.switched = True

    def predicted_load(self) -> np.ndarray:
        """Predicted mean tokens per expert per step for the rest of the phase, shape (E,)."""
        return self.phase_sum / max(self.phase_steps, 1)

    def scenarios(self) -> np.ndarray:
        """The mean plus fixed standard-normal draws times each expert's per-step deviation, shape (S, E).

        The same draws every call (common random numbers), so that decisions
        differ only where the estimate did; with ``scenarios=0``, the mean alone.
        """
        mean = self.predicted_load()
        if not len(self.normal):
            return mean[None]
        deviation = np.sqrt(np.maximum(self.phase_sumsq / max(self.phase_steps, 1) - mean**2, 0.0))
        return np.maximum(mean + self.normal * deviation, 0.0)

    def steps_left(self, default: int) -> int:
        """Predicted steps left in the phase: the mean phase length seen minus the time spent, at least 1."""
        if not self.lengths:
            return default
        return max(int(np.mean(self.lengths)) - self.age, 1)

    def horizon(self, default: int, evidence: float = 1.0) -> int:
        """Steps to price a move over: the predicted rest of the phase, but no more than ``evidence`` times
        the steps the prediction rests on (a young phase's mean is noisy, and a switch may have been misread)."""
        return max(min(self.steps_left(default), int(evidence * self.phase_steps)), 1)


@dataclass
class PricedRebalancer:
    """Moves and re-targets replicas only when each pays for itself over the predicted rest of the phase.

    Each call takes the predicted tokens per expert in ``S`` scenario steps
    (:meth:`PhaseTracker.scenarios`; the saving of a change is its mean over
    them, so a change that only helps the mean but not the noisy steps is
    worth little) and a horizon in steps. First re-targets, one at a time
    while one pays: a replica of an expert that can spare one becomes a
    replica of the expert with most load per replica (the replicate rule's
    next replica), on whichever GPU saves most. Then the moves and exchanges
    :func:`barrierlb.migration.plan_moves` finds worth their copy time. At
    most ``budget`` changes a call; a move onto a GPU that already holds the
    expert's weights ships nothing and costs nothing.
    """

    n_experts: int
    expert_bytes: float
    seconds_per_token: float
    links: Links
    budget: int = 8
    stall_s: float = 0.0

    def update(self, layout: Layout, scenarios: np.ndarray, horizon: int) -> tuple[Layout, dict]:
        """One decision on predicted tokens per expert, shape (E,) or (S, E) for ``S`` scenarios, priced
        over ``horizon`` steps.

        Re-targets first, one at a time while one pays, then the moves and
        exchanges :func:`plan_moves` finds worth their price, within ``budget``.
        Each scenario stands for ``horizon / S`` steps.
        """
        layout = layout.copy()
        scenarios = np.atleast_2d(scenarios)
        n_gpus = layout.n_gpus
        bandwidth = self.links.matrix(n_gpus)
        unit = self.seconds_per_token / n_gpus                  # seconds per unit of imbalance
        weights = np.full(scenarios.shape[0], horizon / scenarios.shape[0])
        retargets = 0
        while retargets < self.budget:
            found = self._best_retarget(layout, scenarios, bandwidth, unit, weights,
                                        self.stall_s if retargets == 0 else 0.0)
            if found is None:
                break
            _, k, e, g = found
            layout.expert[k], layout.gpu[k] = e, g
            retargets += 1
        counts = layout.counts(self.n_experts)
        expert = np.asarray(layout.expert, dtype=np.int64)
        gpu = np.asarray(layout.gpu, dtype=np.int64)
        holds = np.zeros((self.n_experts, n_gpus), dtype=bool)
        holds[expert, gpu] = True
        plan = plan_moves(gpu, (scenarios / counts)[:, expert].T, np.where(holds[expert], 0.0, self.expert_bytes),
                          layout.free_slots(), seconds_per_unit=unit, bandwidth_bytes_per_s=bandwidth,
                          stall_s=self.stall_s if retargets == 0 else 0.0, weights=weights,
                          max_moves=self.budget - retargets)
        for k, g in zip(plan.task_index.tolist(), plan.destination.tolist()):
            layout.gpu[k] = g
        return layout, {"moves": plan.moves, "retargets": retargets}

    def _best_retarget(self, layout, scenarios, bandwidth, unit, weights, stall):
        """(net saving, replica, new expert, GPU) of the best paying re-target, or None.

        The new expert is the one with most predicted load per replica (the
        replicate rule's next replica); the replica given up is one of an
        expert that keeps at least one, among the three whose load per
        replica would stay lowest.
        """
        n_gpus = layout.n_gpus
        expert = np.asarray(layout.expert, dtype=np.int64)
        gpu = np.asarray(layout.gpu, dtype=np.int64)
        counts = layout.counts(self.n_experts)
        on_gpu = np.zeros((self.n_experts, n_gpus))
        np.add.at(on_gpu, (expert, gpu), 1.0)
        mean = scenarios.mean(axis=0)
        hot = int(np.argmax(mean / counts))
        spare = np.flatnonzero(counts >= 2)
        spare = spare[(spare != hot) & (mean[spare] / np.maximum(counts[spare] - 1, 1) < mean[hot] / counts[hot])]
        if spare.size == 0:
            return None
        cold = spare[np.argsort(mean[spare] / (counts[spare] - 1), kind="stable")[:3]]
        loads = layout.gpu_loads(scenarios)                                        # (S, G)
        before = imbalance_time_s(loads, unit, weights=weights)
        free = layout.free_slots()
        hot_old, hot_new = scenarios[:, hot] / counts[hot], scenarios[:, hot] / (counts[hot] + 1)
        base_hot = loads + np.outer(hot_new - hot_old, on_gpu[hot])               # hot's replicas carry less
        cost = self.expert_bytes / np.max(np.where(on_gpu[hot][:, None] > 0, bandwidth, 0.0), axis=0) + stall
        best = None
        for e in cold.tolist():
            e_old, e_new = scenarios[:, e] / counts[e], scenarios[:, e] / (counts[e] - 1)
            for a in np.flatnonzero(on_gpu[e]).tolist():
                held = on_gpu[e].copy()
                held[a] -= 1
                base = base_hot - np.outer(e_old, on_gpu[e]) + np.outer(e_new, held)   # without the replica on a
                trial = base[None, :, :] + hot_new[None, :, None] * np.eye(n_gpus)[:, None, :]   # (G_b, S, G)
                after = unit * (weights * (n_gpus * trial.max(axis=2) - trial.sum(axis=2))).sum(axis=1)
                net = before - after - cost
                net[(on_gpu[hot] > 0) | ((free <= 0) & (np.arange(n_gpus) != a))] = -np.inf
                g = int(np.argmax(net))
                if net[g] > 0 and (best is None or net[g] > best[0]):
                    k = int(np.flatnonzero((expert == e) & (gpu == a))[0])
                    best = (float(net[g]), k, hot, g)
        return best
