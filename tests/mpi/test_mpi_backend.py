"""MPI backend tests: run under ``mpiexec -n N python -m mpi4py -m pytest --with-mpi tests/mpi``.

Plain ``pytest`` skips them here and runs them through ``tests/test_mpi_launch.py``.
Assertions are collective: every rank checks the same gathered facts.
"""

import numpy as np
import pytest

from barrierlb import make_policy

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.fixture(params=["world", "self"])
def comm(request):
    from mpi4py import MPI

    return MPI.COMM_WORLD if request.param == "world" else MPI.COMM_SELF


class Counter:
    """A toy task: its cost grows with its id; it spawns one child every 3 steps, ends after 7."""

    def __init__(self, spec):
        self.id, self.age = spec["id"], 0
        self.data = np.zeros(1000 + 500 * (spec["id"] % 5))

    def advance(self, step):
        from barrierlb.backends.mpi import DONE

        self.age += 1
        self.data += 1.0
        if self.age >= 7:
            return DONE
        if self.age % 3 == 0:
            return [(self.id * 10 + self.age, {"id": self.id * 10 + self.age})]
        return None


def run_toy(comm, policy, steps=12, mode="replicated", yield_cpu=None, cost=None):
    from barrierlb.backends.mpi import balance

    @balance(create=Counter, comm=comm, policy=policy, mode=mode, yield_cpu=yield_cpu, cost=cost)
    def advance(task, step):
        return task.advance(step)

    if comm.Get_rank() == 0:
        for i in range(1, 9):
            advance.submit(i, {"id": i})
    advance.balancer.exchange()
    seen = [dict.fromkeys(advance.tasks, comm.Get_rank())]
    placements = [dict(advance.balancer.last_placement)]
    for step in range(steps):
        advance(step)
        seen.append(dict.fromkeys(advance.tasks, comm.Get_rank()))
        placements.append(dict(advance.balancer.last_placement))
    return advance, seen, placements


@pytest.mark.parametrize("policy", ["bfio:horizon=4", "greedy:horizon=4", "round-robin"])
@pytest.mark.parametrize("mode", ["replicated", "root"])
def test_every_rank_reaches_the_same_decision_and_tasks_never_move(comm, policy, mode):
    advance, seen, placements = run_toy(comm, make_policy(policy), mode=mode)
    everyone = comm.allgather(placements)
    assert all(view == everyone[0] for view in everyone)
    # Where each task lives, step by step, from every rank's own view.
    history = comm.allgather(seen)
    home = {}
    for rank_view in history:
        for step_view in rank_view:
            for task_id, rank in step_view.items():
                assert home.setdefault(task_id, rank) == rank, f"task {task_id} moved"
    # Each task that was placed lives on exactly the rank the placement named.
    for placement in placements:
        for task_id, rank in placement.items():
            assert home[task_id] == rank


def test_decorated_toy_code_keeps_every_task_exactly_once(comm):
    advance, seen, _ = run_toy(comm, make_policy("bfio:horizon=4"))
    final = comm.allgather(sorted(advance.tasks))
    flat = [t for ids in final for t in ids]
    assert len(flat) == len(set(flat))
    created = comm.allreduce(sum(s.created for s in advance.stats))
    received = comm.allreduce(sum(s.received for s in advance.stats))
    assert created == received
    assert comm.allreduce(len(advance.stats)) == 12 * comm.Get_size()


def test_different_configuration_on_one_rank_is_detected(comm):
    from barrierlb.backends.mpi import MPIBalancer

    if comm.Get_size() < 2:
        pytest.skip("needs two ranks")
    horizon = 4 if comm.Get_rank() == 0 else 8
    with pytest.raises(ValueError, match="configured differently"):
        MPIBalancer(dict, comm=comm, policy=make_policy(f"bfio:horizon={horizon}"))


def test_duplicate_task_ids_are_rejected_on_every_rank(comm):
    from barrierlb.backends.mpi import MPIBalancer

    balancer = MPIBalancer(dict, comm=comm, policy=make_policy("round-robin"))
    balancer.submit(comm.Get_rank() * 0 + 5, {})       # every rank submits id 5
    if comm.Get_size() > 1:
        with pytest.raises(ValueError, match="duplicate task ids"):
            balancer.exchange()
    else:
        balancer.exchange()
        assert 5 in balancer.tasks


def test_bad_arguments(comm):
    from barrierlb.backends.mpi import MPIBalancer

    with pytest.raises(TypeError, match="communicator"):
        MPIBalancer(dict, comm="world")
    with pytest.raises(ValueError, match="mode"):
        MPIBalancer(dict, comm=comm, mode="gossip")
    balancer = MPIBalancer(dict, comm=comm)
    with pytest.raises(KeyError, match="not on this rank"):
        balancer.record(12345, 0.1)


