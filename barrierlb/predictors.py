"""Lookahead predictors: how many decode steps a request has left, how much a task will cost.

A predictor answers ``remaining(task_ids, prompt, generated)`` with the
predicted steps left (counting the next one) for each request;
``observe(output_tokens, prompt_tokens=None)`` feeds it the output lengths of
requests that finished, with their prompt lengths where known. ``adaptive`` predictors
change their answers as they learn and are refreshed before every decision.
"""

from __future__ import annotations

import math

import numpy as np

from barrierlb._numba import compiled
from barrierlb._validate import check_array, check_int, check_real


class OraclePredictor:
    """The true remaining length (the paper's setting); never negative."""

    adaptive = False

    def __init__(self, output_tokens):
        self._output = check_array("output_tokens", output_tokens, ndim=1, nonnegative=True)

    def remaining(self, task_ids, prompt, generated) -> np.ndarray:
        return np.maximum(self._output[np.asarray(task_ids)] - np.asarray(generated), 0.0)

    def observe(self, output_tokens, prompt_tokens=None) -> None:
        pass


class NoEndPredictor:
    """Predicts no end: lookaheads keep every request running (growth only, no oracle)."""

    adaptive = False

    def remaining(self, task_ids, prompt, generated) -> np.ndarray:
        return np.full(np.shape(task_ids), math.inf)

    def observe(self, output_tokens, prompt_tokens=None) -> None:
        pass


class NoisyOraclePredictor:
    """The true output length times a per-request log-normal error ``exp(N(0, sigma))``.

    A request that outlives its predicted length has 0 steps predicted left (it
    still runs the current step)."""

    adaptive = False

    def __init__(self, output_tokens, *, sigma: float = 0.5, seed: int = 0):
        output = check_array("output_tokens", output_tokens, ndim=1, nonnegative=True)
        self.sigma = check_real("sigma", sigma, minimum=0.0)
        rng = np.random.default_rng(check_int("seed", seed, minimum=0))
        self._predicted = np.maximum(np.rint(output * np.exp(rng.normal(0.0, self.sigma, output.size))), 1.0)

    def remaining(self, task_ids, prompt, generated) -> np.ndarray:
        return np.maximum(self._predicted[np.asarray(task_ids)] - np.asarray(generated), 0.0)

    def observe(self, output_tokens, prompt_tokens=None) -> None:
        pass


