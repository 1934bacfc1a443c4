import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barrierlb import StepProblem, horizon_weights, predicted_imbalance
from barrierlb.solvers import solve_exact, solve_fast


@st.composite
def problems(draw, max_workers=3, max_pool=5, max_horizon=2):
    n_workers = draw(st.integers(1, max_workers))
    horizon = draw(st.integers(0, max_horizon))
    n_pool = draw(st.integers(0, max_pool))
    value = st.integers(0, 20).map(float)
    loads = np.array([[draw(value) for _ in range(n_workers)] for _ in range(horizon + 1)])
    work = np.array([[draw(value) for _ in range(horizon + 1)] for _ in range(n_pool)]).reshape(n_pool, horizon + 1)
    free = np.array([draw(st.integers(0, 2)) for _ in range(n_workers)])
    alive = np.array([draw(st.booleans()) or g == 0 for g in range(n_workers)])
    gamma = draw(st.sampled_from([1.0, 0.5]))
    return StepProblem.from_arrays(loads, work, free, alive=alive, weights=horizon_weights(horizon, gamma=gamma))


def brute_force_optimum(problem):
    slots = [g for g in range(problem.n_workers) for _ in range(int(problem.free_slots[g]))]
    k = problem.n_to_place
    best = np.inf
    for tasks in itertools.combinations(range(problem.n_pool), k):
        for workers in set(itertools.permutations(slots, k)):
            best = min(best, predicted_imbalance(problem, np.array(tasks, dtype=np.int64),
                                                 np.array(workers, dtype=np.int64)))
    return best


def test_objective_by_hand():
    problem = StepProblem.from_arrays([[3.0, 1.0, 0.0], [2.0, 2.0, 2.0]], [[2.0, 5.0]], [1, 1, 1],
                                      weights=[1.0, 0.5])
    # step 0: loads 3,1,2 -> 3*3-6 = 3; step 1: loads 2,2,7 -> 21-11 = 10; 3 + 0.5*10
    assert predicted_imbalance(problem, [0], [2]) == pytest.approx(8.0)
    assert predicted_imbalance(problem, [], []) == pytest.approx(5.0)   # step 0: 9 - 4; step 1: 0


