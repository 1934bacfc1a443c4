"""Policy interface, the decision it returns, and the registry of policies by name."""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from barrierlb._validate import parse_bool
from barrierlb.state import ClusterState, Placement

#: Which branch of a policy produced a decision.
BRANCHES = ("exact", "heuristic", "fallback", "rule", "idle")


@dataclass(frozen=True)
class Decision(Placement):
    """A placement plus how it was reached.

    Attributes
    ----------
    branch : str
        ``"exact"`` (proven optimal: the MILP or the fast solver's enumeration),
        ``"heuristic"`` (fast solver),
        ``"fallback"`` (exact solver timed out; best of its incumbent and the fast
        solver), ``"rule"`` (a baseline's rule) or ``"idle"`` (nothing to place).
    objective : float
        Predicted imbalance of the placement (NaN where the policy does not score).
    solve_time_s : float
        Wall time the policy spent deciding.
    """

    branch: str = "rule"
    objective: float = float("nan")
    solve_time_s: float = 0.0
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {self.branch!r}")


class Policy(ABC):
    """Decides where waiting tasks go. Never mutates the state it is given.

    Subclasses implement :meth:`decide_problem` on the arrays of a
    :class:`~barrierlb.problem.StepProblem`; :meth:`decide` builds that problem
    from a :class:`~barrierlb.state.ClusterState` with the policy's horizon.
    Policy options are keyword-only constructor arguments.
    """

    name: ClassVar[str] = ""
    #: Horizon the policy needs in its step problem (0: current step only).
    horizon: int = 0
    gamma: float = 1.0
    max_wait: int | None = None
    refill: bool = False
    stride: int = 1

    def decide(self, state: ClusterState) -> Decision:
        """Return the decision for the state's current decision point."""
        if not isinstance(state, ClusterState):
            raise TypeError(f"state must be a ClusterState, got {type(state).__name__}")
        started = time.perf_counter()
        if state.n_waiting == 0 or not state.free_slots.any():
            return _idle(started)
        self.tune(state)
        problem, positions = self.step_problem(state)
        return in_pool(self.decide_problem(problem, started=started), positions)

    def tune(self, state: ClusterState, n_free=None) -> None:
        """Set this decision's options from ``state`` before its step problem is built
        (plain ``bfio``'s online controller: :meth:`BFIO.tune`); nothing here. A driver that
        builds its own step problem (the router, the superstep planner) calls it first,
        with ``n_free``, the state's free slots in all, where it has counted them."""
        return None

    def step_problem(self, state: ClusterState):
        """The step problem :meth:`decide` solves and the state's pool positions of its tasks
        (``None``: the whole pool, in order): a decision on it goes back to the pool by
        :func:`in_pool`."""
        return state.step_problem(self.horizon, gamma=self.gamma, max_wait=self.max_wait, refill=self.refill,
                                  stride=self.stride), None

    @abstractmethod
    def decide_problem(self, problem, *, started: float | None = None) -> Decision:
        """Return the decision for an explicit step problem."""

    def decide_arrays(self, projected_load, pool_work, free_slots, pool_ids, *, check: bool | None = None) -> Decision:
        """Decide from bare arrays (what backends gather), with this policy's horizon weights.

        Parameters
        ----------
        projected_load : array, shape (H + 1, G)
        pool_work : array, shape (N, H + 1)
        free_slots : array of int, shape (G,)
        pool_ids : array of int, shape (N,)
        check : None
            Ignored, with a ``DeprecationWarning`` when given: the arrays are
            always checked, once (:meth:`StepProblem.from_arrays`), so that no
            caller can hand the solvers NaN, infinite or negative work.
        """
        from barrierlb.problem import StepProblem, horizon_weights

        if check is not None:
            warnings.warn("decide_arrays(check=...) is ignored: the arrays are always checked",
                          DeprecationWarning, stacklevel=2)
        started = time.perf_counter()
        rows = np.shape(projected_load)[0] if np.ndim(projected_load) == 2 else 1   # else from_arrays says why
        key = (rows, self.gamma)            # a tuned policy's gamma changes between decisions
        cached_key, cached = getattr(self, "_array_weights", (None, None))
        if cached_key != key:
            cached = horizon_weights(max(rows - 1, 0), gamma=self.gamma)
            self._array_weights = (key, cached)
        problem = StepProblem.from_arrays(projected_load, pool_work, free_slots, pool_ids=pool_ids, weights=cached)
        return self.decide_problem(problem, started=started)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({options})"

    def options(self) -> dict:
        """The policy's options as given to its constructor."""
        return dict(getattr(self, "_options", {}))


def _idle(started: float) -> Decision:
    empty = np.zeros(0, dtype=np.int64)
    return Decision(empty, empty, empty, branch="idle", solve_time_s=time.perf_counter() - started)


_REGISTRY: dict[str, type[Policy]] = {}


def register(name: str):
    """Class decorator registering a policy under ``name``."""
    def wrap(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY:
            raise ValueError(f"policy name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def available_policies() -> list[str]:
    """Registered policy names."""
    return sorted(_REGISTRY)


def make_policy(spec: str, *, defaults: dict | None = None, **options) -> Policy:
    """Build a policy from ``"name"`` or ``"name:key=value,key=value"``.

    Option values are parsed as int, float, ``none`` or a flag word
    (``true``/``false``, ``yes``/``no``, ``on``/``off``), else kept as
    strings; flag options also take ``1``/``0``; keyword ``options`` override the spec.
    ``defaults`` fill in options that neither sets, for the policies whose
    constructor takes them (a command line's ``--horizon`` or ``--seed``).

    Examples
    --------
    >>> make_policy("bfio:horizon=40").horizon
    40
    >>> [make_policy(s, defaults={"horizon": 8}).horizon for s in ("bfio", "bfio:horizon=2", "fcfs")]
    [8, 2, 0]
    """
    if not isinstance(spec, str):
        raise TypeError(f"policy spec must be a string, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(available_policies())}")
    parsed = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"policy option {item!r} in {spec!r} must look like key=value")
        key = key.strip().replace("-", "_")
        if key in parsed:
            raise ValueError(f"policy option {key!r} is given twice in {spec!r}")
        parsed[key] = _parse_value(value.strip())
    parsed.update(options)
    cls = _REGISTRY[name]
    accepted = inspect.signature(cls.__init__).parameters
    parsed.update({key: value for key, value in (defaults or {}).items()
                   if key in accepted and key not in parsed})
    try:
        return cls(**parsed)
    except TypeError as error:
        raise ValueError(f"bad options for policy {name!r}: {error}") from None


def _parse_value(text: str):
    """An option's value: an int, a float, ``none``, a flag word (true/false, yes/no, on/off), else the text."""
    lowered = text.lower()
    if lowered in ("true", "false", "yes", "no", "on", "off"):
        return parse_bool(lowered)
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def in_pool(decision: Decision, positions: np.ndarray | None) -> Decision:
    """``decision``, made on a problem that held the pool positions ``positions`` (a bounded
    candidate set; ``None``: the whole pool, in order), with its ``pool_index`` in the pool's."""
    if positions is None or decision.pool_index is None:
        return decision
    return dataclasses.replace(decision, pool_index=positions[np.asarray(decision.pool_index, dtype=np.int64)])


__all__ = ["Decision", "Policy", "available_policies", "in_pool", "make_policy", "register"]
