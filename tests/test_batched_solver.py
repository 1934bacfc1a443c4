"""The round-based solver (barrierlb.solvers.batched) on numpy, array-api-strict's second device and CuPy."""

from dataclasses import replace

import numpy as np
import pytest
from _gpu import cupy_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from test_solvers import problems as solver_problems

from barrierlb import predicted_imbalance
from barrierlb.snapshots import decode_snapshot
from barrierlb.solvers import solve_fast
from barrierlb.solvers.batched import PATH, solve_batched
from barrierlb.workloads import synthetic

strict = pytest.importorskip("array_api_strict")
compat = pytest.importorskip("array_api_compat")


def _to_strict(array):
    return strict.asarray(array, device=strict.Device("device1"))


def _to_cupy(array):
    return cupy_or_skip().asarray(array)


#: Where the kernel runs: numpy itself, array-api-strict on its second device (refuses any
#: silent trip to the host or mix with numpy), and CuPy where a GPU is present.
NAMESPACES = [pytest.param(np.asarray, id="numpy"), pytest.param(_to_strict, id="strict-device1"),
              pytest.param(_to_cupy, id="cupy", marks=pytest.mark.gpu)]


def _host(array):
    """A result array back on the host, through the one route every namespace supports here."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if get is not None:                                      # CuPy
        return get()
    return np.asarray(array.to_device(strict.Device("CPU_DEVICE")))


def _solve(convert, problem, **options):
    args = [convert(a) for a in (problem.projected_load, problem.pool_work, problem.free_slots, problem.weights)]
    return solve_batched(*args, alive=convert(problem.alive), forced=convert(problem.forced), **options)


@st.composite
def problems(draw):
    """The solver tests' problems, larger, with forced tasks, and sometimes only step 0 weighted."""
    problem = draw(solver_problems(max_workers=6, max_pool=10, max_horizon=3))
    forced = np.array([draw(st.booleans()) and draw(st.booleans()) for _ in range(problem.n_pool)], dtype=bool)
    weights = problem.weights
    if draw(st.booleans()):
        weights = np.zeros_like(weights)
        weights[0] = 1.0
    return replace(problem, forced=forced, weights=weights)


def _check_placement(problem, result, work_conserving):
    tasks, workers = _host(result.task_index), _host(result.worker)
    assert tasks.dtype == np.int64 and workers.dtype == np.int64 and tasks.shape == workers.shape
    assert np.unique(tasks).size == tasks.size                                   # each task at most once
    assert (np.bincount(workers, minlength=problem.n_workers) <= problem.free_slots).all()   # capacity
    assert problem.alive[workers].all()                                          # dead workers get nothing
    if work_conserving:
        assert tasks.size == problem.n_to_place
        assert problem.forced[tasks].sum() == min(int(problem.forced.sum()), problem.n_to_place)
    assert result.objective == pytest.approx(predicted_imbalance(problem, tasks, workers), rel=1e-12, abs=1e-9)
    assert result.path == PATH
    return tasks, workers