def test_dead_workers_do_not_count():
    problem = StepProblem.from_arrays([[3.0, 9.0]], [[1.0]], [1, 1], alive=[True, False])
    assert problem.free_slots.tolist() == [1, 0]
    assert predicted_imbalance(problem, [0], [0]) == 0.0


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_exact_solver_matches_brute_force(problem):
    result = solve_exact(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                         alive=problem.alive, time_limit_s=10)
    assert result.optimal
    value = predicted_imbalance(problem, result.task_index, result.worker)
    assert value == pytest.approx(brute_force_optimum(problem), rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(problem=problems(max_workers=4, max_pool=7, max_horizon=3))
def test_exact_never_worse_than_fast_and_fast_reports_its_objective(problem):
    fast = solve_fast(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                      alive=problem.alive)
    assert fast.objective == pytest.approx(predicted_imbalance(problem, fast.task_index, fast.worker), abs=1e-6)
    assert fast.objective <= fast.greedy_objective + 1e-9
    exact = solve_exact(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                        alive=problem.alive, time_limit_s=10)
    assert exact.optimal
    assert predicted_imbalance(problem, exact.task_index, exact.worker) <= fast.objective + 1e-6
    assert len(fast.task_index) == len(exact.task_index) == problem.n_to_place


@pytest.mark.parametrize("n_pool", [12, 40])          # enumerated, and the greedy with local search
def test_fast_solver_converts_other_arrays_once_and_places_as_numpy(xp, n_pool):
    rng = np.random.default_rng(0)
    loads, work = rng.uniform(0, 10, (5, 6)), rng.uniform(0, 5, (n_pool, 5))
    free = np.array([1, 0, 2, 1, 0, 3])
    reference = solve_fast(loads, work, free, np.ones(5))
    result = solve_fast(xp.asarray(loads), xp.asarray(work), xp.asarray(free), xp.ones(5))
    assert np.array_equal(result.task_index, reference.task_index)
    assert np.array_equal(result.worker, reference.worker)
    assert (result.objective, result.path) == (reference.objective, reference.path)


@pytest.mark.parametrize("conserving", [True, False])
@pytest.mark.parametrize("n_small", [2, 30])            # enumerated, and the greedy
def test_forced_tasks_are_placed_whether_or_not_work_conserving(conserving, n_small):
    loads = np.array([[10.0, 9.0]])
    work = np.vstack([np.ones((n_small, 1)), [[50.0]]])
    forced = np.zeros(n_small + 1, dtype=bool)
    forced[-1] = True                                  # placing it raises the peak a lot
    result = solve_fast(loads, work, [n_small, n_small], [1.0], forced=forced, work_conserving=conserving)
    assert n_small in result.task_index.tolist()
    exact = solve_exact(loads, work, [n_small, n_small], [1.0], forced=forced, work_conserving=conserving)
    assert n_small in exact.task_index.tolist()


def test_not_work_conserving_places_only_helpful_tasks():
    loads = np.array([[10.0, 10.0]])
    result = solve_fast(loads, np.array([[5.0]]), [1, 1], [1.0], work_conserving=False)
    assert result.task_index.size == 0      # any placement raises the peak


@pytest.mark.parametrize("solver", [solve_fast, solve_exact])
@pytest.mark.parametrize("name, bad, message", [
    ("projected_load", [[np.nan, 1.0]], "projected_load contains NaN"),
    ("projected_load", [[np.inf, 1.0]], "projected_load contains infinite"),
    ("pool_work", [[1.0]] * 11 + [[np.nan]], "pool_work contains NaN"),
    ("pool_work", [[1.0]] * 11 + [[-np.inf]], "pool_work contains infinite"),
    ("weights", [np.inf], "weights contains infinite"),
    ("free_slots", [1.5, 2.7], "free_slots must hold integers, got 1.5"),
    ("free_slots", [1, -1], "free_slots must be non-negative"),
    ("alive", [True, 0.7], "alive must hold true/false"),
    ("forced", [False] * 3, "forced must have shape"),
])
def test_public_solvers_check_their_arrays_once(solver, name, bad, message):
    """NaN or inf work had the fast solver place one task up to 11 times; now every bad array
    is an error naming it, whichever solver is called."""
    args = {"projected_load": [[0.0, 1.0]], "pool_work": [[1.0]] * 12, "free_slots": [6, 6], "weights": [1.0]}
    kwargs = {}
    if name in args:
        args[name] = bad
    else:
        kwargs[name] = bad
    with pytest.raises((ValueError, TypeError), match=message):
        solver(args["projected_load"], args["pool_work"], args["free_slots"], args["weights"], **kwargs)


def test_path_says_how_the_placement_was_reached():
    small = solve_fast([[3.0, 0.0]], [[1.0], [2.0], [3.0]], [2, 2], [1.0])
    assert small.path == "exact" and small.moves == 0
    alike = solve_fast([[3.0, 0.0, 1.0]], np.ones((300, 1)), [100, 100, 100], [1.0])
    assert alike.path == "water-filling"
    rng = np.random.default_rng(1)
    large = solve_fast(rng.uniform(0, 9, (3, 4)), rng.uniform(0, 3, (40, 3)), [5, 5, 5, 5], np.ones(3))
    assert large.path == "heuristic" and large.construction in ("pairs", "slots", "largest")
    assert small.construction is None and alike.construction is None


@pytest.mark.parametrize("kwargs, message", [
    ({"projected_load": [[1.0, -1.0]]}, "non-negative"),
    ({"pool_ids": [2**70]}, "pool_ids must fit in int64"),
    ({"pool_ids": [1.5]}, "pool_ids must hold integers, got 1.5"),
    ({"pool_work": [[1.0, 2.0]]}, "shape"),
    ({"free_slots": [1]}, "shape"),
    ({"projected_load": [[np.nan, 1.0]]}, "NaN"),
])
def test_step_problem_validation(kwargs, message):
    args = {"projected_load": [[1.0, 2.0]], "pool_work": [[1.0]], "free_slots": [1, 1]}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        StepProblem.from_arrays(**args)


def test_horizon_weights():
    assert horizon_weights(3).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="gamma"):
        horizon_weights(2, gamma=1.5)


