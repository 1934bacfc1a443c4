"""The router's shortcut for one waiting request places it where the full BF-IO decision would."""

import copy
import zlib

import numpy as np
import pytest

from barrierlb.predictors import SurvivalPredictor
from barrierlb.router import DecodeRouter

POLICIES = ("bfio:horizon=72,gamma=0.7,peak_weight=1000,max_wait=1024,stride=8",
            "bfio:horizon=72,gamma=0.9,peak_weight=1000,max_wait=1024",
            "bfio:horizon=0", "bfio:horizon=5,gamma=0.5", "bfio:horizon=16,stride=3,spread=false",
            "bfio:horizon=12,strict_ties=true", "bfio:horizon=30,peak_weight=1,stride=4",
            "bfio:horizon=16,stride=2,hold=0.05")


def _random_router(rng, policy, *, integral, last=True):
    ranks = int(rng.integers(1, 9))
    slots = int(rng.integers(1, 6))
    predictor = SurvivalPredictor(min_samples=int(rng.integers(1, 40)), strata=int(rng.choice([1, 3, 16])))
    router = DecodeRouter(ranks, slots, policy=policy, predictor=predictor if rng.random() < 0.9 else None)
    if router.predictor is not None:
        learned = int(rng.integers(0, 60))
        prompts = rng.integers(0, 300, learned) if rng.random() < 0.8 else None    # prompt groups, or one
        router.observe_output(rng.integers(0, 80, learned), prompt_tokens=prompts)
    ids = iter(range(10_000))
    running = []
    for _ in range(int(rng.integers(0, ranks * slots + 1))):
        rid = next(ids)
        prompt = float(rng.integers(0, 300)) if integral else float(rng.uniform(0, 300))
        cap = float(rng.integers(1, 100)) if rng.random() < 0.5 else np.inf
        router.add_request(rid, prompt, max_output_tokens=cap)
        running += list(router.route())
    if ranks > 1 and rng.random() < 0.3:                           # a rank down
        for rid in router.rank_down(int(rng.integers(0, ranks))):
            running.remove(rid)
    for rid in running:
        if rng.random() < 0.7:
            router.progress(rid, int(rng.integers(0, 60)))
    for rid in list(running):
        if rng.random() < 0.2:
            router.finish(rid, int(rng.integers(0, 60)))
            running.remove(rid)
    if rng.random() < 0.3 and router.predictor is not None:         # learned, not yet given to the predictor
        router.finish(running.pop(), 7) if running else None
    if last:
        request_id, prompt, cap = _last_request(rng, next(ids), integral=integral)
        router.add_request(request_id, prompt, max_output_tokens=cap)
    return router


def _last_request(rng, request_id, *, integral):
    prompt = float(rng.integers(0, 300)) if integral else float(rng.uniform(0, 300))
    return request_id, prompt, float(rng.integers(1, 64)) if rng.random() < 0.5 else np.inf


@pytest.mark.parametrize("integral", [True, False])
@pytest.mark.parametrize("policy", POLICIES)
def test_one_request_shortcut_places_as_the_full_decision(policy, integral):
    rng = np.random.default_rng(zlib.crc32(f"{policy}:{integral}".encode()))
    shortcut_used = 0
    for _ in range(60):
        router = _random_router(rng, policy, integral=integral)
        full = copy.deepcopy(router)
        full._one_request = False
        fast_placed, full_placed = router.route(), full.route()
        assert fast_placed == full_placed
        if fast_placed:
            shortcut_used += bool(router.last_decision.info.get("one_request"))
            assert not full.last_decision.info.get("one_request")
            assert router.last_decision.objective == pytest.approx(full.last_decision.objective, rel=1e-12, abs=1e-9)
            assert np.array_equal(router.state.slot_ids(), full.state.slot_ids())
            assert np.array_equal(router.load(), full.load())
    assert shortcut_used > 20


def test_one_request_shortcut_is_not_taken_for_other_policies_or_several_requests():
    router = DecodeRouter(2, 2, policy="jsq-tokens", predictor=SurvivalPredictor(min_samples=1))
    router.add_request(1, 10)
    router.route()
    assert not router.last_decision.info.get("one_request")
    router = DecodeRouter(2, 2, policy="bfio:horizon=4", predictor=SurvivalPredictor(min_samples=1))
    router.add_request(1, 10)
    router.add_request(2, 20)
    router.route()
    assert not router.last_decision.info.get("one_request")
    router.add_request(3, 20)
    router.route()
    assert router.last_decision.info.get("one_request")
    router.add_request(4, 20)
    router.policy = "bfio:horizon=4,refill=true"
    router.route()
    assert not router.last_decision.info.get("one_request")


