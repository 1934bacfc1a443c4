"""The superstep planner applies a policy's options as ``Policy.decide`` would: the waiting
bound binds, plain ``bfio`` tunes itself on the planner's ledger, ages survive a rebuild."""

import numpy as np

from barrierlb import make_policy
from barrierlb.superstep import SuperstepPlanner


def test_a_task_at_its_waiting_bound_is_placed():
    """A task that raises the peak is never worth placing for a non-work-conserving BF-IO:
    it waits until its bound (2 decisions passed over) forces it in."""
    planner = SuperstepPlanner(2, policy=make_policy("bfio:horizon=0,max_wait=2,work_conserving=false"),
                               capacity=4)
    planner.submit(7, 100.0)
    placed_at = None
    for superstep in range(6):
        planner.report(0, load=[10.0])
        planner.report(1, load=[10.0])
        if planner.plan().task_ids.tolist() == [7]:
            placed_at = superstep
            break
    assert placed_at == 2                  # passed over twice (wait 0 and 1), forced at wait 2


def test_the_waiting_bound_survives_an_unlimited_ledger_growing():
    planner = SuperstepPlanner(2, policy=make_policy("bfio:horizon=0,max_wait=3,work_conserving=false"))
    planner.submit(7, 100.0)
    for _ in range(2):
        planner.report(0, load=[10.0])
        planner.report(1, load=[10.0])
        assert planner.plan().task_ids.size == 0
    assert planner.ledger.pool_wait.tolist() == [2]
    planner.submit_many(np.arange(100, 140), np.full(40, 100.0))      # the ledger grows at the next plan
    planner.report(0, load=[10.0])
    planner.report(1, load=[10.0])
    decision = planner.plan()
    assert 7 not in decision.task_ids.tolist() and planner.ledger.pool_wait[0] == 3
    planner.report(0, load=[10.0])
    planner.report(1, load=[10.0])
    assert 7 in planner.plan().task_ids.tolist()


def test_placed_tasks_age_one_step_a_plan_and_keep_their_age_when_the_ledger_grows():
    planner = SuperstepPlanner(2, policy=make_policy("fcfs"))
    planner.submit_many([1, 2], np.ones(2))
    planner.plan()
    for _ in range(3):
        planner.plan()
    planner.submit_many(np.arange(10, 60), np.ones(50))             # needs more than 16 slots a worker
    planner.plan()
    ages = dict(zip(planner.ledger.slot_ids().ravel().tolist(), planner.ledger.slot_age().ravel().tolist()))
    assert ages[1] == ages[2] == 4 and ages[10] == 0


def test_plain_bfio_behind_the_planner_tunes_itself_from_observed_lifetimes():
    """Tasks that live 4 supersteps: the planner's ledger shows their ages, plain bfio's
    controller measures lifetimes of 4 and leaves its start-up settings (horizon 72, gamma 0.9)
    for the short regime's; each decision's info records them."""
    policy = make_policy("bfio")
    assert policy.gamma == 0.9 and policy.horizon == 72 and policy.stride == 1
    planner = SuperstepPlanner(4, policy=policy, capacity=4)
    started, next_id, tuning = {}, 0, []
    for superstep in range(600):
        for g in range(4):
            done = [t for t in planner.tasks_on(g).tolist() if superstep - started[t] >= 4]
            planner.report(g, finished=done, costs={t: 1.0 for t in planner.tasks_on(g).tolist()})
        while planner.n_waiting < 8:
            planner.submit(next_id, 1.0)
            next_id += 1
        decision = planner.plan()
        started.update({t: superstep for t in decision.task_ids.tolist()})
        if "tuning" in decision.info:
            tuning.append(decision.info["tuning"])
    assert policy.tuning.decisions == len(tuning) > 100
    assert policy.tuning.lifetime == 4.0
    assert policy.gamma == 0.7 and policy.stride >= 8 and policy.horizon == 16     # 4 lifetimes
    assert tuning[-1]["lifetime"] == 4.0 and tuning[-1]["horizon"] == 16