@settings(max_examples=60, deadline=None)
@given(problem=problems(max_workers=4, max_pool=6, max_horizon=7), stride=st.integers(1, 4))
def test_sampled_problem_keeps_total_weight_and_scores_blockwise_constant_loads_exactly(problem, stride):
    sampled = problem.sampled(stride)
    rows = np.arange(0, problem.horizon + 1, stride)
    assert sampled.weights.sum() == pytest.approx(problem.weights.sum())
    assert np.array_equal(sampled.projected_load, problem.projected_load[rows])
    assert np.array_equal(sampled.pool_work, problem.pool_work[:, rows])
    # With loads constant over each block of `stride` steps, the sampled objective is exact.
    block = np.repeat(np.arange(rows.size), stride)[: problem.horizon + 1]
    flat = StepProblem.from_arrays(problem.projected_load[rows][block], problem.pool_work[:, rows][:, block],
                                   problem.free_slots, alive=problem.alive, weights=problem.weights)
    k = flat.n_to_place
    slots = [g for g in range(flat.n_workers) for _ in range(int(flat.free_slots[g]))][:k]
    tasks, workers = np.arange(k), np.array(slots, dtype=np.int64)
    assert predicted_imbalance(flat.sampled(stride), tasks, workers) == \
        pytest.approx(predicted_imbalance(flat, tasks, workers), rel=1e-12, abs=1e-9)


def test_sampled_rejects_a_bad_stride_and_returns_the_problem_for_stride_one():
    problem = StepProblem.from_arrays(np.zeros((3, 2)), np.ones((1, 3)), [1, 1])
    assert problem.sampled(1) is problem
    with pytest.raises(ValueError, match="stride"):
        problem.sampled(0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_workers=st.integers(2, 4), k=st.integers(2, 20), rows=st.integers(1, 5))
def test_identical_tasks_shortcut_matches_every_construction(seed, n_workers, k, rows):
    """The MPI backend's common case (new tasks costed alike, no capacity limit) runs one
    water-filling construction instead of all three; it must do exactly as well."""
    from barrierlb.solvers import fast as fast_module

    rng = np.random.default_rng(seed)
    loads = rng.integers(0, 20, (rows, n_workers)).astype(float)
    work = np.tile(rng.integers(1, 8, rows).astype(float), (k, 1))
    free = np.full(n_workers, k)
    enumerate_, init = fast_module._enumerate, fast_module._Problem.__init__

    def without_shortcut(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.identical = False

    try:
        fast_module._enumerate = lambda problem: None   # the heuristic, not the enumeration
        short = solve_fast(loads, work, free, np.ones(rows))
        fast_module._Problem.__init__ = without_shortcut
        full = solve_fast(loads, work, free, np.ones(rows))
    finally:
        fast_module._enumerate, fast_module._Problem.__init__ = enumerate_, init
    assert len(short.task_index) == k
    assert short.objective == pytest.approx(full.objective, rel=1e-12, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), n_workers=st.integers(1, 3), n_pool=st.integers(2, 5),
       rows=st.integers(1, 3), peak_weight=st.sampled_from([1.0, 1000.0]))
def test_alike_tasks_are_placed_optimally_by_counting(seed, n_workers, n_pool, rows, peak_weight):
    """Alike tasks: the solver scores every vector of per-worker counts. That must be the
    optimum over every placement (brute force), also when fewer slots than tasks are free."""
    rng = np.random.default_rng(seed)
    loads = rng.integers(0, 20, (rows, n_workers)).astype(float)
    work = np.tile(rng.integers(1, 8, rows).astype(float), (n_pool, 1))
    free = rng.integers(0, 3, n_workers)
    free[0] = max(free[0], 1)
    problem = StepProblem.from_arrays(loads, work, free, weights=rng.random(rows) + 0.1)
    result = solve_fast(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights,
                        peak_weight=peak_weight)
    assert len(result.task_index) == problem.n_to_place
    assert (np.bincount(result.worker, minlength=n_workers) <= free).all()
    value = predicted_imbalance(problem, result.task_index, result.worker, peak_weight=peak_weight)
    assert result.objective == pytest.approx(value, rel=1e-9, abs=1e-6)
    slots = [g for g in range(n_workers) for _ in range(int(free[g]))]
    best = min(predicted_imbalance(problem, np.arange(problem.n_to_place), np.array(workers, dtype=np.int64),
                                   peak_weight=peak_weight)
               for workers in set(itertools.permutations(slots, problem.n_to_place)))
    assert value == pytest.approx(best, rel=1e-9, abs=1e-6)


