"""The lookahead projection: a ledger's tasks as the BF-IO step problem over the next steps.

Each placed or waiting task is affine (``work + growth * h`` until its
predicted end, as an LLM decode request's resident tokens grow by one a step)
or an explicit per-step profile. :func:`step_problem` projects them over the
horizon, optionally once per sampled future of a predictor with draws and with
freed slots projected as refilled; :func:`refresh_predictions` asks a predictor
for each task's remaining steps. :class:`barrierlb.state.ClusterState` offers
both as methods.
"""

from __future__ import annotations

import functools

import numpy as np

from barrierlb._validate import check_array, check_bool, check_int, check_real
from barrierlb.ledger import Ledger
from barrierlb.problem import StepProblem, horizon_weights


def refresh_predictions(state: Ledger, predictor) -> None:
    """Set each affine task's predicted remaining steps from ``predictor``.

    ``predictor.remaining(task_ids, prompt, generated)`` gets arrays and
    returns the predicted steps left, counting the current one; a predictor
    with ``draws`` also gives ``sample(...)``, shape ``(draws, n)``. Every
    answer is checked (shape, no NaN, non-negative; ``inf``: no end) before
    anything changes, so a bad predictor leaves the state as it was.
    """
    occupied = (state._slot_id >= 0)
    if state._profiles:
        occupied &= ~np.isin(state._slot_id, np.fromiter(state._profiles, dtype=np.int64))
    pool = state._pool
    affine = np.array([tid not in state._profiles for tid in pool["ids"].tolist()], dtype=bool) \
        if state._profiles else np.ones(pool["ids"].size, dtype=bool)
    queries = ((state._slot_id[occupied], state._slot_prompt[occupied], state._slot_age[occupied]),
               (pool["ids"][affine], pool["prompt"][affine], np.zeros(int(affine.sum()), dtype=np.int64)))
    point = [_predicted("predictor.remaining()", predictor.remaining(*query), (query[0].size,))
             if query[0].size else None for query in queries]
    draws = check_int("predictor.draws", getattr(predictor, "draws", 0) or 0, minimum=0)
    sampled = [_predicted("predictor.sample()", predictor.sample(*query), (draws, query[0].size))
               if draws and query[0].size else None for query in queries]
    if point[0] is not None:
        state._slot_remaining[occupied] = point[0]
    if point[1] is not None:
        pool["steps"][affine] = point[1]
    state.version += 1
    state._draws = None
    if draws:
        # Sampled futures: each draw replaces the point prediction of every affine task.
        slots = np.repeat(state._slot_remaining[None], draws, axis=0)
        steps = np.repeat(pool["steps"][None], draws, axis=0)
        if sampled[0] is not None:
            slots[:, occupied] = sampled[0]
        if sampled[1] is not None:
            steps[:, affine] = sampled[1]
        state._draws = (state.version, slots, steps)



def candidate_positions(wait: np.ndarray, free_total: int, limit: int | None,
                        max_wait: int | None = None) -> np.ndarray | None:
    """Pool positions a bounded decision considers, ascending, or ``None`` for the whole pool.

    The pool is in arrival order, so the first positions are the oldest tasks.
    Kept: the ``max(limit, free_total)`` oldest (never fewer than the free
    slots, so a work-conserving decision can still fill them all) plus every
    task at its waiting bound (``wait >= max_wait``), wherever it is. A task left
    out is passed over like any other, so it grows older and reaches the front
    or its bound: none starves. ``limit=None`` keeps the whole pool.

    Examples
    --------
    >>> candidate_positions(np.array([3, 0, 0, 5, 0, 0]), 1, 2, max_wait=5).tolist()
    [0, 1, 3]
    >>> candidate_positions(np.zeros(4, dtype=np.int64), 2, 8) is None
    True
    """
    n = int(wait.size)
    if limit is None:
        return None
    keep = max(int(limit), int(free_total))
    if n <= keep:
        return None
    chosen = np.zeros(n, dtype=bool)
    chosen[:keep] = True
    if max_wait is not None:
        chosen |= wait >= max_wait
    return np.flatnonzero(chosen)


