"""route() takes the policy's bounded candidate set, as the policy's own decide() does."""

import numpy as np

from barrierlb import make_policy
from barrierlb.router import DecodeRouter


def _router(spec, n):
    router = DecodeRouter(4, 3, policy=spec)
    rng = np.random.default_rng(3)
    for request_id, prompt in enumerate(rng.integers(10, 2000, n).tolist()):
        router.add_request(request_id, prompt, predicted_output_tokens=50 + request_id % 40)
    return router


def test_route_considers_only_the_bounded_candidates_and_places_like_decide():
    spec = "bfio:horizon=8,candidates=16"
    router = _router(spec, 200)
    placed = router.route()
    assert router.last_decision.info["pool_considered"] == 16   # max(candidates, free slots) = max(16, 12)
    assert len(placed) == 12
    assert all(request_id < 16 for request_id in placed)         # among the oldest sixteen

    same = _router(spec, 200)
    decision = make_policy(spec).decide(same.state)
    assert dict(zip(decision.task_ids.tolist(), decision.workers.tolist())) == placed
