"""The router's compiled one-request kernel and the ledger's scalar report paths against the array code."""

import copy

import numpy as np
import pytest

from barrierlb import _router_kernels as kernels
from barrierlb.projection import _kept_rows, running_projection
from barrierlb.router import _NO_SURVIVAL
from barrierlb.state import ClusterState


def _random_slots(rng):
    g, s = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    slot_id = np.where(rng.random((g, s)) < 0.6, rng.integers(0, 10_000, (g, s)), -1).astype(np.int64)
    work = np.where(slot_id >= 0, rng.uniform(0, 500, (g, s)).round(int(rng.integers(0, 3))), 0.0)
    growth = np.where(rng.random((g, s)) < 0.8, 1.0, rng.uniform(-2, 3, (g, s)))
    remaining = rng.uniform(0, 120, (g, s))
    remaining[rng.random((g, s)) < 0.2] = np.inf
    remaining[rng.random((g, s)) < 0.1] = 0.0
    return slot_id, work, growth, remaining


@pytest.mark.parametrize("seed", range(40))
def test_one_request_arrays_match_the_projection_exactly(seed):
    rng = np.random.default_rng(seed)
    slot_id, work, growth, remaining = _random_slots(rng)
    g, s = slot_id.shape
    horizon = int(rng.integers(0, 80))
    stride = int(rng.integers(1, 9)) if horizon else 1
    rows = horizon + 1
    kept = _kept_rows(rows, stride)
    alive = rng.random(g) < 0.8
    capacity = np.full(g, s, dtype=np.int64)
    active = (slot_id >= 0).sum(axis=1).astype(np.int64)
    pool_work, pool_growth = float(rng.uniform(0, 300)), float(rng.choice([1.0, 0.5, -1.0]))
    pool_steps = float(rng.choice([np.inf, rng.uniform(0, 90)]))
    occupied = np.flatnonzero(slot_id.ravel() >= 0)
    expected, _, _ = running_projection(occupied // s, work.ravel().take(occupied), growth.ravel().take(occupied),
                                        remaining.ravel().take(occupied)[None], g, rows, stride)
    expected = expected.T
    for by_slot, given in ((True, remaining.ravel()), (False, remaining.ravel().take(occupied))):
        loads, peak, free, unplaced, must, score, placed, n_alive = kernels.one_request_arrays(
            slot_id, work, growth, given, by_slot, rows, stride, kept, alive, bool(alive.all()), capacity, active)
        assert np.array_equal(loads, expected)
        want_peak = np.where(alive[None, :], expected, -np.inf).max(axis=1)
        assert np.array_equal(peak, want_peak)
        lookahead = kernels.waiting_lookahead(kept, pool_work, pool_growth, pool_steps, False, _NO_SURVIVAL, 0.0,
                                              np.inf)
        want_work = np.where(kept < pool_steps, np.maximum(pool_work + pool_growth * kept, 0.0), 0.0)
        assert np.array_equal(lookahead, want_work[None])
        assert np.array_equal(free, np.where(alive, capacity - active, 0))
        assert n_alive == int(alive.sum()) and score.shape == (1, int(np.count_nonzero(free)))
        assert unplaced.tolist() == [True] and must.tolist() == [False] and placed.tolist() == [0, 0]
    objective = kernels.imbalance_objective(expected, np.linspace(1, 0.1, kept.size), alive, bool(alive.all()),
                                            int(alive.sum()))
    on = expected[:, alive]
    want = float(np.linspace(1, 0.1, kept.size) @ (alive.sum() * on.max(axis=1) - on.sum(axis=1))) if alive.any() \
        else 0.0
    assert objective == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_running_and_waiting_gathers_row_major():
    rng = np.random.default_rng(3)
    slot_id, _, _, _ = _random_slots(rng)
    prompt = rng.uniform(0, 100, slot_id.shape)
    age = rng.integers(0, 50, slot_id.shape)
    ids, prompts, ages = kernels.running_and_waiting(slot_id, prompt, age, np.array([77]), np.array([5.0]))
    occupied = slot_id.ravel() >= 0
    assert ids.tolist() == slot_id.ravel()[occupied].tolist() + [77]
    assert prompts.tolist() == prompt.ravel()[occupied].tolist() + [5.0]
    assert ages.tolist() == age.ravel()[occupied].tolist() + [0]