def step_problem(state: Ledger, horizon: int = 0, *, gamma: float = 1.0, max_wait: int | None = None,
                 work_conserving: bool = True, refill: bool = False, stride: int = 1,
                 positions: np.ndarray | None = None) -> StepProblem:
    """The arrays of the BF-IO step problem at this decision point.

    Parameters
    ----------
    horizon : int
        Lookahead ``H``: steps ``0..H`` are predicted.
    gamma : float
        Horizon weights ``gamma**h``.
    max_wait : int, optional
        Waiting tasks passed over this many decisions are marked forced.
    refill : bool
        Project that a slot freed inside the horizon is refilled at once by
        a task of the average size placed so far (:meth:`mean_placed`),
        growing as placed tasks grow: the overloaded regime, where a waiting
        task always takes a freed slot. Without it (default) a task's load
        ends with it and the slot stays empty in the projection.
    stride : int
        Keep every ``stride``-th step of the horizon, each weighted for the
        steps it stands for: the same problem as ``.sampled(stride)`` of the
        full one, without building the rows it would drop.
    positions : array of int, optional
        Only these pool positions (ascending) are the problem's waiting tasks
        (:func:`candidate_positions`); the problem's pool index ``i`` is the
        state's pool position ``positions[i]``. Default: the whole pool.
    """
    horizon = check_int("horizon", horizon, minimum=0)
    stride = check_int("stride", stride, minimum=1) if horizon else 1
    gamma = check_real("gamma", gamma, minimum=0.0, maximum=1.0)
    max_wait = None if max_wait is None else check_int("max_wait", max_wait, minimum=0)
    work_conserving = check_bool("work_conserving", work_conserving)
    refill = check_bool("refill", refill)
    rows = horizon + 1
    occupied = state._slot_id >= 0
    if state._profiles:
        profile_slots = np.isin(state._slot_id, np.fromiter(state._profiles, dtype=np.int64))
        affine = occupied & ~profile_slots
    else:
        affine = occupied
    pool = state._pool
    # Remaining steps per scenario: the predictor's draws when it made some for this
    # very state (refresh_predictions), else the one point prediction. With H = 0 every
    # draw gives the same block (a running task runs the current step), so one is kept.
    draws = state._draws if state._draws is not None and state._draws[0] == state.version and horizon else None
    remaining, steps = (draws[1], draws[2]) if draws else (state._slot_remaining[None], pool["steps"][None])
    if positions is not None:
        pool = {name: values[positions] for name, values in pool.items()}
        steps = steps[:, positions]
    n_scen = remaining.shape[0]
    g = state.n_workers
    h = _kept_rows(rows, stride)
    n_kept = h.size
    worker = np.broadcast_to(np.arange(g)[:, None], occupied.shape)[affine]
    projected, key, count = running_projection(worker, state._slot_work[affine], state._slot_growth[affine],
                                               remaining[:, affine], g, rows, stride)
    size = n_scen * g * (n_kept + 1)
    fill = state.mean_placed() if refill else None
    if fill is not None:
        # Each slot freed inside the horizon takes a task of the average placed size at
        # once, growing like placed tasks do: the n(h) tasks ended by step h add
        # n(h) * work + growth * (h * n(h) - the sum of their ends).
        ended = np.bincount(key, minlength=size).reshape(n_scen * g, n_kept + 1)
        ends = np.bincount(key, weights=count.ravel().astype(np.float64), minlength=size)
        n_ended = np.cumsum(ended, axis=1)[:, :n_kept]
        late = h * n_ended - np.cumsum(ends.reshape(n_scen * g, n_kept + 1), axis=1)[:, :n_kept]
        projected += fill[0] * n_ended + fill[1] * late
    projected = projected.reshape(n_scen, g, n_kept).transpose(0, 2, 1).copy()
    for tid, profile in state._profiles.items():
        where = state._location.get(tid)
        if where is not None:
            window = np.zeros(rows)
            part = profile[state._slot_age[where]: state._slot_age[where] + rows]
            window[: part.size] = part
            projected[:, :, where[0]] += window[::stride]
    grown = np.maximum(pool["work"][:, None] + pool["growth"][:, None] * h, 0.0)          # (N, R)
    # (ends past the horizon capped: finite, and never used there)
    after = fill[0] + fill[1] * (h - np.ceil(np.minimum(steps, rows))[:, :, None]) if fill is not None else 0.0
    pool_work: np.ndarray = np.where(h < steps[:, :, None], grown, after)                  # (S, N, R)
    for i, tid in enumerate(pool["ids"].tolist() if state._profiles else ()):
        waiting_profile = state._profiles.get(tid)
        if waiting_profile is not None:
            full = np.zeros(rows)
            full[: min(rows, waiting_profile.size)] = waiting_profile[:rows]
            pool_work[:, i] = full[::stride]
    forced = (pool["wait"] >= max_wait) if max_wait is not None else np.zeros(pool["ids"].size, dtype=bool)
    prompt = np.where(occupied, state._slot_prompt, 0.0).sum(axis=1)
    weights = _kept_weights(horizon, gamma, stride)
    return StepProblem._built(projected_load=projected.reshape(n_scen * n_kept, g),
                       pool_work=pool_work.transpose(1, 0, 2).reshape(-1, n_scen * n_kept),
                       pool_ids=pool["ids"].copy(), free_slots=state.free_slots, alive=state.alive.copy(),
                       weights=np.tile(weights, n_scen) / n_scen if n_scen > 1 else weights, forced=forced,
                       active_count=state._active_count.copy(), active_prompt=prompt,
                       active_load=state.current_load(), pool_prompt=pool["prompt"].copy(),
                       work_conserving=work_conserving, scenarios=n_scen, stride=stride)



