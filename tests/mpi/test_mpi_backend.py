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
    # The same names as the Dask backend's for the same things.
    assert (advance.policy, advance.capacity, advance.cost, advance.timeout_s) == \
        (advance.balancer.policy, None, None, 600.0)


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
    # Before: accepted, and a decision cut short by the clock on one rank but not another
    # stopped the job as if the ranks' floating point differed.
    for timed in ("bfio:deadline_ms=5", "bfio-exact"):
        with pytest.raises(ValueError, match="decides against the clock.*use mode='root'"):
            MPIBalancer(dict, comm=comm, policy=timed)
    MPIBalancer(dict, comm=comm, policy="bfio-exact", mode="root")
    with pytest.raises(ValueError, match="yield_cpu must be true or false"):
        MPIBalancer(dict, comm=comm, yield_cpu="maybe")     # before: bool("maybe") yielded the core
    balancer = MPIBalancer(dict, comm=comm)
    with pytest.raises(KeyError, match="not on this rank"):
        balancer.record(12345, 0.1)
    balancer.tasks[7] = {}
    for bad, message in ((float("nan"), "must be finite"), (-0.5, "must be >= 0"), ("0.1", "must be a number")):
        with pytest.raises((ValueError, TypeError), match=f"seconds {message}"):
            balancer.record(7, bad)         # before: float() took NaN, -0.5 and "0.1" as costs
    assert balancer._step_costs == {}


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


def test_ranks_that_decide_differently_stop_before_building_anything(comm):
    """The ranks compare checksums of their placements before building: a disagreement
    stops every rank at that very exchange, with no task built twice (or at all)."""
    from barrierlb.backends.mpi import MPIBalancer

    if comm.Get_size() < 2:
        pytest.skip("needs two ranks")
    balancer = MPIBalancer(dict, comm=comm, policy=rank_dependent_policy())
    balancer.submit(1000 + comm.Get_rank(), {"id": comm.Get_rank()})
    with pytest.raises(RuntimeError, match=r"ranks \[1.*different placement.*no new task was built.*mode='root'"):
        balancer.exchange()
    assert balancer.tasks == {}


def test_ranks_that_agree_pass_the_check_step_after_step(comm):
    advance, _, placements = run_toy(comm, make_policy("bfio:horizon=4"), steps=6)
    assert sum(len(p) for p in placements) > 8


# ------------------------------------------------------------------ reliability (issue 12)
def cost_a(obj, horizon):
    return 1.0


def cost_b(obj, horizon):
    return 2.0


@pytest.mark.parametrize("field", ["cost", "window", "capacity", "timeout_s", "create"])
def test_the_start_up_check_covers_everything_that_must_agree(comm, field):
    """Two different cost functions (or windows, capacities, ...) are caught at construction,
    on every rank, naming the field; whether a cost function is present is not enough."""
    from barrierlb.backends.mpi import MPIBalancer

    if comm.Get_size() < 2:
        pytest.skip("needs two ranks")
    odd = comm.Get_rank() == comm.Get_size() - 1
    options = {"cost": cost_a, "window": 4, "capacity": 8, "timeout_s": 60.0}
    create = dict
    if field == "create":
        create = list if odd else dict
    elif field == "cost":
        options["cost"] = cost_b if odd else cost_a
    else:
        options[field] = options[field] * 2 if odd else options[field]
    with pytest.raises(ValueError, match=rf"rank {comm.Get_size() - 1} was configured differently.*{field}"):
        MPIBalancer(create, comm=comm, policy="round-robin", **options)
    same = MPIBalancer(dict, comm=comm, policy="round-robin", cost=cost_a, window=4, capacity=8, timeout_s=60.0)
    assert same.config()["cost"].startswith(f"{__name__}.cost_a (code ")


UNPICKLED = []


class Recorded:
    """A spec that notes, in this process, every time it is unpickled."""

    def __init__(self, task_id):
        self.task_id = task_id

    def __reduce__(self):
        return (_unpickle_recorded, (self.task_id,))


def _unpickle_recorded(task_id):
    UNPICKLED.append(task_id)
    return Recorded(task_id)


def test_a_rank_unpickles_only_the_specs_placed_on_it(comm):
    from barrierlb.backends.mpi import MPIBalancer

    UNPICKLED.clear()
    rank, size = comm.Get_rank(), comm.Get_size()
    balancer = MPIBalancer(lambda spec: spec.task_id, comm=comm, policy="round-robin")
    for k in range(3):
        balancer.submit(rank * 10 + k, Recorded(rank * 10 + k))
    received, _ = balancer.exchange()
    assert sorted(UNPICKLED) == sorted(balancer.tasks) and received == len(UNPICKLED)
    assert comm.allreduce(len(UNPICKLED)) == 3 * size
    assert sorted(t for t, r in balancer.last_placement.items() if r == rank) == sorted(UNPICKLED)


def test_the_ledger_on_every_rank_knows_where_every_task_lives(comm):
    advance, _, _ = run_toy(comm, make_policy("bfio:horizon=4"), steps=8)
    planner = advance.balancer.planner
    everywhere = comm.allgather(sorted(advance.tasks))
    for rank, ids in enumerate(everywhere):
        assert sorted(planner.tasks_on(rank).tolist()) == ids
    assert planner.n_waiting == 0


def test_user_code_errors_name_rank_and_task(comm):
    """create() failing, a spec that cannot be pickled, and a step returning a non-iterable."""
    from barrierlb.backends.mpi import MPIBalancer, balance

    rank, size = comm.Get_rank(), comm.Get_size()

    def broken_create(spec):
        raise KeyError("no such block")

    balancer = MPIBalancer(broken_create, comm=comm, policy="round-robin")
    balancer.submit(100 + rank, {"id": 100 + rank})             # round-robin: one task per rank
    with pytest.raises(RuntimeError, match=rf"rank {rank} failed in create\(\) on task 10\d: KeyError"):
        balancer.exchange()

    import threading

    with pytest.raises(TypeError, match=rf"rank {rank}: the spec of task 7 cannot be pickled"):
        balancer.submit(7, {"lock": threading.Lock()})

    @balance(create=Counter, comm=comm, policy="round-robin")
    def advance(task, step):
        return 42                                              # not None, DONE or an iterable of pairs

    for k in range(size):
        if rank == 0:
            advance.submit(k + 1, {"id": k + 1})
    advance.balancer.exchange()
    mine = sorted(advance.tasks)[0]
    with pytest.raises(TypeError, match=rf"rank {rank}, step 0, task {mine}: the step function must return"):
        advance(0)


def test_submit_keeps_many_pending_tasks_and_places_each_once(comm):
    from barrierlb.backends.mpi import MPIBalancer

    rank, size = comm.Get_rank(), comm.Get_size()
    balancer = MPIBalancer(dict, comm=comm, policy="round-robin")
    for k in range(2000):
        balancer.submit(rank * 10**6 + k, {"id": k})
    with pytest.raises(ValueError, match=r"duplicate task id \d*1999"):
        balancer.submit(rank * 10**6 + 1999, {})
    received, _ = balancer.exchange()
    assert comm.allreduce(received) == 2000 * size
    assert len(balancer.last_placement) == 2000 * size