def test_alike_tasks_beyond_enumeration_are_water_filled_close_to_the_optimum():
    """Too many count vectors to enumerate: water-filling plus single-task moves. On instances
    small enough to check, it must be optimal almost always and close otherwise."""
    from barrierlb.solvers import enumeration

    rng = np.random.default_rng(11)
    gaps = []
    for _ in range(300):
        n_workers, rows, k = int(rng.integers(2, 6)), int(rng.integers(1, 8)), int(rng.integers(2, 12))
        loads = rng.uniform(0, 20, (rows, n_workers)) + np.outer(np.arange(rows), rng.uniform(-1, 1, n_workers))
        loads = np.maximum(loads, 0.0)
        work = np.tile(rng.uniform(0.5, 3.0, rows), (k + int(rng.integers(0, 3)), 1))
        free = rng.integers(0, k, n_workers)
        free[0] = max(int(free[0]), 1)
        free[0] += max(0, k - int(free.sum()))
        alive = rng.random(n_workers) < 0.9
        alive[0] = True
        forced = rng.random(work.shape[0]) < 0.2
        weights = rng.uniform(0.1, 1.0, rows)
        optimum = solve_fast(loads, work, free, weights, alive=alive, forced=forced)       # enumerated
        counts = enumeration._counts
        try:
            enumeration._counts = lambda *args: None                                       # too many: level path
            level = solve_fast(loads, work, free, weights, alive=alive, forced=forced)
        finally:
            enumeration._counts = counts
        problem = StepProblem.from_arrays(loads, work, free, alive=alive, weights=weights, forced=forced)
        placed = np.bincount(level.worker, minlength=n_workers)
        assert len(level.task_index) == problem.n_to_place
        assert (placed <= problem.free_slots).all() and placed[~alive].sum() == 0
        assert set(np.flatnonzero(forced)[: problem.n_to_place].tolist()) <= set(level.task_index.tolist())
        assert level.objective == pytest.approx(predicted_imbalance(problem, level.task_index, level.worker),
                                                rel=1e-9, abs=1e-6)
        peak = optimum.objective + float(weights @ (loads[:, alive].sum(axis=1) + problem.n_to_place * work[0]))
        gaps.append((level.objective - optimum.objective) / peak)
    gaps = np.array(gaps)
    assert gaps.min() > -1e-9                                   # never better than the optimum
    assert (gaps < 1e-9).mean() >= 0.95 and gaps.mean() < 1e-3 and gaps.max() < 0.05




# ------------------------------------------------- the array code against the standard
def _array_libraries():
    """(namespace, device) pairs: array-api-strict on its second device (it refuses silent host
    conversion and mixing with numpy), and CuPy where a GPU is present."""
    import array_api_strict

    out = [pytest.param((array_api_strict, array_api_strict.Device("device1")), id="array-api-strict-device1")]
    try:
        import cupy

        cupy.zeros(1)
        out.append(pytest.param((cupy, None), id="cupy", marks=pytest.mark.gpu))
    except (ImportError, RuntimeError):
        out.append(pytest.param(None, id="cupy", marks=[pytest.mark.gpu, pytest.mark.skip(
            reason="CuPy or a CUDA device is not available")]))
    return out


def _on(library, array):
    xp, device = library
    return xp.asarray(array, device=device) if device is not None else xp.asarray(array)


def _same_place(library, result):
    from barrierlb._xp import array_namespace, device_of

    xp, device = library
    assert array_namespace(result) is array_namespace(_on(library, np.zeros(1)))
    if device is not None:
        assert device_of(result) == device


def _host(array):
    from barrierlb._xp import to_host

    return np.asarray(to_host(array))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_workers=st.integers(1, 5), n_pool=st.integers(2, 9), rows=st.integers(1, 4),
       alike=st.booleans(), gamma=st.sampled_from([1.0, 0.9]))