def running_projection(worker: np.ndarray, work: np.ndarray, growth: np.ndarray, remaining: np.ndarray,
                       n_workers: int, rows: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The running affine tasks' load per worker at every kept step, per scenario.

    ``worker``, ``work``, ``growth``: per running task; ``remaining``: its predicted
    remaining steps, shape ``(S, m)`` (one row per scenario). Returns the loads, shape
    ``(S * G, n_kept)`` (kept steps ``0, stride, ... < rows``), and the bucket ``key``
    and step ``count`` of every (scenario, task), which the refill projection reuses.

    Only every stride-th step is kept (all when stride is 1). An affine task contributes
    (work + growth*h) for h < count = ceil(remaining), so to the kept rows k < j =
    ceil(count / stride); bucket tasks by j, and a reverse cumsum over the buckets gives
    P[k] = sum over tasks with j > k. A running task runs at least the next step, even
    past its predicted end.
    """
    n_scen = remaining.shape[0]
    kept = _kept_rows(rows, stride)
    n_kept = kept.size
    # (clip without np.clip's Python layers: a running task runs 1..rows steps of the window)
    count = np.minimum(np.maximum(np.ceil(remaining), 1), rows).astype(np.int64)           # (S, m)
    span = -(-count // stride)                                                        # kept rows covered
    size = n_scen * n_workers * (n_kept + 1)
    if n_scen == 1:                          # the common case: one prediction per task, no tiling
        key = worker * (n_kept + 1) + span[0]
        base = np.bincount(key, weights=work, minlength=size)
        slope = np.bincount(key, weights=growth, minlength=size)
    else:
        key = ((np.arange(n_scen)[:, None] * n_workers + worker) * (n_kept + 1) + span).ravel()
        base = np.bincount(key, weights=np.tile(work, n_scen), minlength=size)
        slope = np.bincount(key, weights=np.tile(growth, n_scen), minlength=size)
    base = base.reshape(n_scen * n_workers, n_kept + 1)[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]
    slope = slope.reshape(n_scen * n_workers, n_kept + 1)[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]
    return np.maximum(base + slope * kept, 0.0), key, count


@functools.lru_cache(maxsize=16)
def _kept_rows(rows: int, stride: int) -> np.ndarray:
    """The kept steps ``0, stride, ... < rows`` as floats (read-only: shared by every decision)."""
    kept = np.arange(0, rows, stride).astype(np.float64)
    kept.setflags(write=False)
    return kept


@functools.lru_cache(maxsize=16)
def _kept_weights(horizon: int, gamma: float, stride: int) -> np.ndarray:
    """Horizon weights summed over each block of ``stride`` steps (read-only; a decision
    point asks for the same ones every time)."""
    weights = np.add.reduceat(horizon_weights(horizon, gamma=gamma), np.arange(0, horizon + 1, stride))
    weights.setflags(write=False)
    return weights



def _predicted(name: str, values, shape: tuple) -> np.ndarray:
    """A predictor's answer, checked: ``shape``, no NaN, non-negative (``inf``: no predicted end)."""
    return check_array(name, values, shape=shape, nonnegative=True, allow_inf=True)

