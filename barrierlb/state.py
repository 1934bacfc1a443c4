"""Cluster state: the ledger of workers, sticky tasks and the waiting pool, plus the lookahead projection.

:class:`ClusterState` is the object policies decide on and backends keep: the
generic ledger (:class:`barrierlb.ledger.Ledger`: where tasks live, free slots,
liveness) with the step problem of the next decision
(:mod:`barrierlb.projection`).
"""

from __future__ import annotations

from barrierlb import projection
from barrierlb.ledger import Ledger, Placement
from barrierlb.problem import StepProblem

__all__ = ["ClusterState", "Placement"]


class ClusterState(Ledger):
    """Workers with slot capacities, their sticky tasks and the waiting pool.

    The parameters are the :class:`~barrierlb.ledger.Ledger`'s: ``n_workers``,
    ``capacity`` (an int or one per worker) and ``alive`` (default all).

    Examples
    --------
    >>> import numpy as np
    >>> from barrierlb import Task
    >>> state = ClusterState(2, 1)
    >>> state.submit([Task.constant(7, 3.0), Task.constant(8, 1.0)])
    >>> state.place(Placement(np.array([7, 8]), np.array([1, 0])))
    >>> state.worker_of(7)
    1
    >>> state.step_problem(2).projected_load.tolist()
    [[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]]
    """

    def refresh_predictions(self, predictor) -> None:
        """Set each affine task's predicted remaining steps (:func:`barrierlb.projection.refresh_predictions`)."""
        projection.refresh_predictions(self, predictor)

    def step_problem(self, horizon: int = 0, *, gamma: float = 1.0, max_wait: int | None = None,
                     work_conserving: bool = True, refill: bool = False, stride: int = 1) -> StepProblem:
        """The arrays of the BF-IO step problem at this decision point
        (:func:`barrierlb.projection.step_problem`, which documents the options)."""
        return projection.step_problem(self, horizon, gamma=gamma, max_wait=max_wait,
                                       work_conserving=work_conserving, refill=refill, stride=stride)
