"""Priced migration: a move is taken only when it pays, budgets hold, bytes are counted, the state applies plans."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import barrierlb as blb
from barrierlb.migration import MovePlan, imbalance_time_s, plan_moves


@st.composite
def instances(draw):
    n_workers = draw(st.integers(1, 5))
    n_tasks = draw(st.integers(0, 12))
    rows = draw(st.integers(1, 3))
    worker = np.array(draw(st.lists(st.integers(0, n_workers - 1), min_size=n_tasks, max_size=n_tasks)),
                      dtype=np.int64)
    load = np.array(draw(st.lists(st.floats(0, 100), min_size=n_tasks * rows, max_size=n_tasks * rows)))
    size = np.array(draw(st.lists(st.floats(0, 1e3), min_size=n_tasks, max_size=n_tasks)))
    free = np.array(draw(st.lists(st.integers(0, 2), min_size=n_workers, max_size=n_workers)), dtype=np.int64)
    options = {"seconds_per_unit": draw(st.floats(0, 2)), "bandwidth_bytes_per_s": draw(st.floats(1, 1e3)),
               "stall_s": draw(st.sampled_from([0.0, 1.0, 50.0])),
               "max_moves": draw(st.one_of(st.none(), st.integers(0, 4))),
               "max_bytes": draw(st.one_of(st.none(), st.floats(0, 2e3))),
               "exchanges": draw(st.booleans())}
    return worker, load.reshape(n_tasks, rows), size, free, options


def _loads(worker, load, n_workers):
    total = np.zeros((load.shape[1], n_workers))
    np.add.at(total.T, worker, load)
    return total


@settings(max_examples=150, deadline=None)
@given(instances())
def test_every_move_pays_budgets_hold_and_bytes_add_up(instance):
    worker, load, size, free, options = instance
    plan = plan_moves(worker, load, size, free, **options)
    assert plan.moves == plan.task_index.size == plan.destination.size
    assert (plan.saving_s > plan.cost_s).all()                          # never a move that costs more than it saves
    if options["max_moves"] is not None:
        assert plan.moves <= options["max_moves"]
    if options["max_bytes"] is not None:
        assert plan.bytes_moved <= options["max_bytes"] + 1e-9
    np.testing.assert_allclose(plan.bytes, size[plan.task_index])
    assert plan.bytes_moved == pytest.approx(size[plan.task_index].sum())
    np.testing.assert_allclose(plan.cost_s[1:], plan.bytes[1:] / options["bandwidth_bytes_per_s"])
    if plan.moves:
        assert plan.cost_s[0] == pytest.approx(plan.bytes[0] / options["bandwidth_bytes_per_s"] + options["stall_s"])
    # Replaying the plan: each source holds the task, free slots never go negative, and the
    # predicted saving of the whole plan is what the moves claim.
    where, slots = worker.copy(), free.copy()
    for i, source, destination in zip(plan.task_index, plan.source, plan.destination):
        assert where[i] == source != destination
        where[i] = destination
        slots[source] += 1
        slots[destination] -= 1
    assert (slots >= 0).all()
    before = imbalance_time_s(_loads(worker, load, free.size), options["seconds_per_unit"])
    after = imbalance_time_s(_loads(where, load, free.size), options["seconds_per_unit"])
    assert before - after == pytest.approx(plan.saving_s.sum(), rel=1e-6, abs=1e-6)


def test_a_move_is_taken_exactly_when_its_saving_exceeds_its_cost():
    # Two tasks of load 2 on worker 0 of 2: moving one saves 2 * (4 - 2) = 4 units of imbalance.
    for bandwidth, expected in ((5.0, 1), (2.5, 0), (2.4, 0)):         # cost 10 / bandwidth: 2, 4, 4.17 s
        plan = plan_moves([0, 0], [[2.0], [2.0]], 10.0, [1, 1], seconds_per_unit=1.0,
                          bandwidth_bytes_per_s=bandwidth)
        assert plan.moves == expected
    plan = plan_moves([0, 0], [[2.0], [2.0]], 10.0, [1, 1], seconds_per_unit=1.0, bandwidth_bytes_per_s=5.0,
                      stall_s=2.5)                                        # 2 + 2.5 > 4: the stall makes it not pay
    assert plan.moves == 0


def test_exchange_when_no_slot_is_free():
    # Worker 0 holds 5 + 3, worker 1 holds 4 + 2, no slot free: exchanging 5 and 4 levels them at 7.
    loads, sizes = [[5.0], [3.0], [4.0], [2.0]], 0.5
    plan = plan_moves([0, 0, 1, 1], loads, sizes, [0, 0], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0)
    assert sorted(zip(plan.task_index.tolist(), plan.destination.tolist())) == [(0, 1), (2, 0)]
    assert plan.saving_s.sum() == pytest.approx(2 * 8 - 14)           # the imbalance drops from 2 to 0
    assert plan.cost_s.sum() == pytest.approx(1.0)
    assert plan_moves([0, 0, 1, 1], loads, sizes, [0, 0], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0,
                      exchanges=False).moves == 0
    assert plan_moves([0, 0, 1, 1], loads, sizes, [0, 0], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0,
                      max_moves=1).moves == 0                           # an exchange is two moves


def test_per_destination_bytes_and_bandwidth_matrix():
    # Worker 2 already holds the task's state (zero bytes there); worker 1 is behind a slow link.
    bandwidth = np.array([[1.0, 0.01, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    bytes_to = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    plan = plan_moves([0, 0], [[3.0], [1.0]], bytes_to, [1, 1, 1], seconds_per_unit=0.1,
                      bandwidth_bytes_per_s=bandwidth)
    assert plan.destination.tolist() == [2] and plan.bytes_moved == 0.0 and plan.cost_s.tolist() == [0.0]


def test_same_input_same_plan():
    rng = np.random.default_rng(5)
    worker = rng.integers(0, 6, 40)
    load = rng.gamma(2.0, 10.0, (40, 4))
    first, second = (plan_moves(worker, load, 3.0, np.full(6, 2), seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0,
                                max_moves=6) for _ in range(2))
    assert first.moves > 0
    for name in ("task_index", "source", "destination", "saving_s", "cost_s", "bytes"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="task_worker"):
        plan_moves([3], [[1.0]], 1.0, [1, 1], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        plan_moves([0], [[1.0]], 1.0, [1, 1], seconds_per_unit=1.0, bandwidth_bytes_per_s=0.0)
    with pytest.raises(ValueError, match="task_load"):
        plan_moves([0], [[-1.0]], 1.0, [1, 1], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0)
    with pytest.raises(TypeError, match="max_moves"):
        plan_moves([0], [[1.0]], 1.0, [1, 1], seconds_per_unit=1.0, bandwidth_bytes_per_s=1.0, max_moves=1.5)


def test_state_applies_a_plan_and_only_a_plan():
    state = blb.ClusterState(2, 2)
    state.submit([blb.Task.constant(7, 4.0), blb.Task.constant(8, 4.0)])
    state.place(blb.Placement(np.array([7, 8]), np.array([0, 0])))
    ids = state.tasks_on(0)
    plan = plan_moves(np.zeros(2, dtype=np.int64), [[4.0], [4.0]], 1.0, state.free_slots, seconds_per_unit=1.0,
                      bandwidth_bytes_per_s=1.0, task_ids=ids)
    assert plan.moves == 1
    with pytest.raises(TypeError, match="MovePlan"):
        state.apply_moves({"task_ids": ids})
    state.apply_moves(plan)
    assert state.current_load().tolist() == [4.0, 4.0]
    assert state.worker_of(int(plan.task_ids[0])) == 1 and state.free_slots.tolist() == [1, 1]
    stale = MovePlan(plan.task_ids, plan.task_index, plan.source, plan.destination, plan.saving_s, plan.cost_s,
                     plan.bytes)
    with pytest.raises(ValueError, match="not placed on worker 0"):
        state.apply_moves(stale)                                          # the task has left worker 0
    assert state.current_load().tolist() == [4.0, 4.0]                    # unchanged when it raises


def test_docstring_examples():
    import doctest

    import barrierlb.migration

    failures, tried = doctest.testmod(barrierlb.migration)
    assert tried > 0 and failures == 0