@pytest.mark.parametrize("convert", NAMESPACES)
@settings(max_examples=60, deadline=None)
@given(problem=problems(), work_conserving=st.booleans())
def test_invariants_and_the_same_placement_as_numpy(convert, problem, work_conserving):
    reference = _solve(np.asarray, problem, work_conserving=work_conserving)
    result = _solve(convert, problem, work_conserving=work_conserving)
    tasks, workers = _check_placement(problem, result, work_conserving)
    assert tasks.tolist() == reference.task_index.tolist()
    assert workers.tolist() == reference.worker.tolist()
    assert result.objective == reference.objective
    if not work_conserving:
        nothing = predicted_imbalance(problem, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        unforced = ~problem.forced[tasks]
        # Every unforced placement was made because it lowered the objective.
        if unforced.all():
            assert result.objective <= nothing + 1e-4      # the tie-break term is 1e-6 per unit of room


@pytest.mark.parametrize("convert", NAMESPACES)
def test_results_stay_in_the_inputs_namespace_and_inputs_are_unchanged(convert):
    problem = decode_snapshot(synthetic(500, seed=1), 8, 6, 40, 10, seed=3).step_problem(6)
    inputs = [convert(a) for a in (problem.projected_load, problem.pool_work, problem.free_slots, problem.weights)]
    before = [_host(a).copy() for a in inputs]
    result = solve_batched(*inputs)
    namespace = compat.array_namespace(inputs[0])
    assert compat.array_namespace(result.task_index, result.worker) is namespace
    assert compat.device(result.worker) == compat.device(inputs[0])
    for array, copy in zip(inputs, before):
        assert np.array_equal(_host(array), copy)


@pytest.mark.parametrize("convert", NAMESPACES)
def test_within_one_percent_of_the_fast_solver_on_a_decode_snapshot(convert):
    # A decode decision point with many free slots (the case that takes several rounds).
    state = decode_snapshot(synthetic(4000, seed=0), 64, 16, 512, 150, seed=5)
    problem = state.step_problem(16)
    fast = solve_fast(problem.projected_load, problem.pool_work, problem.free_slots, problem.weights)
    result = _solve(convert, problem)
    _check_placement(problem, result, True)
    assert result.rounds >= 2                          # several rounds, many placements per round
    assert result.rounds < problem.n_to_place
    assert result.objective <= fast.objective * 1.01


def test_a_peak_raising_placement_is_made_alone():
    # An empty cluster: every placement raises the peak, so each round places one task, the one
    # raising the objective least (the smallest first).
    result = solve_batched(np.zeros((1, 2)), np.array([[3.0], [2.0], [1.0]]), np.array([1, 1]), np.ones(1))
    assert result.single_rounds == result.rounds == 2
    assert result.task_index.tolist() == [2, 1]
    assert result.objective == 2 * 2.0 - 3.0


def test_mixed_namespaces_and_bad_arguments_are_refused():
    loads = _to_strict(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="one array-API namespace"):
        solve_batched(loads, _to_strict(np.ones((1, 2))), np.ones(3, dtype=np.int64), _to_strict(np.ones(2)))
    with pytest.raises(ValueError, match="pool_work must have shape"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 3)), np.ones(3, dtype=np.int64), np.ones(2))
    with pytest.raises(ValueError, match="free_slots must have shape"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 2)), np.ones(2, dtype=np.int64), np.ones(2))
    with pytest.raises(ValueError, match="projected_load must be non-negative"):
        solve_batched(-np.ones((2, 3)), np.ones((1, 2)), np.ones(3, dtype=np.int64), np.ones(2))
    with pytest.raises(ValueError, match="pool_work must be non-negative and not NaN"):
        solve_batched(np.zeros((2, 3)), np.full((1, 2), np.nan), np.ones(3, dtype=np.int64), np.ones(2))
    with pytest.raises(TypeError, match="free_slots must have an integer dtype, got float64"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 2)), np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="alive must have a boolean dtype"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 2)), np.ones(3, dtype=np.int64), np.ones(2), alive=np.ones(3))
    with pytest.raises(TypeError, match="pool_work must have a real dtype"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 2), dtype=complex), np.ones(3, dtype=np.int64), np.ones(2))
    with pytest.raises(ValueError, match="block_numbers"):
        solve_batched(np.zeros((2, 3)), np.ones((1, 2)), np.ones(3, dtype=np.int64), np.ones(2), block_numbers=0)


def test_chunked_scoring_places_as_one_block():
    problem = decode_snapshot(synthetic(2000, seed=2), 16, 8, 64, 20, seed=1).step_problem(8)
    whole = _solve(np.asarray, problem)
    chunked = _solve(np.asarray, problem, block_numbers=50)
    assert whole.task_index.tolist() == chunked.task_index.tolist()
    assert whole.worker.tolist() == chunked.worker.tolist()


def test_free_slots_the_rounds_cannot_count_are_refused():
    # Before: sum(free_slots) wrapped to -2**63 and the solver placed nothing, silently.
    with pytest.raises(ValueError, match="free_slots must be <= 3,074,457,345,618,258,602 per worker"):
        solve_batched(np.zeros((1, 2)), np.ones((3, 1)), np.array([2**62, 2**62]), np.ones(1))
    assert solve_batched(np.zeros((1, 2)), np.ones((3, 1)), np.array([2**40, 2**40]), np.ones(1)).worker.size == 3