@pytest.mark.parametrize("library", _array_libraries())
def test_array_code_runs_on_other_namespaces_and_places_as_numpy(library, seed, n_workers, n_pool, rows, alike,
                                                                   gamma):
    """The objective, the enumerations, the water-filling and the top-three table on another
    namespace's arrays (on its device): the same placements as numpy, results in that
    namespace and on that device, inputs unchanged."""
    from barrierlb.problem import imbalance_of_loads, loads_after
    from barrierlb.solvers import enumeration

    rng = np.random.default_rng(seed)
    loads = rng.uniform(0, 20, (rows, n_workers))
    work = np.tile(rng.uniform(1, 5, rows), (n_pool, 1)) if alike else rng.uniform(0, 6, (n_pool, rows))
    weights = horizon_weights(rows - 1, gamma=gamma)
    free = rng.integers(0, 3, n_workers)
    free[0] += 1
    alive = rng.random(n_workers) < 0.8
    alive[0] = True
    free[~alive] = 0
    must = np.flatnonzero(rng.random(n_pool) < 0.2)[: int(min(n_pool, free.sum()))]
    on = {name: _on(library, a) for name, a in (("loads", loads), ("work", work), ("weights", weights))}
    before = {name: _host(a).copy() for name, a in on.items()}

    want = enumeration.best_placement(loads, work, weights, free, alive, must, peak_cost=float(alive.sum()))
    got = enumeration.best_placement(on["loads"], on["work"], on["weights"], free, alive, must,
                                     peak_cost=float(alive.sum()))
    assert (want is None) == (got is None)
    if got is not None:
        for array in got[:2]:
            _same_place(library, array)
        assert [_host(a).tolist() for a in got[:2]] == [a.tolist() for a in want[:2]]
        assert got[2] == pytest.approx(want[2], rel=1e-12, abs=1e-9)
    k = int(min(n_pool, free.sum()))
    for kernel in (enumeration.best_counts, enumeration.water_fill):
        want = kernel(loads, work[0], weights, free, alive, k)
        got = kernel(on["loads"], on["work"][0, :], on["weights"], free, alive, k)
        assert (want is None) == (got is None)
        if got is not None:
            assert got[0].tolist() == want[0].tolist() and got[1:] == pytest.approx(want[1:], rel=1e-12)
    values, index = enumeration.top3(on["loads"])
    _same_place(library, values)
    assert _host(index).tolist() == enumeration.top3(loads)[1].tolist()
    task_index, worker = np.arange(min(2, n_pool)), np.zeros(min(2, n_pool), dtype=np.int64)
    after = loads_after(on["loads"], on["work"], task_index, worker)
    _same_place(library, after)
    assert np.allclose(_host(after), loads_after(loads, work, task_index, worker), rtol=1e-12)
    objective = imbalance_of_loads(after, alive, on["weights"], peak_weight=2.0)
    _same_place(library, objective)
    assert float(objective) == pytest.approx(float(imbalance_of_loads(_host(after), alive, weights,
                                                                      peak_weight=2.0)), rel=1e-12)
    assert all(np.array_equal(_host(a), before[name]) for name, a in on.items())      # inputs unchanged


@pytest.mark.parametrize("library", _array_libraries())
def test_step_problem_copies_other_arrays_to_the_host_once(library):
    problem = StepProblem.from_arrays(_on(library, np.zeros((2, 3))), _on(library, np.ones((4, 2))),
                                      _on(library, np.array([1, 2, 0])), alive=_on(library, np.array([True] * 3)))
    assert all(isinstance(a, np.ndarray) for a in (problem.projected_load, problem.pool_work, problem.free_slots,
                                                    problem.alive))
    assert problem.free_slots.tolist() == [1, 2, 0]


@pytest.mark.parametrize("n_workers", [2, 5, 70])          # padded, sorted, and three argmax passes
def test_top3_breaks_ties_by_the_lower_worker(n_workers):
    from barrierlb.solvers.enumeration import top3

    loads = np.random.default_rng(n_workers).integers(0, 4, (6, n_workers)).astype(float)
    values, index = top3(loads)
    order = np.argsort(-loads, axis=1, kind="stable")[:, :3]
    width = min(3, n_workers)
    assert index[:, :width].tolist() == order[:, :width].tolist()
    assert values[:, :width].tolist() == np.take_along_axis(loads, order, axis=1)[:, :width].tolist()
    assert (index[:, width:] == -1).all()


