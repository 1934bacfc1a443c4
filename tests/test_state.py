import math

import numpy as np
import pytest

from barrierlb import ClusterState, Placement, Task


def place(state, ids, workers):
    state.place(Placement(np.asarray(ids), np.asarray(workers)))


def brute_projected(tasks_on_workers, n_workers, horizon, ages):
    out = np.zeros((horizon + 1, n_workers))
    for g, tasks in enumerate(tasks_on_workers):
        for task in tasks:
            full = task.lookahead(horizon + ages[task.task_id])
            out[:, g] += full[ages[task.task_id]:]
    return out


def test_projected_load_includes_growth_of_surviving_tasks():
    state = ClusterState(2, 3)
    tasks = [Task.decode(0, 100, 5), Task.decode(1, 50, 2), Task.constant(2, 7.0), Task.from_profile(3, [4, 3, 2, 1])]
    state.submit(tasks)
    place(state, [0, 1, 2, 3], [0, 0, 1, 1])
    state.advance()
    problem = state.step_problem(4)
    ages = {t.task_id: 1 for t in tasks}
    expected = brute_projected([[tasks[0], tasks[1]], [tasks[2], tasks[3]]], 2, 4, ages)
    # task 1 predicted 2 steps, has run 1: one step left (h = 0 only).
    np.testing.assert_allclose(problem.projected_load, expected)
    assert problem.projected_load[:, 0].tolist() == [101 + 51, 102, 103, 104, 0]
    assert problem.projected_load[:, 1].tolist() == [10, 9, 8, 7, 7]


def test_running_task_past_its_predicted_end_still_counts_for_the_next_step():
    state = ClusterState(1, 1)
    state.submit(Task.decode(0, 10, 1))
    place(state, [0], [0])
    state.advance(3)
    assert state.step_problem(2).projected_load[:, 0].tolist() == [13, 0, 0]


def test_pool_lookahead_and_forced_flags():
    state = ClusterState(1, 1)
    state.submit([Task.decode(5, 10, 2), Task.constant(6, 1.0), Task.constant(7, 1.0)])
    problem = state.step_problem(2, max_wait=1)
    assert problem.pool_work.tolist() == [[10, 11, 0], [1, 1, 1], [1, 1, 1]]
    assert not problem.forced.any()
    place(state, [5], [0])
    assert state.step_problem(0, max_wait=1).forced.tolist() == [True, True]
    assert state.pool_wait.tolist() == [1, 1]


def test_placed_tasks_stay_and_complete():
    state = ClusterState(2, 2)
    state.submit([Task.constant(i, 1.0) for i in range(4)])
    place(state, [0, 1, 2], [1, 0, 1])
    assert state.worker_of(0) == 1 and state.worker_of(1) == 0
    assert sorted(state.tasks_on(1).tolist()) == [0, 2]
    assert state.free_slots.tolist() == [1, 0]
    state.complete([2])
    assert state.free_slots.tolist() == [1, 1]
    with pytest.raises(ValueError, match="already placed"):
        place(state, [0], [0])
    with pytest.raises(KeyError):
        state.worker_of(2)


@pytest.mark.parametrize("ids, workers, message", [
    ([0, 0], [0, 1], "placed twice"),
    ([9], [0], "not in the waiting pool"),
    ([0], [5], "does not exist"),
    ([0, 1, 2], [0, 0, 0], "free slots"),
])
def test_bad_placements_are_rejected_and_change_nothing(ids, workers, message):
    state = ClusterState(2, 2)
    state.submit([Task.constant(i, 1.0) for i in range(3)])
    before = (state.pool_ids.tolist(), state.active_count.tolist(), state.version)
    with pytest.raises(ValueError, match=message):
        place(state, ids, workers)
    assert (state.pool_ids.tolist(), state.active_count.tolist(), state.version) == before


def test_dead_worker_cannot_take_tasks_and_failure_returns_ids():
    state = ClusterState(2, 2)
    state.submit([Task.constant(i, 1.0) for i in range(3)])
    place(state, [0, 1], [1, 1])
    lost = state.fail_worker(1)
    assert sorted(lost.tolist()) == [0, 1]
    assert state.free_slots.tolist() == [2, 0]
    with pytest.raises(ValueError, match="dead"):
        place(state, [2], [1])
    # lost tasks can be re-created under the same ids
    state.submit([Task.constant(0, 1.0), Task.constant(1, 1.0)])
    assert state.n_waiting == 3


@pytest.mark.parametrize("call, message", [
    (lambda: ClusterState(0, 1), "n_workers"),
    (lambda: ClusterState(2, -1), "capacity"),
    (lambda: ClusterState(2, [1, 2, 3]), "capacity"),
    (lambda: ClusterState(2, 1).step_problem(-1), "horizon"),
    (lambda: ClusterState(2, 1).submit_arrays([1, 1], [1.0, 2.0]), "duplicates"),
    (lambda: ClusterState(2, 1).submit_arrays([1], [math.nan]), "NaN"),
    (lambda: ClusterState(2, 1).submit_arrays([1], [-1.0]), "non-negative"),
    (lambda: ClusterState(2, 1).submit_arrays([1, 2], [1.0, 2.0, 3.0]), "shape"),
    (lambda: ClusterState(2, 1).submit(["task"]), "Task"),
])
def test_bad_input_names_the_problem(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_duplicate_task_id_across_submissions():
    state = ClusterState(1, 1)
    state.submit(Task.constant(1, 1.0))
    with pytest.raises(ValueError, match="already submitted"):
        state.submit(Task.constant(1, 2.0))


def test_refresh_predictions_sets_remaining_steps():
    class Fixed:
        def remaining(self, task_ids, prompt, generated):
            return np.full(len(task_ids), 2.0)

    state = ClusterState(1, 2)
    state.submit([Task.decode(0, 10), Task.decode(1, 20)])
    place(state, [0], [0])
    state.refresh_predictions(Fixed())
    problem = state.step_problem(3)
    assert problem.projected_load[:, 0].tolist() == [10, 11, 0, 0]
    assert problem.pool_work.tolist() == [[20, 21, 0, 0]]