def _ledger(rng):
    state = ClusterState(4, 3)
    ids = list(range(10))
    for tid in ids:
        state.submit_one(tid, float(rng.integers(1, 90)), growth=1.0, steps=float(rng.integers(1, 60)))
    from barrierlb.policies import make_policy

    state.place(make_policy("round-robin").decide(state))
    return state, [t for t in ids if t in state._location]


@pytest.mark.parametrize("seed", range(10))
def test_scalar_progress_and_completion_equal_the_array_path(seed):
    rng = np.random.default_rng(seed)
    state, running = _ledger(rng)
    other = copy.deepcopy(state)
    chosen = [int(t) for t in rng.choice(running, size=int(rng.integers(1, len(running) + 1)), replace=False)]
    steps = [int(n) for n in rng.integers(0, 40, len(chosen))]
    state.set_progress(chosen, steps)                              # the scalar path (lists of ints)
    other.set_progress(np.array(chosen), np.array(steps))          # the array path
    for name in ("_slot_remaining", "_slot_age", "_slot_work"):
        assert np.array_equal(getattr(state, name), getattr(other, name))
    state.complete([chosen[0]])
    other.complete(np.array([chosen[0]]))
    assert np.array_equal(state.slot_ids(), other.slot_ids()) and np.array_equal(state.active_count,
                                                                                  other.active_count)
    assert np.array_equal(state.current_load(), other.current_load())


def test_scalar_progress_rejects_what_the_array_path_rejects():
    state, running = _ledger(np.random.default_rng(0))
    before = state._slot_age.copy()
    with pytest.raises(ValueError, match="not running"):
        state.set_progress([running[0], 999], [1, 2])
    with pytest.raises(ValueError, match="twice"):
        state.set_progress([running[0], running[0]], [1, 2])
    with pytest.raises(ValueError):
        state.set_progress([running[0]], [-1])
    assert np.array_equal(state._slot_age, before)


@pytest.mark.parametrize("strata", [1, 2, 7])
@pytest.mark.parametrize("seed", range(6))
def test_survival_remaining_equals_the_bounded_predictor(seed, strata):
    from barrierlb.predictors import SurvivalPredictor
    from barrierlb.router import _Bounded

    rng = np.random.default_rng(seed)
    predictor = SurvivalPredictor(quantile=float(rng.uniform(0.05, 0.95)), min_samples=int(rng.integers(1, 30)),
                                  strata=strata)
    learned = int(rng.integers(0, 160))
    predictor.observe(rng.integers(0, 90, learned), prompt_tokens=rng.integers(0, 500, learned))
    assert strata == 1 or learned < predictor.min_samples or predictor._grouped.size == learned
    bounded = _Bounded(predictor)
    ids = np.arange(50)
    caps = np.where(rng.random(50) < 0.5, rng.integers(1, 100, 50).astype(float), np.inf)
    bounded.cap.update({i: float(c) for i, c in zip(ids.tolist(), caps.tolist()) if np.isfinite(c)})
    generated = rng.integers(0, 120, 50)
    prompt = rng.integers(0, 600, 50).astype(float)
    want = bounded.remaining(ids, prompt, generated)
    assert bounded.compiled
    model = bounded.survival_arrays()
    got = [kernels.survival_remaining(model, float(p), int(a), float(c)) for p, a, c in zip(prompt, generated, caps)]
    assert np.array_equal(np.array(got), want)
    assert _Bounded(None).compiled and not _Bounded(SurvivalPredictor(draws=4)).compiled