def test_projected_load_counts_the_tasks_here_with_a_measurement(comm):
    """The rank's projected load is the persistence lookahead summed over its measured tasks;
    a task measured and then removed in the same step leaves nothing behind."""
    from barrierlb.backends.mpi import MPIBalancer

    balancer = MPIBalancer(dict, comm=comm, policy="bfio:horizon=3")
    base = 100 * comm.Get_rank()
    for i in range(4):
        balancer.submit(base + i, {"id": base + i})
    balancer.exchange()
    mine = sorted(balancer.tasks)
    for step in range(3):
        for k, task_id in enumerate(mine):
            balancer.record(task_id, 1.0 + k + step)        # +1 per step: slope 1
        if step == 2 and mine:
            balancer.remove(mine[0])
        balancer.exchange()
    left = [k for k, task_id in enumerate(mine) if task_id in balancer.tasks]
    expected = sum(np.array([3.0 + k + h for h in range(1, 5)]) for k in left) if left else np.zeros(4)
    assert np.allclose(balancer._projected_load(), expected)


def counter_cost(obj, horizon):
    """A deterministic cost model for Counter tasks and specs (measured times are not)."""
    return float(obj.data.size if isinstance(obj, Counter) else 1000 + 500 * (obj["id"] % 5))


def test_yielding_and_blocking_waits_reach_the_same_placements(comm):
    _, _, blocking = run_toy(comm, make_policy("bfio:horizon=4"), yield_cpu=False, cost=counter_cost)
    _, _, yielding = run_toy(comm, make_policy("bfio:horizon=4"), yield_cpu=True, cost=counter_cost)
    assert blocking == yielding
    assert sum(len(p) for p in blocking) > 8          # tasks were created and placed after the start


def test_spec_batches_too_large_to_send_inline_arrive_intact(comm):
    from barrierlb.backends.mpi import INLINE_BYTES, MPIBalancer

    rank, size = comm.Get_rank(), comm.Get_size()
    balancer = MPIBalancer(dict, comm=comm, policy=make_policy("bfio:horizon=2"))
    # Rank 0 sends specs far beyond the inline room; the others send small ones or none.
    count = 6 if rank == 0 else rank % 2
    width = INLINE_BYTES if rank == 0 else 8
    for k in range(count):
        task_id = rank * 100 + k
        balancer.submit(task_id, {"id": task_id, "blob": bytes([task_id % 251]) * width})
    received, _ = balancer.exchange()
    expected = {r * 100 + k for r in range(size) for k in range(6 if r == 0 else r % 2)}
    everyone = comm.allgather({t: (spec["id"], len(spec["blob"]), spec["blob"][:1]) for t, spec in
                               balancer.tasks.items()})
    merged = {t: v for view in everyone for t, v in view.items()}
    assert sorted(merged) == sorted(expected)
    assert all(v[0] == t and v[2] == bytes([t % 251]) for t, v in merged.items())
    assert all(v[1] == (INLINE_BYTES if t < 100 else 8) for t, v in merged.items())
    assert comm.allreduce(received) == len(expected)


def rank_dependent_policy():
    """A policy whose decision depends on the rank that computes it: what a rank with
    different floating point (another CPU type or BLAS) would do in replicated mode."""
    from barrierlb.policies import Decision, Policy

    class RankDependent(Policy):
        def decide_problem(self, problem, *, started=None):
            from mpi4py import MPI

            n = problem.n_pool
            worker = np.full(n, MPI.COMM_WORLD.Get_rank() % problem.n_workers, dtype=np.int64)
            return Decision(problem.pool_ids, worker, np.arange(n), branch="rule")

    return RankDependent()


def test_ranks_that_decide_differently_stop_at_the_next_exchange(comm):
    """The checksum of each rank's placement rides in the next exchange's gather: the
    disagreement is caught there, on every rank, before anything more is placed."""
    from barrierlb.backends.mpi import MPIBalancer

    if comm.Get_size() < 2:
        pytest.skip("needs two ranks")
    balancer = MPIBalancer(dict, comm=comm, policy=rank_dependent_policy())
    balancer.submit(1000 + comm.Get_rank(), {"id": comm.Get_rank()})
    balancer.exchange()
    balancer.submit(2000 + comm.Get_rank(), {"id": comm.Get_rank()})
    with pytest.raises(RuntimeError, match=r"ranks \[1.*different placement.*built twice or not at all.*mode='root'"):
        balancer.exchange()
    assert not any(task_id >= 2000 for task_id in balancer.tasks)      # nothing more was placed


def test_ranks_that_agree_pass_the_check_step_after_step(comm):
    advance, _, placements = run_toy(comm, make_policy("bfio:horizon=4"), steps=6)
    assert sum(len(p) for p in placements) > 8
