"""The superstep planner: the pure core that the MPI and Dask backends drive."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barrierlb import make_policy, superstep
from barrierlb.superstep import SuperstepPlanner


def test_docstring_example_runs():
    failures, tried = doctest.testmod(superstep)
    assert tried > 0 and failures == 0


def test_placement_is_recorded_and_tasks_never_move():
    planner = SuperstepPlanner(3, policy=make_policy("bfio:horizon=2"), capacity=2)
    planner.submit_many([1, 2, 3, 4], [[5.0, 5, 5], [1, 1, 1], [3, 3, 3], [2, 2, 2]])
    decision = planner.plan()
    assert sorted(decision.task_ids.tolist()) == [1, 2, 3, 4]
    home = {t: planner.worker_of(t) for t in decision.task_ids.tolist()}
    assert home == dict(zip(decision.task_ids.tolist(), decision.workers.tolist()))
    assert (planner.active_count <= 2).all()
    planner.submit(5, 1.0)
    planner.plan()
    assert {t: planner.worker_of(t) for t in home} == home      # sticky


def test_new_tasks_without_a_cost_are_predicted_by_the_mean_measured_cost():
    planner = SuperstepPlanner(2, policy=make_policy("bfio:horizon=0"), capacity=4)
    planner.submit_many([1, 2], [[4.0], [1.0]])
    first = planner.plan()
    heavy = int(first.workers[first.task_ids.tolist().index(1)])
    planner.report(heavy, costs={1: 4.0})
    planner.report(1 - heavy, costs={2: 1.0})
    planner.submit(3)                     # predicted at (4 + 1) / 2 = 2.5: goes to the light worker
    decision = planner.plan()
    assert decision.workers.tolist() == [1 - heavy]
    assert planner.lookahead(3).tolist() == [2.5]


def test_a_reported_load_wins_for_that_superstep():
    planner = SuperstepPlanner(2, policy=make_policy("bfio:horizon=0"))
    planner.report(0, load=[10.0])
    planner.report(1, load=[0.0])
    planner.submit(7, 1.0)
    assert planner.plan().workers.tolist() == [1]
    planner.submit(8, 1.0)                 # no load reported now: both workers' loads come from their tasks
    assert planner.plan().workers.tolist() == [0]


def test_a_lost_worker_returns_its_tasks_first_and_gets_nothing_more():
    planner = SuperstepPlanner(2, policy=make_policy("round-robin"), capacity=3)
    planner.submit_many([1, 2, 3, 4], np.ones(4))
    planner.plan()
    lost_here = sorted(planner.tasks_on(0).tolist())
    planner.submit(9, 1.0)
    assert planner.lose_worker(0) == lost_here
    assert planner.waiting_ids().tolist()[:len(lost_here)] == lost_here       # re-created first
    decision = planner.plan()
    assert set(decision.workers.tolist()) == {1}
    assert not planner.alive[0] and planner.free_slots[0] == 0
    index = planner.add_worker()
    assert index == 2 and planner.alive[2]
    assert sorted(planner.tasks_on(1).tolist()) == sorted(set(planner.tasks_on(1).tolist()))


def test_unlimited_capacity_grows_the_ledger_and_keeps_every_task():
    planner = SuperstepPlanner(2, policy=make_policy("fcfs"))
    planner.submit_many(np.arange(100), np.ones(100))
    decision = planner.plan()
    assert decision.task_ids.size == 100 and planner.n_active == 100 and planner.n_waiting == 0


def test_bad_input_names_the_problem():
    with pytest.raises(TypeError, match="policy must be a name or a Policy"):
        SuperstepPlanner(2, policy=3)
    assert SuperstepPlanner(2, policy="bfio:horizon=3").horizon == 3       # a name, as the backends take
    planner = SuperstepPlanner(2, policy=make_policy("fcfs"), capacity=1)
    with pytest.raises(ValueError, match="task_ids must hold integers, got 1.5"):
        planner.submit_many([1.5])
    with pytest.raises(ValueError, match="lookaheads must be 1 non-negative"):
        planner.submit(1, [-1.0])
    for silent in (True, "5", [[1.0, 2.0], [3.0]]):        # before: True and "5" were taken as 1.0 and 5.0
        with pytest.raises(ValueError, match="lookaheads must be 1 non-negative"):
            planner.submit(1, silent)
    assert planner.n_waiting == 0
    with pytest.raises(ValueError, match="worker 5 does not exist"):
        planner.report(5)
    planner.submit(1, 1.0)
    with pytest.raises(ValueError):
        planner.submit(1, 1.0)                                  # already waiting
    planner.plan()
    with pytest.raises(ValueError, match="task 1 finished on worker 1 but lives on worker 0"):
        planner.report(1, finished=[1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "finish", "lose", "join", "plan"]), st.integers(0, 10**6)),
                min_size=1, max_size=40),
       st.sampled_from(["bfio:horizon=3", "round-robin", "greedy:horizon=3"]), st.integers(1, 4))
def test_random_event_sequences_keep_the_ledger_sound(events, policy, capacity):
    """Each task at most once, capacity never exceeded, placed tasks never move, dead workers
    hold nothing, and the same events give the same placements."""
    def replay():
        planner = SuperstepPlanner(2, policy=make_policy(policy), capacity=capacity)
        rng = np.random.default_rng(0)
        next_id, finished, home, log = 0, 0, {}, []
        for kind, value in events:
            alive = np.flatnonzero(planner.alive)
            if kind == "submit":
                planner.submit(next_id, rng.uniform(0, 5, planner.horizon + 1))
                next_id += 1
            elif kind == "finish" and home:
                task_id = sorted(home)[value % len(home)]
                planner.report(home.pop(task_id), finished=[task_id], costs={task_id: 1.0})
                finished += 1
            elif kind == "lose" and alive.size > 1:
                g = int(alive[value % alive.size])
                for task_id in planner.lose_worker(g):
                    assert home.pop(task_id) == g
            elif kind == "join":
                planner.add_worker()
            elif kind == "plan":
                decision = planner.plan()
                for task_id, g in zip(decision.task_ids.tolist(), decision.workers.tolist()):
                    assert task_id not in home and planner.alive[g]
                    home[task_id] = g
                log.append((decision.task_ids.tolist(), decision.workers.tolist()))
            assert (planner.active_count <= capacity).all()
            assert all(planner.worker_of(t) == g for t, g in home.items())
            dead = np.flatnonzero(~planner.alive)
            assert all(planner.tasks_on(int(g)).size == 0 for g in dead)
            assert planner.n_active == len(home)
            assert planner.n_active + planner.n_waiting + finished == next_id      # nothing lost
        return log

    assert replay() == replay()


# ------------------------------------------------------------------ packaging (issue 17)
def _copy_checkout(destination):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("barrierlb", "backends"):
        shutil.copytree(root / name, destination / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))


def test_a_source_checkout_imports_its_own_backends(tmp_path):
    """From a checkout's root, ``barrierlb.backends`` is that checkout's, even when another
    checkout of barrierlb is installed (editable) in the same environment."""
    import subprocess
    import sys

    _copy_checkout(tmp_path)
    code = "import barrierlb.backends.mpi as m, barrierlb.backends.dask as d; print(m.__file__); print(d.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for path in out.stdout.split():
        assert path.startswith(str(tmp_path)), out.stdout
    light = subprocess.run([sys.executable, "-c", "import sys, barrierlb.backends; print('mpi4py' in sys.modules, "
                            "'distributed' in sys.modules)"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert light.stdout.split() == ["False", "False"], light.stdout + light.stderr


def test_the_built_package_carries_the_backends(tmp_path):
    """``pip install .`` then importing both backends from outside the checkout."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("barrierlb-*.whl"))
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    code = "import barrierlb.backends.mpi as m, barrierlb.backends.dask as d; print(m.__file__); print(d.__file__)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(path.startswith(str(target)) for path in out.stdout.split()), out.stdout


