"""The router's shortcut for one waiting request places it where the full BF-IO decision would."""

import copy

import numpy as np
import pytest

from barrierlb.predictors import SurvivalPredictor
from barrierlb.router import DecodeRouter

POLICIES = ("bfio:horizon=72,gamma=0.7,peak_weight=1000,max_wait=1024,stride=8",
            "bfio:horizon=72,gamma=0.9,peak_weight=1000,max_wait=1024",
            "bfio:horizon=0", "bfio:horizon=5,gamma=0.5", "bfio:horizon=16,stride=3,spread=false",
            "bfio:horizon=12,strict_ties=true", "bfio:horizon=30,peak_weight=1,stride=4",
            "bfio:horizon=16,stride=2,hold=0.05")


def _random_router(rng, policy, *, integral):
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
    prompt = float(rng.integers(0, 300)) if integral else float(rng.uniform(0, 300))
    router.add_request(next(ids), prompt, max_output_tokens=float(rng.integers(1, 64)) if rng.random() < 0.5
                       else np.inf)
    return router


@pytest.mark.parametrize("integral", [True, False])
@pytest.mark.parametrize("policy", POLICIES)
def test_one_request_shortcut_places_as_the_full_decision(policy, integral):
    rng = np.random.default_rng(abs(hash((policy, integral))) % 2**32)
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