def test_exact_solver_skips_a_model_that_would_use_up_its_time_limit(monkeypatch):
    """The limit bounds the whole call: a model whose construction alone would exceed it is not
    built, and bfio-exact falls back to the fast solver."""
    from barrierlb import make_policy
    from barrierlb.solvers import exact

    rng = np.random.default_rng(3)
    loads, work = rng.uniform(0, 9, (4, 6)), rng.uniform(0, 3, (30, 4))
    monkeypatch.setattr(exact, "_BUILD_S_PER_ENTRY", 10.0)          # every model "too large to build"
    result = solve_exact(loads, work, [3] * 6, np.ones(4), time_limit_s=5.0)
    assert (result.status, result.found, result.optimal) == ("time_limit", False, False)
    problem = StepProblem.from_arrays(loads, work, [3] * 6)
    decision = make_policy("bfio-exact:horizon=3,time_limit_s=5").decide_problem(problem)
    assert decision.branch == "fallback" and decision.info["fallback_source"] == "fast"
    assert decision.task_ids.size == 18


# ------------------------------------------------------------------ ties spread the load (issue 15.3)

from barrierlb.solvers.fast import solve_problem  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(problem=problems(max_workers=4, max_pool=6, max_horizon=3))
def test_the_tie_break_never_costs_objective(problem):
    """With ties spread the objective is still the brute-force optimum on every enumerated
    instance, and equal to that of the first-placement rule (the term only orders exact ties)."""
    on = solve_problem(problem, spread=True)
    off = solve_problem(problem, spread=False)
    if problem.n_to_place == 0:
        return
    value = predicted_imbalance(problem, on.task_index, on.worker)
    assert value == pytest.approx(brute_force_optimum(problem), rel=1e-12, abs=1e-9)
    assert value <= predicted_imbalance(problem, off.task_index, off.worker) + 1e-9
    if on.path == "exact":
        # The enumeration's answer is the brute-force lexicographic optimum: the least sum of
        # squares among the placements of the least objective (integral work: exact ties).
        scored = [(predicted_imbalance(problem, t, w), _squares(problem, t, w)) for t, w in _placements(problem)]
        least = min(score for score, _ in scored)
        assert _squares(problem, on.task_index, on.worker) == min(sq for score, sq in scored if score == least)


def _placements(problem):
    slots = [g for g in range(problem.n_workers) for _ in range(int(problem.free_slots[g]))]
    for tasks in itertools.combinations(range(problem.n_pool), problem.n_to_place):
        for workers in set(itertools.permutations(slots, problem.n_to_place)):
            yield np.array(tasks, dtype=np.int64), np.array(workers, dtype=np.int64)


def _squares(problem, tasks, workers):
    from barrierlb.problem import spread_of_loads

    loads = problem.projected_load.copy()
    for t, w in zip(tasks.tolist(), workers.tolist()):
        loads[:, w] += problem.pool_work[t]
    return float(spread_of_loads(loads, problem.alive, problem.weights))


def _empty_cluster_problem(seed, n_workers, n_tasks, horizon, gamma, capacity):
    rng = np.random.default_rng(seed)
    from barrierlb import ClusterState, Task

    state = ClusterState(n_workers, capacity)
    state.submit([Task.decode(i, prompt_tokens=int(p), predicted_output_tokens=int(o))
                  for i, (p, o) in enumerate(zip(rng.integers(1, 5000, n_tasks), rng.integers(1, 40, n_tasks)))])
    return state.step_problem(horizon, gamma=gamma)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_workers=st.integers(2, 40), fraction=st.floats(0.05, 1.0),
       horizon=st.integers(0, 12), gamma=st.sampled_from([1.0, 0.9, 0.5]), capacity=st.integers(1, 4))
def test_an_empty_cluster_gets_at_most_one_task_per_worker(seed, n_workers, fraction, horizon, gamma, capacity):
    """N <= G new tasks on an empty cluster: one a worker (the enumeration's least sum of squares
    among optimal placements for small pools, the LPT construction's most room for large ones)."""
    n_tasks = max(2, int(round(fraction * n_workers)))
    problem = _empty_cluster_problem(seed, n_workers, min(n_tasks, n_workers), horizon, gamma, capacity)
    result = solve_problem(problem)
    assert result.task_index.size == problem.n_pool
    assert np.bincount(result.worker, minlength=n_workers).max() == 1