class SurvivalPredictor:
    """Learns output lengths online; needs no oracle.

    Predicts the ``quantile`` (default the median) of a request's remaining
    length given the tokens it has generated so far, from the empirical
    distribution of finished requests: among finished outputs longer than
    ``generated``, the quantile of ``output - generated``. Until
    ``min_samples`` requests have finished, and for requests that outlived every
    finished one, it predicts no end (``inf``): the lookahead keeps them running.

    With ``strata`` above 1 the distribution is also conditioned on the prompt
    length: the finished requests whose prompts are known are cut into
    ``strata`` groups of equal size by prompt length (edges at the quantiles of
    the window's prompts, so no scale is hand-picked), and a request is
    predicted from its own group's outputs wherever at least ``min_samples`` of
    them ran longer than it has; elsewhere from all finished outputs.

    Parameters
    ----------
    quantile : float
        Which conditional quantile to predict, in (0, 1).
    min_samples : int
        Finished requests needed before predicting (and, with ``strata``, the
        outputs of a group longer than ``generated`` needed to use that group).
    window : int
        Only the most recent ``window`` finished requests are kept, so the
        estimate follows a drifting workload.
    draws : int
        When positive, :meth:`sample` also gives this many draws of each
        request's remaining length from the same conditional distribution, and
        the cluster state builds one scenario per draw: BF-IO then minimizes the
        average predicted imbalance over the scenarios instead of trusting one
        number (``--predictor scenarios:K``).
    seed : int
        Seed of the draws. A request's draws depend only on the seed, its id
        and the draw index, so the same request keeps the same futures from one
        decision to the next (common random numbers).
    strata : int
        Prompt-length groups (1: the output distribution ignores the prompt).
    """

    adaptive = True

    def __init__(self, *, quantile: float = 0.5, min_samples: int = 32, window: int = 4096, draws: int = 0,
                 seed: int = 0, strata: int = 1):
        self.quantile = check_real("quantile", quantile, minimum=0.0, maximum=1.0)
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be strictly between 0 and 1, got {quantile}")
        self.min_samples = check_int("min_samples", min_samples, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.draws = check_int("draws", draws, minimum=0)
        self.seed = check_int("seed", seed, minimum=0)
        self.strata = check_int("strata", strata, minimum=1)
        self._recent = np.zeros(0)
        self._recent_prompt = np.zeros(0)         # with strata; NaN where a finished request's prompt was not given
        self._sorted = np.zeros(0)
        # The strata, when there are any: interior prompt edges, and every group's outputs sorted in one
        # array, group k's shifted up by k * _shift so that one searchsorted serves all groups.
        self._edges = np.zeros(0)
        self._grouped = np.zeros(0)
        self._group_end = np.zeros(1, dtype=np.int64)
        self._shift = 0.0

    @property
    def n_observed(self) -> int:
        return int(self._recent.size)

    def observe(self, output_tokens, prompt_tokens=None) -> None:
        """Learn finished requests' output lengths, with their prompt lengths where known
        (``prompt_tokens``: one per output, or ``None``)."""
        output = check_array("output_tokens", np.atleast_1d(output_tokens), ndim=1, nonnegative=True)
        if prompt_tokens is not None:
            prompt_tokens = check_array("prompt_tokens", np.atleast_1d(prompt_tokens), shape=output.shape,
                                        nonnegative=True)
        if output.size:
            self._recent = np.concatenate([self._recent, output])[-self.window:]
            self._sorted = np.sort(self._recent)
            if self.strata > 1:                   # one distribution needs no prompts
                prompt = np.full(output.size, math.nan) if prompt_tokens is None else prompt_tokens
                self._recent_prompt = np.concatenate([self._recent_prompt, prompt])[-self.window:]
                self._group()

    def _group(self) -> None:
        known = ~np.isnan(self._recent_prompt)
        prompt, output = self._recent_prompt[known], self._recent[known]
        if prompt.size < self.min_samples:
            self._edges, self._grouped, self._group_end = np.zeros(0), np.zeros(0), np.zeros(1, dtype=np.int64)
            return
        self._edges = np.unique(np.quantile(prompt, np.arange(1, self.strata) / self.strata))
        group = np.searchsorted(self._edges, prompt, side="right")
        self._shift = float(output.max()) + 1.0
        self._grouped = np.sort(output + group * self._shift)
        self._group_end = np.searchsorted(self._grouped, np.arange(1, self._edges.size + 2) * self._shift)

    def remaining(self, task_ids, prompt, generated) -> np.ndarray:
        generated = np.asarray(generated, dtype=np.float64)
        if self._sorted.size < self.min_samples:
            return np.full(generated.shape, math.inf)
        return self._conditional(prompt, generated, self.quantile)

    def _conditional(self, prompt, generated: np.ndarray, q) -> np.ndarray:
        """The ``q``-quantile (a number, or an array broadcasting against ``generated``) of
        ``output - generated`` over the finished outputs longer than ``generated`` (of the
        request's prompt group where that has ``min_samples`` of them); ``inf`` where no
        finished request ran that long."""
        pooled, _ = _quantile_above(self._sorted, 0, self._sorted.size, generated, q)
        if not self._grouped.size or prompt is None:
            return pooled
        group = np.searchsorted(self._edges, np.asarray(prompt, dtype=np.float64), side="right")
        end = self._group_end[group]
        start = np.where(group > 0, self._group_end[np.maximum(group - 1, 0)], 0)
        own, alive = _quantile_above(self._grouped, start, end, generated + group * self._shift, q)
        return np.where(alive >= self.min_samples, own, pooled)

    def sample(self, task_ids, prompt, generated) -> np.ndarray:
        """``draws`` draws of each request's remaining length, shape ``(draws, n)``.

        Draw ``k`` of a request that has generated ``a`` tokens is the
        ``u``-quantile of the finished outputs longer than ``a`` (in its prompt
        group, as :meth:`remaining` chooses), minus ``a``, with ``u`` uniform
        from a hash of (seed, task id, k). No end (``inf``) where
        :meth:`remaining` predicts none.
        """
        generated = np.asarray(generated, dtype=np.float64)
        if self._sorted.size < self.min_samples:
            return np.full((self.draws, generated.size), math.inf)
        return self._conditional(prompt, generated,
                                 _uniform_hash(np.asarray(task_ids, dtype=np.uint64), self.draws, self.seed))


def _quantile_above(values: np.ndarray, start, end, threshold: np.ndarray, q) -> tuple[np.ndarray, np.ndarray]:
    """``(q-quantile of values[start:end] - threshold over the entries above threshold, how many
    entries are above)`` (``values`` sorted, not empty; ``start``/``end`` numbers or arrays
    broadcasting against ``threshold``); the quantile is ``inf`` where none is above."""
    first = np.searchsorted(values, threshold, side="right")
    if not np.isscalar(start) or start:
        first = np.maximum(first, start)
    alive = end - first
    pick = np.minimum(first + np.floor(q * alive).astype(np.int64), end - 1)    # where alive > 0: in range
    return np.where(alive > 0, values[pick] - threshold, math.inf), alive


def _lifetime_kernel():
    """:mod:`barrierlb._lifetime_kernel`, imported on first use (numba loads then, not at import;
    :func:`barrierlb._numba.compiled`)."""
    return compiled("_lifetime_kernel")


def _uniform_hash(ids: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Uniform numbers in [0, 1) from (seed, id, draw) by SplitMix64, shape ``(draws, len(ids))``."""
    with np.errstate(over="ignore"):
        z = (ids[None, :] * np.uint64(draws + 1) + np.arange(draws, dtype=np.uint64)[:, None]
             + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class PersistencePredictor:
    """Charm++'s persistence principle: a task's recent cost, with its trend, predicts its next steps.

    The lookahead of a task is ``last + slope * (h + 1)`` (never negative), with
    ``slope`` the average change over its last ``window`` measurements. Histories
    are kept as rows of one array so that a rank's whole projected load is a few
    vector operations, whatever its number of tasks.
    """

    def __init__(self, window: int = 4):
        self.window = check_int("window", window, minimum=1)
        self._row: dict[int, int] = {}
        self._free_rows: list[int] = []
        self._history = np.zeros((0, self.window))     # a ring buffer per task
        self._count = np.zeros(0, dtype=np.int64)      # measurements ever recorded per row
        self._last = np.zeros(0)                       # latest measurement per row
        self._slope = np.zeros(0)                      # its trend per row
        self._used = np.zeros(0, dtype=bool)           # rows of tasks known now

    def known(self, task_id: int) -> bool:
        return task_id in self._row

    def observe(self, task_ids, costs) -> None:
        """Record one measured cost per task (arrays of equal length).

        A cost that is negative, NaN or infinite, or a length mismatch, is a
        ``ValueError`` naming it, with nothing recorded.
        """
        costs = check_array("costs", costs, shape=(len(task_ids),), nonnegative=True)
        known = self._row
        for task_id in task_ids:  # first measurements get their rows here; the lookup below is C-level
            if task_id not in known:
                self._row_of(task_id)
        rows = np.fromiter(map(known.__getitem__, task_ids), dtype=np.int64, count=len(task_ids))
        if rows.size:
            count = self._count[rows]
            self._history[rows, count % self.window] = costs
            count += 1
            self._count[rows] = count
            kept = np.minimum(count, self.window)
            oldest = self._history[rows, (count - kept) % self.window]
            self._last[rows] = costs
            self._slope[rows] = np.where(kept > 1, (costs - oldest) / np.maximum(kept - 1, 1), 0.0)

    def forget(self, task_id: int) -> None:
        row = self._row.pop(task_id, None)
        if row is not None:
            self._count[row] = 0
            self._used[row] = False
            self._free_rows.append(row)

    def _row_of(self, task_id: int) -> int:
        row = self._row.get(task_id)
        if row is None:
            if not self._free_rows:
                size, grow = self._count.size, max(16, self._count.size)
                self._free_rows = list(range(size + grow - 1, size - 1, -1))
                self._history = np.concatenate([self._history, np.zeros((grow, self.window))])
                self._count = np.concatenate([self._count, np.zeros(grow, dtype=np.int64)])
                self._last = np.concatenate([self._last, np.zeros(grow)])
                self._slope = np.concatenate([self._slope, np.zeros(grow)])
                self._used = np.concatenate([self._used, np.zeros(grow, dtype=bool)])
            row = self._row[task_id] = self._free_rows.pop()
            self._used[row] = True
        return row

    def lookahead(self, task_ids, horizon: int) -> np.ndarray:
        """Predicted cost of each task for steps ``1..horizon+1`` ahead, shape ``(n, horizon + 1)``."""
        rows = np.fromiter(map(self._row.__getitem__, task_ids), dtype=np.int64, count=len(task_ids))
        return np.maximum(self._last[rows, None] + self._slope[rows, None] * (np.arange(horizon + 1) + 1), 0.0)

    def total_lookahead(self, horizon: int) -> np.ndarray:
        """``lookahead`` summed over every known task (observed, not forgotten), shape ``(horizon + 1,)``.

        A line is non-negative between two points where it is, so when every
        task's prediction is non-negative at both ends of the horizon the sum
        is the line of the sums: no per-task matrix.
        """
        last, slope = self._last[self._used], self._slope[self._used]
        ahead = np.arange(horizon + 1) + 1.0
        if not last.size:
            return np.zeros(horizon + 1)
        if min((last + slope).min(), (last + slope * ahead[-1]).min()) >= 0.0:
            return last.sum() + slope.sum() * ahead
        return np.maximum(last[:, None] + slope[:, None] * ahead, 0.0).sum(axis=0)


class LifetimeObserver:
    """Lifetimes of sticky tasks, learnt from what a ledger shows between calls; needs no oracle.

    :meth:`observe` is given the ledger's slots (task id and age per slot) at each
    decision point. A task whose slot holds another id (or none) since the last
    call has left: its lifetime is the age it was last seen at plus the steps run
    since (read from the tasks seen both times, which also keep a clock of steps;
    when none was, from the oldest task that started since, at least one step).
    The ``window`` most recent lifetimes are kept, with the step they ended at.

    :meth:`quantile` is the Kaplan-Meier estimate of a lifetime quantile over the
    tasks that started in the last ``span`` steps: those that left are ends,
    those still running are censored at their age (they live at least that
    long). One cohort, so neither the short tasks that end first nor the long
    ones that make up most of a running batch bias it, and it follows a change
    of traffic within about ``span`` steps. Where the estimated survival never
    falls to ``1 - q``, it returns the oldest age in the cohort (a lower bound).

    Examples
    --------
    >>> obs = LifetimeObserver()
    >>> obs.observe(np.array([[1, 2]]), np.array([[3, 5]]))
    >>> obs.observe(np.array([[-1, 2]]), np.array([[0, 6]]))    # task 1 left after 4 steps
    >>> obs.lifetimes().tolist(), obs.n_finished, obs.clock
    ([4.0], 1, 1)
    >>> obs.quantile(0.5)          # task 2, censored at 6, outlives the estimate's only end
    4.0
    """

    def __init__(self, *, window: int = 16384, span: int = 2048):
        self.window = check_int("window", window, minimum=1)
        self.span = check_int("span", span, minimum=1)
        self._ids: np.ndarray | None = None         # the slots at the last call (own copies)
        self._age: np.ndarray | None = None
        # Ring buffers of the kept lifetimes and the step each ended at; the oldest at
        # ``_head`` once ``window`` are kept, so recording costs what the new ends cost.
        self._life = np.zeros(self.window)
        self._end = np.zeros(self.window)
        self._head = 0                              # where the next lifetime goes
        self.clock = 0                              # steps seen run
        self.n_finished = 0                         # lifetimes ever observed
        #: Whether the last :meth:`quantile` was a lower bound (survival never fell to ``1 - q``).
        self.censored = True

    @property
    def n_kept(self) -> int:
        """Lifetimes kept (at most ``window``)."""
        return min(self.n_finished, self.window)

    def observe(self, slot_ids, slot_age) -> None:
        """Record the slots' task ids (-1: empty) and ages, both shape (G, S)."""
        ids = np.asarray(slot_ids, dtype=np.int64)
        age = np.asarray(slot_age, dtype=np.int64)
        if ids.shape != age.shape:
            raise ValueError(f"slot_ids and slot_age must have one shape, got {ids.shape} and {age.shape}")
        previous, before = self._ids, self._age
        if previous is None or before is None or previous.shape != ids.shape:
            self._ids, self._age = ids.copy(), age.copy()
            return
        # One compiled pass (barrierlb._lifetime_kernel): the steps run since the last call are the
        # largest age gain of a task seen both times (at least 0); with none seen both times, a task
        # that started since has run at most the steps between (the oldest arrival, at least 1). A
        # task that left lived its last age plus those steps (at least 1). The slots are copied.
        # The ends go to the ring buffers in the same pass, from _head on.
        self._advanced(*_lifetime_kernel().observe_slots(previous, before, ids, age, self._life, self._end,
                                                         self._head, self.clock))

    def _advanced(self, elapsed: int, n_left: int) -> None:
        """Count a compiled pass over the slots that found ``elapsed`` steps run and ``n_left`` tasks
        gone (:meth:`observe`'s, or the router's own in its one-request call)."""
        self.clock += int(elapsed)
        if n_left:
            self.n_finished += int(n_left)
            self._head = (self._head + int(n_left)) % self.window

    def _kept(self, buffer: np.ndarray) -> np.ndarray:
        """The kept part of a ring buffer, oldest first."""
        if self.n_finished < self.window:
            return buffer[:self.n_finished]
        return np.concatenate([buffer[self._head:], buffer[:self._head]])

    def lifetimes(self) -> np.ndarray:
        """The kept lifetimes of tasks that left, oldest first."""
        return self._kept(self._life).copy()

    def running_ages(self) -> np.ndarray:
        """Ages of the tasks running at the last call."""
        if self._ids is None or self._age is None:
            return np.zeros(0)
        return self._age[self._ids >= 0].astype(np.float64)

    def quantile(self, q: float = 0.5) -> float:
        """Kaplan-Meier ``q``-quantile of a lifetime in steps (0.0 before anything was seen)."""
        q = check_real("q", q, minimum=0.0, maximum=1.0)
        first = float(self.clock - self.span)                   # the cohort: started at or after this step
        kept = self.n_kept
        life, end = self._life[:kept], self._end[:kept]        # order does not matter below
        if self.n_finished > self.window:                 # ends before the kept ones were dropped
            first = max(first, float(self._end[self._head]))
        ends = life[end - life >= first]
        censored = self.running_ages()
        censored = censored[censored <= self.clock - first]
        self.censored = True
        if not ends.size + censored.size:
            return 0.0
        # Counts per whole step (ages and lifetimes are whole steps; the cohort spans `span` of them).
        ends_at = np.bincount(ends.astype(np.int64))
        size = max(ends_at.size, int(censored.max(initial=0.0)) + 1)
        ends_at = np.pad(ends_at, (0, size - ends_at.size))
        gone = ends_at + np.bincount(censored.astype(np.int64), minlength=size)
        at_risk = gone.sum() - np.concatenate([[0], np.cumsum(gone)[:-1]])     # still there at each step
        hazard = np.divide(ends_at, at_risk, out=np.zeros(size), where=at_risk > 0)
        survival = np.cumprod(1.0 - hazard)
        below = np.flatnonzero((ends_at > 0) & (survival <= 1.0 - q + 1e-12))
        self.censored = not below.size
        return float(below[0]) if below.size else float(size - 1)


def cost_lookahead(cost, obj, horizon: int) -> np.ndarray:
    """A user cost model's prediction for ``obj`` as ``horizon + 1`` non-negative numbers.

    ``cost(obj, horizon)`` may return one number (the same every step) or
    ``horizon + 1`` of them; anything else is a ``ValueError``.
    """
    value = cost(obj, horizon)
    try:                        # numbers only: not True (1.0) nor the string "5" (5.0), as np.asarray takes them
        array = check_array("cost()", value)
    except (TypeError, ValueError):
        array = None
    out = None if array is None else np.broadcast_to(array, (horizon + 1,)) if array.ndim == 0 else array
    if out is None or out.shape != (horizon + 1,) or (out < 0).any():
        raise ValueError(f"cost() must return a non-negative number or {horizon + 1} of them, got {value!r}")
    return np.array(out)


def make_predictor(spec: str, output_tokens, *, seed: int = 0):
    """``oracle``, ``noisy[:sigma]``, ``survival[:quantile]``, ``prompt-survival[:strata]`` (the survival
    median per prompt-length group, default 16 groups), ``scenarios[:draws]`` or ``none``."""
    name, _, arg = spec.partition(":")

    def number(kind, default):
        if not arg:
            return default
        try:
            return kind(arg)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"predictor {spec!r}: {arg!r} after ':' is not {what}") from None

    if name in ("oracle", "none") and arg:
        raise ValueError(f"predictor {spec!r}: {name} takes no argument")
    if name == "oracle":
        return OraclePredictor(output_tokens)
    if name == "none":
        return NoEndPredictor()
    if name == "noisy":
        return NoisyOraclePredictor(output_tokens, sigma=number(float, 0.5), seed=seed)
    if name == "survival":
        return SurvivalPredictor(quantile=number(float, 0.5))
    if name == "prompt-survival":
        strata = number(int, 16)
        if strata < 1:
            raise ValueError(f"predictor {spec!r}: prompt-survival needs at least 1 stratum")
        return SurvivalPredictor(strata=strata)
    if name == "scenarios":
        draws = number(int, 16)
        if draws < 1:
            raise ValueError(f"predictor {spec!r}: scenarios needs at least 1 draw")
        return SurvivalPredictor(draws=draws, seed=seed)
    raise ValueError(f"unknown predictor {spec!r}; use oracle, noisy[:SIGMA], survival[:QUANTILE], "
                     "prompt-survival[:STRATA], scenarios[:DRAWS] or none")
