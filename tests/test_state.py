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
    # before: an OverflowError from numpy ("Python int too large to convert to C long")
    (lambda: ClusterState(2, 1).submit_one(2**63, 1.0), "task_ids must fit in int64"),
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


@pytest.mark.parametrize("call, message", [
    (lambda: ClusterState(2, [1.5, 2.7]), "capacity must hold integers, got 1.5"),
    (lambda: ClusterState(2, 1.5), "capacity must be an integer"),
    (lambda: ClusterState(2, 1, alive=[1, 0.7]), "alive must hold true/false"),
    (lambda: ClusterState(2, 1).submit_arrays([1.5], [1.0]), "task_ids must hold integers, got 1.5"),
    (lambda: ClusterState(2, 1).submit_arrays([2**70], [1.0]), "task_ids must fit in int64"),
    # before: 2.0**63 compared equal to int64's max as a float, and was cast to -2**63
    (lambda: ClusterState(2, 1).submit_arrays([2.0**63], [1.0]), "task_ids must fit in int64"),
    (lambda: ClusterState(2, 1).tasks_on(np.float64(2.0**63)), "worker must be an integer"),
    (lambda: ClusterState(2, 1).complete(np.array([2.0**63])), "task_ids must fit in int64"),
    (lambda: ClusterState(2, 1).submit_arrays([1, 2], [1.0, 2.0], growth=[1.0, 2.0, 3.0]),
     r"growth must be a scalar or have shape \(2,\), got shape \(3,\)"),
    (lambda: ClusterState(2, 1).submit_arrays([1], [1.0], prompt=[1.0, 2.0]), "prompt must be a scalar"),
    (lambda: ClusterState(2, 1).tasks_on(0.7), "worker must be an integer"),
    (lambda: ClusterState(2, 1).complete([2**70]), "task_ids must fit in int64"),
    (lambda: ClusterState(2, 1).complete_slots(np.ones((3, 1), dtype=bool)), "mask must have shape"),
    (lambda: ClusterState(2, 1).set_alive(0, "maybe"), "alive must be true or false"),
    (lambda: Task(2**70, 1.0), "task_id must be <="),
])
def test_no_silent_truncation_and_errors_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_a_placement_to_a_fractional_worker_is_rejected_and_changes_nothing():
    state = ClusterState(2, 2)
    state.submit([Task.constant(0, 1.0)])
    before = (state.pool_ids.tolist(), state.version)
    with pytest.raises(ValueError, match="workers must hold integers, got 0.7"):
        state.place(Placement(np.array([0]), np.array([0.7])))
    assert (state.pool_ids.tolist(), state.version) == before


def test_set_alive_parses_flag_words():
    state = ClusterState(2, 1)
    state.set_alive(1, "no")
    assert state.alive.tolist() == [True, False]
    state.set_alive(1, "on")
    assert state.alive.tolist() == [True, True]


@pytest.mark.parametrize("answer, message", [
    (lambda n: np.full(n, np.nan), "remaining\\(\\) contains NaN"),
    (lambda n: np.full(n, -1.0), "remaining\\(\\) must be non-negative"),
    (lambda n: np.ones(n + 1), "remaining\\(\\) must have shape"),
])
def test_a_bad_predictor_is_rejected_before_anything_changes(answer, message):
    class Bad:
        def remaining(self, task_ids, prompt, generated):
            return answer(len(task_ids)) if len(generated) and prompt[0] == 20 else np.full(len(task_ids), 3.0)

    state = ClusterState(1, 2)
    state.submit([Task.decode(0, 10, 5), Task.decode(1, 20, 7)])
    place(state, [0], [0])
    before = (state.step_problem(8).projected_load.tolist(), state.step_problem(8).pool_work.tolist(), state.version)
    with pytest.raises(ValueError, match=message):
        state.refresh_predictions(Bad())     # the running task's answer is fine, the waiting one's is not
    after = (state.step_problem(8).projected_load.tolist(), state.step_problem(8).pool_work.tolist(), state.version)
    assert after == before