def test_the_readme_example_spreads_its_three_requests():
    from barrierlb import ClusterState, Task, make_policy

    state = ClusterState(n_workers=4, capacity=8)
    state.submit([Task.decode(i, prompt_tokens=p) for i, p in enumerate([900, 120, 3000])])
    decision = make_policy("bfio:horizon=16").decide(state)
    assert sorted(decision.task_ids.tolist()) == [0, 1, 2] and len(set(decision.workers.tolist())) == 3
    first_rule = make_policy("bfio:horizon=16,spread=false").decide(state)
    assert first_rule.objective == decision.objective            # the same optimum, ...
    assert len(set(first_rule.workers.tolist())) == 2            # ... which the old rule stacked


def test_a_deadline_returns_the_best_placement_so_far_and_says_so():
    problem = _empty_cluster_problem(3, 8, 60, 8, 1.0, 8)           # 60 tasks on 64 slots: heuristic
    full = solve_problem(problem)
    cut = solve_problem(problem, deadline_ms=0.0)
    assert not full.deadline_cut and cut.deadline_cut and full.path == cut.path == "heuristic"
    assert cut.task_index.size == full.task_index.size == 60                    # complete and feasible
    assert np.bincount(cut.worker, minlength=8).max() <= 8
    assert cut.moves == 0 and cut.objective >= full.objective - 1e-9
    with pytest.raises(ValueError, match="deadline_ms"):
        solve_problem(problem, deadline_ms=-1.0)


def _best_subset_by_brute_force(sizes, capacity, k):
    """(count, sum) of the most items, at most ``k``, that fit under ``capacity``, of the largest sum."""
    for count in range(min(k, len(sizes)), 0, -1):
        sums = [sum(c) for c in itertools.combinations(sizes, count) if sum(c) <= capacity]
        if sums:
            return count, max(sums)
    return 0, 0


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=9), capacity=st.integers(0, 2000),
       k=st.integers(1, 5))
def test_subset_fill_finds_the_exact_best_subset(sizes, capacity, k):
    from barrierlb.solvers._compiled import subset_fill

    chosen, total = subset_fill(np.array(sizes, dtype=np.int64), capacity, k)
    assert len(set(chosen.tolist())) == chosen.size                           # distinct positions
    assert total == sum(sizes[i] for i in chosen)
    assert (chosen.size, total) == _best_subset_by_brute_force(sizes, capacity, k)


def _one_step_problem(seed, n_pool, free, loads):
    rng = np.random.default_rng(seed)
    work = rng.integers(1, 400, n_pool).astype(float)[:, None]
    return StepProblem.from_arrays(np.array([loads], dtype=float), work, np.array(free), weights=np.ones(1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 4))
def test_one_step_problems_fill_a_worker_with_its_best_subset(seed, k):
    """One open worker with k free slots, 20 waiting tasks (beyond the enumerations): with a peak
    weight that puts not raising the peak first, the solver's fill places exactly the k tasks of
    the largest summed work under the worker's margin, whenever k tasks fit."""
    problem = _one_step_problem(seed, 20, [0, k, 0], [1000.0, 0.0, 1000.0])
    sizes = problem.pool_work[:, 0].astype(int).tolist()
    count, best = _best_subset_by_brute_force(sizes, 1000, k)
    result = solve_problem(problem, peak_weight=1000.0)
    assert result.path == "heuristic" and result.task_index.size == k
    if count == k:
        assert problem.pool_work[result.task_index, 0].sum() == best
        assert result.objective == pytest.approx(predicted_imbalance(problem, result.task_index, result.worker,
                                                                     peak_weight=1000.0))


def test_subset_fill_in_coarse_units_never_overflows_the_margin():
    """Margins beyond FILL_UNITS are filled in power-of-two units, sizes rounded up: never over the
    margin (a fill that fits in units fits in tokens), and here within 0.1% of the best."""
    from barrierlb.solvers._compiled import FILL_UNITS
    from barrierlb.solvers.fast import _Problem, _Search

    rng = np.random.default_rng(5)
    margin = 10 * FILL_UNITS + 3
    work = rng.integers(1, margin // 2, 24).astype(float)[:, None]
    problem = StepProblem.from_arrays(np.array([[margin, 0.0]]), work, np.array([0, 3]), weights=np.ones(1))
    search = _Search(_Problem(problem, True, 1000.0))
    search.greedy("fill")                                   # the construction alone
    placed = work[search.placed_task, 0].sum()
    _, best = _best_subset_by_brute_force(work[:, 0].astype(int).tolist(), margin, 3)
    assert len(search.placed_task) == 3 and set(search.placed_worker) == {1}
    assert placed <= margin and best - placed <= 1e-3 * best
    assert solve_problem(problem, peak_weight=1000.0).objective <= search.objective() + 1e-9


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_workers=st.integers(2, 12), n_pool=st.integers(17, 60),
       rows=st.integers(1, 3))