def _router_state(router):
    """Everything admit and add_request + route may change, as plain values to compare."""
    state = router.state
    arrays = [state._slot_id, state._slot_work, state._slot_growth, state._slot_remaining, state._slot_prompt,
              state._slot_age, state._active_count, state._placed, router._slot_cap]
    out = [[a.tolist() for a in arrays], dict(state._location), {k: v.tolist() for k, v in state._pool.items()},
           dict(router._bounded.cap), sorted(router._queued_at), router.policy.options(),
           [getattr(router.policy, name, None) for name in ("horizon", "gamma", "stride", "peak_weight", "max_wait")]]
    tuning = getattr(router.policy, "tuning", None)
    if tuning is not None:
        observer = tuning.observer
        out.append([tuning.decisions, tuning.current, tuning.lifetime, observer.clock, observer.n_finished,
                    observer._head, observer._life.tolist(), observer._end.tolist(),
                    None if observer._ids is None else observer._ids.tolist(),
                    None if observer._age is None else observer._age.tolist()])
    return out


@pytest.mark.parametrize("policy", ("bfio", "bfio:hold=0.05", "bfio:max_wait=64", *POLICIES[:3], POLICIES[-1],
                                    "bfio:refill=true", "jsq-tokens"))
def test_admit_leaves_the_state_that_add_request_and_route_leave(policy):
    rng = np.random.default_rng(zlib.crc32(policy.encode()))
    admitted_fast = 0
    for trial in range(80):
        router = _random_router(rng, policy, integral=bool(trial % 2), last=False)
        for _ in range(int(rng.integers(0, 40))):      # the online controller's decisions and estimate move on
            if router.state.n_waiting or not router.state.free_slots.any():
                break
            router.add_request(10_000 + _, float(rng.integers(0, 300)))
            router.route()
            if rng.random() < 0.5:
                router.step_report()
        running = list(router.state._location)
        for done in rng.permutation(running)[:int(rng.integers(0, len(running) + 1))].tolist():
            router.finish(done, int(rng.integers(0, 60)))      # slots free up, lifetimes end
        request_id, prompt, cap = _last_request(rng, 20_000, integral=bool(trial % 2))
        if rng.random() < 0.2:                        # one already waiting: admit only queues
            router.add_request(20_001, 5.0)
        general = copy.deepcopy(router)
        rank = router.admit(request_id, prompt, max_output_tokens=cap, queued_at=1.0)
        general.add_request(request_id, prompt, max_output_tokens=cap, queued_at=1.0)
        placed = general.route() if general.state.n_waiting == 1 else {}
        assert rank == placed.get(request_id, -1)
        assert _router_state(router) == _router_state(general)
        if rank >= 0:
            decision, full = router.last_decision, general.last_decision
            admitted_fast += bool(decision.info.get("admitted"))
            assert decision.task_ids.tolist() == full.task_ids.tolist() == [request_id]
            assert decision.workers.tolist() == full.workers.tolist() == [rank]
            assert decision.objective == full.objective or np.isnan(decision.objective) and np.isnan(full.objective)
    if policy.startswith("bfio") and "refill" not in policy:
        assert admitted_fast > 10
    else:
        assert admitted_fast == 0


def test_admit_rejects_what_add_request_rejects():
    router = DecodeRouter(2, 2, policy="bfio")
    for bad in ({"prompt_tokens": -1.0}, {"prompt_tokens": float("nan")}, {"max_output_tokens": -2.0},
                {"request_id": -3}, {"prompt_tokens": True}, {"queued_at": float("inf")}):
        arguments = {"request_id": 1, "prompt_tokens": 10.0, **bad}
        with pytest.raises((ValueError, TypeError)):
            router.admit(arguments.pop("request_id"), arguments.pop("prompt_tokens"), **arguments)
    assert router.state.n_waiting == 0 and not router.state._location
    assert router.admit(1, 10.0) >= 0
    with pytest.raises(ValueError, match="duplicate"):
        router.admit(1, 10.0)