def test_completed_ids_are_forgotten_and_may_be_reused():
    state = ClusterState(1, 1)
    state.submit(Task.constant(7, 1.0))
    with pytest.raises(ValueError, match="still waiting"):
        state.submit(Task.constant(7, 1.0))
    place(state, [7], [0])
    with pytest.raises(ValueError, match="still waiting or running"):
        state.submit(Task.constant(7, 1.0))
    state.complete([7])
    state.submit(Task.constant(7, 2.0))             # a new task under a finished task's id
    place(state, [7], [0])
    assert state.worker_of(7) == 0 and state.current_load().tolist() == [2.0]


def test_memory_is_bounded_by_the_live_tasks_over_a_million_submissions():
    """1,000,000 tasks with fresh ids pass through (submit, place, complete, 1,000 at a time): the
    state's memory after the last batch is what it was after the first few, where a record of
    every id ever submitted would hold about 60 MB."""
    import tracemalloc

    state = ClusterState(10, 100)
    batch = 1_000
    workers = np.repeat(np.arange(10), 100)
    index = np.arange(batch)

    def one_batch(k):
        ids = np.arange(k * batch, (k + 1) * batch)
        state.submit_arrays(ids, 1.0, growth=1.0, steps=5.0)
        state.place(Placement(ids, workers, index))
        state.advance()
        state.complete(ids)

    tracemalloc.start()
    try:
        for k in range(20):
            one_batch(k)
        settled = tracemalloc.get_traced_memory()[0]
        for k in range(20, 1_000):
            one_batch(k)
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert state.n_active == state.n_waiting == 0
    assert grown < 256 * 1024, grown


def test_per_task_reports_are_checked_before_anything_changes():
    state = ClusterState(2, 2)
    work = np.array([10.0, 20.0, 30.0])
    state.submit_arrays(np.array([1, 2, 3]), work, growth=1.0, prompt=work)
    state.place(Placement(np.array([1, 2]), np.array([0, 1])))
    state.set_progress([1], [5])
    assert state.current_load().tolist() == [15.0, 20.0]
    before = (state.current_load().tolist(), state.slot_age().tolist(), state.version)
    for bad in (lambda: state.set_progress([1, 3], [1, 1]),      # 3 is waiting, not running
                lambda: state.set_progress([1, 1], [1, 2]),      # named twice
                lambda: state.set_progress([1], [-1]),           # negative
                lambda: state.set_prompt(9, 5.0),                # unknown
                lambda: state.withdraw(1)):                      # running, not waiting
        with pytest.raises(ValueError):
            bad()
    assert (state.current_load().tolist(), state.slot_age().tolist(), state.version) == before
    state.set_prompt(1, 100.0)                                   # running: its work moves with the prompt
    state.set_prompt(3, 7.0)                                     # waiting
    assert state.current_load().tolist() == [105.0, 20.0]
    state.withdraw(3)
    assert state.n_waiting == 0
    state.submit_arrays(np.array([3]), np.array([1.0]))          # a withdrawn id may come back
    assert state.pool_ids.tolist() == [3]


def test_a_withdrawn_profile_task_leaves_no_profile_behind():
    # Before: withdraw() kept the profile, so a new affine task under the freed id was
    # projected and aged as the old profile (work 100 instead of 1).
    state = ClusterState(1, 2)
    state.submit(Task.from_profile(5, [100.0, 100.0, 100.0]))
    state.withdraw(5)
    state.submit_arrays([5], [1.0])
    assert state.step_problem(2).pool_work.tolist() == [[1.0, 1.0, 1.0]]
    state.place(Placement(np.array([5]), np.array([0])))
    state.advance()
    assert state.current_load().tolist() == [1.0]


@pytest.mark.parametrize("option, message", [
    ({"work_conserving": "false"}, None),
    ({"work_conserving": "maybe"}, "work_conserving must be true or false"),
    ({"refill": "perhaps"}, "refill must be true or false"),
    ({"max_wait": -1}, "max_wait must be >= 0"),
    ({"max_wait": 0.5}, "max_wait must be an integer"),
    ({"gamma": 1.5}, "gamma must be <= 1.0"),
])
def test_step_problem_options_are_checked(option, message):
    # Before: work_conserving="false" was stored as the string (truthy: every task placed),
    # max_wait=-1 forced every task and 0.5 was compared as given.
    state = ClusterState(2, 2)
    state.submit([Task.constant(i, 1.0 + i) for i in range(3)])
    if message is None:
        assert state.step_problem(0, **option).work_conserving is False
    else:
        with pytest.raises((ValueError, TypeError), match=message):
            state.step_problem(0, **option)