def test_share_caps_each_worker_at_its_share_of_the_placements(seed, n_workers, n_pool, rows):
    rng = np.random.default_rng(seed)
    free = rng.integers(0, 12, n_workers)
    free[0] = max(free[0], 1)
    loads = rng.uniform(0, 500, (rows, n_workers))
    work = rng.uniform(1, 300, (n_pool, rows))
    problem = StepProblem.from_arrays(loads, work, free, weights=np.ones(rows))
    k = min(n_pool, int(free.sum()))
    result = solve_problem(problem, share=True, peak_weight=1000.0)
    assert result.task_index.size == k
    counts = np.bincount(result.worker, minlength=n_workers)
    cap = free if k == free.sum() else -(-k * free // free.sum())
    assert (counts <= cap).all()


@pytest.mark.parametrize("task_index, worker, message", [
    ([-1], [0], "task_index -1 is not a position"),
    ([2], [0], "task_index 2 is not a position"),
    ([1.7], [0], "task_index must hold integers"),
    ([1], [-1], "worker -1 does not exist"),
    ([1], [2], "worker 2 does not exist"),
    ([1, 1], [0, 1], "places a task twice"),
    ([0, 1], [0], "worker must have shape"),
])
def test_predicted_imbalance_refuses_a_placement_that_is_not_one(task_index, worker, message):
    # Before: numpy wrapped -1 to the last task, truncated 1.7 to 1, added a
    # task twice, and scored the result as if it were a placement.
    problem = StepProblem.from_arrays(np.zeros((1, 2)), np.array([[1.0], [5.0]]), [1, 1])
    with pytest.raises((ValueError, TypeError), match=message):
        predicted_imbalance(problem, task_index, worker)
    assert predicted_imbalance(problem, [0, 1], [0, 1]) == 4.0


@pytest.mark.parametrize("flag", ["work_conserving", "local_search", "spread", "strict_ties", "share"])
def test_solver_flags_are_checked_not_truth_tested(flag):
    # Before: bool("false") is True, so work_conserving="false" placed every task.
    from barrierlb.solvers.fast import solve_problem

    problem = StepProblem.from_arrays(np.zeros((1, 2)), np.array([[1.0], [5.0]]), [1, 1])
    with pytest.raises(ValueError, match=f"{flag} must be true or false"):
        solve_problem(problem, **{flag: "maybe"})
    assert solve_problem(problem, **{flag: "false"}).task_index.size == (0 if flag == "work_conserving" else 2)


def test_exact_and_batched_solvers_check_work_conserving():
    from barrierlb.solvers.batched import solve_batched
    from barrierlb.solvers.exact import solve_exact_problem

    problem = StepProblem.from_arrays(np.zeros((1, 2)), np.array([[1.0], [5.0]]), [1, 1])
    with pytest.raises(ValueError, match="work_conserving must be true or false"):
        solve_exact_problem(problem, work_conserving="maybe")
    with pytest.raises(ValueError, match="work_conserving must be true or false"):
        solve_batched(np.zeros((1, 2)), np.array([[1.0], [5.0]]), np.array([1, 1]), np.ones(1),
                      work_conserving="maybe")
    assert solve_exact_problem(problem, work_conserving="no").task_index.size == 0


def test_free_slots_the_solvers_cannot_count_are_refused():
    # Before: sum(free_slots) wrapped to -2**63, so n_to_place was negative and the fast
    # solver failed with "negative dimensions are not allowed".
    with pytest.raises(ValueError, match="free_slots must be <= 3,074,457,345,618,258,602 per worker"):
        StepProblem.from_arrays(np.zeros((1, 2)), np.ones((3, 1)), [2**62, 2**62])
    problem = StepProblem.from_arrays(np.zeros((1, 2)), np.ones((3, 1)), [2**40, 2**40])
    assert problem.n_to_place == 3 and solve_fast(np.zeros((1, 2)), np.ones((3, 1)), [2**40, 2**40],
                                                  np.ones(1)).task_index.size == 3