def _planned(capacity=2):
    planner = SuperstepPlanner(2, policy=make_policy("round-robin"), capacity=capacity)
    planner.submit_many([1, 2, 3], np.ones(3))
    planner.plan()
    return planner


@pytest.mark.parametrize("report, message", [
    ({"finished": [99], "costs": {1: 5.0}}, "task 99 finished on worker 0 but is not placed"),
    ({"finished": [1], "costs": {2: 5.0}}, "task 2 in costs reported by worker 0 but lives on worker 1"),
    ({"finished": [1, 1]}, "finished names a task twice"),
    ({"finished": [1.5]}, "finished must hold integers"),
    ({"costs": {1: float("nan")}}, "costs contains NaN"),
    ({"costs": {1: -1.0}}, "costs must be non-negative"),
    ({"costs": {1: 1.0}, "lookahead": {3: [1.0, 2.0]}}, r"lookahead of task 3 must have shape \(1,\)"),
    ({"costs": {1: 1.0}, "lookahead": {3: [-1.0]}}, "lookahead of task 3 must be non-negative"),
    ({"costs": {1: 1.0}, "load": [1.0, 2.0]}, r"load must have shape \(1,\)"),
    ({"costs": {1: 1.0}, "measured": (float("inf"), 1)}, "measured seconds must be finite"),
    ({"costs": {1: 1.0}, "measured": (1.0, 1.5)}, "measured count must be an integer"),
])
def test_a_bad_report_is_refused_whole(report, message):
    # Before: the costs, lookaheads and load were recorded first, and a bad finished
    # id raised after them (or 1.5 became task 1), so a retried report counted twice;
    # a NaN cost or a short lookahead surfaced only at a later plan(), naming neither.
    planner, clean = _planned(), _planned()
    assert planner.tasks_on(0).tolist() == [1, 3] and planner.tasks_on(1).tolist() == [2]
    with pytest.raises((ValueError, TypeError), match=message):
        planner.report(0, **report)
    for p in (planner, clean):
        p.report(0, finished=[1], costs={1: 1.0, 3: 3.0})
        p.submit_many([4, 5], None)
    assert planner._measured == clean._measured == [4.0, 2]
    assert not planner.predictor.known(2) and planner.lookahead(3).tolist() == clean.lookahead(3).tolist()
    mine, theirs = planner.plan(), clean.plan()
    assert mine.task_ids.tolist() == theirs.task_ids.tolist() and mine.workers.tolist() == theirs.workers.tolist()
    assert planner.n_active == clean.n_active == 4


def test_the_persistence_predictor_refuses_a_cost_that_is_not_one():
    from barrierlb.predictors import PersistencePredictor

    predictor = PersistencePredictor(2)
    for costs, message in (([float("nan")], "costs contains NaN"), ([-1.0], "costs must be non-negative"),
                           ([1.0, 2.0], r"costs must have shape \(1,\)")):
        with pytest.raises(ValueError, match=message):
            predictor.observe([5], costs)
        assert not predictor.known(5)       # before: the row was taken first, and NaN recorded
    predictor.observe([5], [2.0])
    assert predictor.lookahead([5], 1).tolist() == [[2.0, 2.0]]
