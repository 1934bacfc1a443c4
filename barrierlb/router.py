"""A data-parallel router for LLM serving engines.

Engines such as vLLM and SGLang accept an explicit ``data_parallel_rank`` per
request. :class:`DecodeRouter` chooses it: queue requests as they arrive, report
each engine step (which requests finished), and ask for the placement of the
queued requests whenever slots are free. Requests never move once routed (their
KV cache stays on the rank).

Examples
--------
>>> router = DecodeRouter(n_ranks=2, slots=2, policy="bfio:horizon=0")
>>> router.add_request(7, prompt_tokens=900)
>>> router.add_request(8, prompt_tokens=100)
>>> ranks = router.route()                # {request_id: data_parallel_rank}
>>> sorted(ranks) == [7, 8] and ranks[7] != ranks[8]
True
>>> router.step_report(finished=[8])      # after one decode step, request 8 ended
"""

from __future__ import annotations

import math

import numpy as np

from barrierlb._validate import check_int, check_real
from barrierlb.policies import Policy, make_policy
from barrierlb.policies.bfio import LLM_DECODE
from barrierlb.state import ClusterState


class DecodeRouter:
    """Route decode requests to data-parallel ranks with a barrierlb policy.

    Parameters
    ----------
    n_ranks : int
        Data-parallel ranks.
    slots : int
        Concurrent requests per rank (the engine's max batch).
    policy : str or Policy
        Default: :data:`barrierlb.policies.bfio.LLM_DECODE`.
    predictor : object, optional
        Refreshes predicted remaining lengths before each decision
        (``remaining(task_ids, prompt, generated)``), e.g.
        :class:`barrierlb.predictors.SurvivalPredictor` fed with
        :meth:`observe_output`. Without an oracle on long outputs,
        ``SurvivalPredictor(draws=16)`` with the policy
        :data:`barrierlb.policies.bfio.LLM_DECODE_NO_ORACLE` measured best
        (docs/simulator.md).
    """

    def __init__(self, n_ranks: int, slots: int, *, policy: str | Policy = LLM_DECODE, predictor=None):
        self.state = ClusterState(check_int("n_ranks", n_ranks, minimum=1), check_int("slots", slots, minimum=1))
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
        self.predictor = predictor

    def add_request(self, request_id: int, prompt_tokens: float, *,
                    predicted_output_tokens: float = math.inf) -> None:
        """Queue a request (prompt length known; output length if a predictor knows it)."""
        prompt = check_real("prompt_tokens", prompt_tokens, minimum=0.0)
        steps = check_real("predicted_output_tokens", predicted_output_tokens, minimum=0.0, allow_inf=True)
        self.state.submit_arrays([request_id], [prompt], growth=1.0, steps=[steps], prompt=[prompt])

    def route(self) -> dict[int, int]:
        """Place queued requests in free slots; returns ``{request_id: data_parallel_rank}``."""
        if self.predictor is not None and getattr(self.predictor, "adaptive", False):
            self.state.refresh_predictions(self.predictor)
        decision = self.policy.decide(self.state)
        self.state.place(decision)
        return dict(zip(decision.task_ids.tolist(), decision.workers.tolist()))

    def step_report(self, finished=()) -> None:
        """Report one engine step: every running request generated a token; ``finished`` ended."""
        self.state.advance()
        finished = np.asarray(list(finished), dtype=np.int64)
        if finished.size:
            self.state.complete(finished)

    def observe_output(self, output_tokens) -> None:
        """Feed finished requests' output lengths to a learning predictor."""
        if self.predictor is not None:
            self.predictor.observe(output_tokens)

    def rank_of(self, request_id: int) -> int:
        return self.state.worker_of(request_id)

    @property
    def queued(self) -> int:
        return self.state.n_waiting

    def load(self) -> np.ndarray:
        """Resident tokens per rank."""
        return self.state.current_load()
