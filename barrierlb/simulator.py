"""Barrier-synchronized data-parallel decode, simulated step by step.

Each step every active request produces one token; the step lasts as long as the
slowest worker (a pluggable step-time model, default the paper's linear
:class:`~barrierlb.energy.StepTimeModel`, or :class:`~barrierlb.energy.RooflineStepTime`;
the power model prices each step, :func:`~barrierlb.energy.step_cost`); requests end after
their output length; then the policy refills the freed slots from the waiting pool. Stickiness comes from
:class:`~barrierlb.state.ClusterState`: a request's KV cache never moves.

Two arrival modes:

- ``"pool"`` (the paper's overloaded regime): the waiting pool is topped up to
  ``pool`` visible requests from the workload before every decision;
- ``"trace"``: requests arrive at their trace timestamps (divided by
  ``rate_scale``), queue in arrival order, and the first ``pool`` of them are
  visible to the policy; TTFT includes the queueing.

The simulator never writes files; :meth:`Simulator.step` and
:meth:`Simulator.run` are separate so callers can drive or observe it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from barrierlb._validate import check_bool, check_int, check_real
from barrierlb.energy import AbsolutePowerModel, PowerModel, RooflineStepTime, StepTimeModel, power_preset, step_cost
from barrierlb.metrics import RunMetrics, summarize
from barrierlb.policies import Policy
from barrierlb.predictors import OraclePredictor
from barrierlb.state import ClusterState
from barrierlb.workloads import Workload

#: Default step cap of a run (``SimulationConfig.max_steps``, ``--max-steps``): 73
#: times the steps of the paper's 20,000-request run under FCFS (13,762) and 8.6
#: times those of the hour-long Azure code trace replayed at its timestamps
#: (116,117); a request of 10**12 output tokens stops here instead of running for ever.
DEFAULT_MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class SimulationConfig:
    """Cluster, arrival and cost settings of a simulation.

    Attributes
    ----------
    n_workers : int
        Data-parallel ranks ``G`` (default 32).
    slots : int
        Batch slots per rank ``B`` (default 72).
    pool : int
        Waiting requests visible to the policy ``R`` (default 128).
    arrivals : str
        ``"pool"`` (overloaded, always ``R`` waiting) or ``"trace"`` (timestamps).
    rate_scale : float
        Trace mode: arrivals come ``rate_scale`` times faster than recorded.
    step_time : StepTimeModel or RooflineStepTime, optional
        Default: :meth:`StepTimeModel.paper` for ``slots`` (linear).
    power : PowerModel or AbsolutePowerModel
        Default: the reference code's relative model with the paper's 100 W idle /
        400 W max / exponent 0.7 (docs/energy.md).
    speeds : tuple of float, optional
        Relative worker speeds (heterogeneous workers), positive and finite; step time
        uses ``max_g L_g / speed_g``. Default all 1.
    record_loads : bool
        Keep the per-step, per-worker loads (for plots and CSV dumps).
    max_steps : int or None
        Stop after this many barrier steps (default :data:`DEFAULT_MAX_STEPS`),
        or this many decision points at which nothing ran (:meth:`Simulator.run`);
        a run stopped here with requests left has ``truncated=True``.
        ``None``: no cap.
    """

    n_workers: int = 32
    slots: int = 72
    pool: int = 128
    arrivals: str = "pool"
    rate_scale: float = 1.0
    step_time: StepTimeModel | RooflineStepTime | None = None
    power: PowerModel | AbsolutePowerModel = field(default_factory=lambda: power_preset("paper"))
    speeds: tuple | None = None
    record_loads: bool = False
    max_steps: int | None = DEFAULT_MAX_STEPS

    def __post_init__(self):
        check_int("n_workers", self.n_workers, minimum=1)
        check_int("slots", self.slots, minimum=1)
        check_int("pool", self.pool, minimum=1)
        if self.arrivals not in ("pool", "trace"):
            raise ValueError(f"arrivals must be 'pool' or 'trace', got {self.arrivals!r}")
        check_real("rate_scale", self.rate_scale, minimum=1e-9)
        if self.speeds is not None:
            speeds = np.asarray(self.speeds, dtype=np.float64)
            if speeds.shape != (self.n_workers,) or not ((speeds > 0) & np.isfinite(speeds)).all():
                raise ValueError(f"speeds must be {self.n_workers} positive finite numbers, got {self.speeds!r}")
        object.__setattr__(self, "record_loads", check_bool("record_loads", self.record_loads))
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, minimum=1)
        if self.step_time is not None and not isinstance(self.step_time, (StepTimeModel, RooflineStepTime)):
            raise TypeError(f"step_time must be a StepTimeModel or RooflineStepTime, got {self.step_time!r}")
        if not isinstance(self.power, (PowerModel, AbsolutePowerModel)):
            raise TypeError(f"power must be a PowerModel or AbsolutePowerModel, got {self.power!r}")

    @property
    def step_time_model(self) -> StepTimeModel | RooflineStepTime:
        return self.step_time or StepTimeModel.paper(self.slots)


@dataclass
class SimulationResult:
    """What a run produced: metrics plus the per-step series."""

    policy: str
    metrics: RunMetrics
    step_time_s: np.ndarray
    max_load: np.ndarray
    sum_load: np.ndarray
    loads: np.ndarray | None          # (steps, G) when config.record_loads
    decisions: dict                   # branch -> count
    truncated: bool                   # requests left unfinished (run(): the step cap was reached)


class Simulator:
    """Drives one policy over one workload.

    Parameters
    ----------
    workload : Workload
    policy : Policy
    config : SimulationConfig, optional
    predictor : object, optional
        Lookahead predictor (default: the oracle, the paper's setting).
    policy_name : str, optional
        Label for the result (default the policy's registry name).
    """

    def __init__(self, workload: Workload, policy: Policy, *, config: SimulationConfig | None = None,
                 predictor=None, policy_name: str | None = None):
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, got {type(policy).__name__}")
        self.config = config or SimulationConfig()
        if self.config.arrivals == "trace" and workload.arrival_s is None:
            raise ValueError(f"workload {workload.name!r} has no timestamps; use arrivals='pool'")
        self.workload = workload
        self.policy = policy
        self.policy_name = policy_name or policy.name
        self.predictor = predictor or OraclePredictor(workload.output_tokens)
        cfg = self.config
        self.state = ClusterState(cfg.n_workers, cfg.slots)
        self._model = cfg.step_time_model
        self._speeds = None if cfg.speeds is None else np.asarray(cfg.speeds, dtype=np.float64)
        n = len(workload)
        self._prompt = workload.prompt_tokens.astype(np.float64)
        self._output = workload.output_tokens.astype(np.int64)
        self._arrival = (workload.arrival_s / cfg.rate_scale) if cfg.arrivals == "trace" else None
        self._enqueued_s = np.full(n, np.nan)
        self._first_token_s = np.full(n, np.nan)
        self._finish_s = np.full(n, np.nan)
        self._next = 0                 # next request not yet in the pool
        self.clock_s = 0.0
        self.steps = 0
        #: Decision points at which nothing ran and no request was still to arrive (no time passed).
        self.idle_rounds = 0
        self._last_assign_step = 0
        self._series: dict[str, list] = {k: [] for k in ("time", "max", "sum", "min", "alive", "energy",
                                                         "tokens", "loads", "max_after", "sum_after")}
        self._decision_s: list[float] = []
        self._branches: dict[str, int] = {}

    @property
    def done(self) -> bool:
        return self._next >= len(self.workload) and self.state.n_waiting == 0 and self.state.n_active == 0

    def _admit(self) -> None:
        """Top the pool up to ``R`` visible requests from those that have arrived."""
        room = self.config.pool - self.state.n_waiting
        if room <= 0 or self._next >= len(self.workload):
            return
        stop = min(len(self.workload), self._next + room)
        if self._arrival is not None:
            stop = min(stop, int(np.searchsorted(self._arrival, self.clock_s, side="right")))
        if stop <= self._next:
            return
        ids = np.arange(self._next, stop, dtype=np.int64)
        prompt = self._prompt[ids]
        steps = self.predictor.remaining(ids, prompt, np.zeros(ids.size, dtype=np.int64))
        self.state.submit_arrays(ids, prompt, growth=1.0, steps=steps, prompt=prompt)
        self._enqueued_s[ids] = self.clock_s if self._arrival is None else self._arrival[ids]
        self._next = stop

    def step(self) -> bool:
        """Run one barrier step (admit, decide, decode one token everywhere, retire).

        Returns False when the workload is finished (nothing was run).
        """
        if self.done:
            return False
        state = self.state
        self._admit()
        if state.n_waiting and state.free_slots.any():
            if self.predictor.adaptive:
                state.refresh_predictions(self.predictor)
            decision = self.policy.decide(state)
            state.place(decision)
            self._decision_s.append(decision.solve_time_s)
            self._branches[decision.branch] = self._branches.get(decision.branch, 0) + 1
            if decision.task_ids.size:
                self._last_assign_step = self.steps
        if state.n_active == 0:
            # Trace mode with an empty cluster: jump to the next arrival.
            if self._arrival is not None and self._next < len(self.workload) \
                    and self._arrival[self._next] > self.clock_s:
                self.clock_s = float(self._arrival[self._next])
                return True
            # Nothing runs and nothing is on its way: the policy placed nothing on an empty
            # cluster (or no worker is up). Counted, so that run() cannot loop here for ever.
            self.idle_rounds += not self.done
            return not self.done
        ids = state.slot_ids()
        occupied = ids >= 0
        loads = state.current_load()
        alive = state.alive
        alive_loads = loads[alive]
        duration, energy = step_cost(self._model, self.config.power, loads, occupied.sum(axis=1), alive,
                                     self._speeds)
        max_load = float(alive_loads.max())
        running = ids[occupied]
        fresh = running[np.isnan(self._first_token_s[running])]
        self.clock_s += duration
        self._first_token_s[fresh] = self.clock_s
        series = self._series
        series["time"].append(duration)
        series["max"].append(max_load)
        series["sum"].append(float(alive_loads.sum()))
        series["min"].append(float(alive_loads.min()))
        series["alive"].append(int(alive.sum()))
        series["energy"].append(energy)
        series["tokens"].append(int(running.size))
        if self.config.record_loads:
            series["loads"].append(loads)
        state.advance()
        finished_mask = occupied & (state.slot_age() >= self._output[np.where(occupied, ids, 0)])
        if finished_mask.any():
            finished = state.complete_slots(finished_mask)
            self._finish_s[finished] = self.clock_s
            self.predictor.observe(self._output[finished], prompt_tokens=self._prompt[finished])
        after = state.current_load()[alive]
        series["max_after"].append(float(after.max()))
        series["sum_after"].append(float(after.sum()))
        self.steps += 1
        return True

    def run(self, *, progress=None) -> SimulationResult:
        """Run to the end of the workload, or until ``config.max_steps`` steps have run.

        A run that reaches the cap with requests left returns a result with
        ``truncated=True``; so does one that has spent ``config.max_steps``
        decision points with nothing running and nothing still to arrive
        (:attr:`idle_rounds`: a policy that places nothing on an empty cluster,
        or no worker up), which would otherwise never end.

        Parameters
        ----------
        progress : callable, optional
            Called as ``progress(finished_requests, total_requests)`` every 64 steps.
        """
        total = len(self.workload)
        limit = self.config.max_steps
        while self.step():
            if progress is not None and self.steps % 64 == 0:
                progress(int(np.count_nonzero(~np.isnan(self._finish_s))), total)
            if limit is not None and (self.steps >= limit or self.idle_rounds >= limit):
                break
        if progress is not None:
            progress(int(np.count_nonzero(~np.isnan(self._finish_s))), total)
        return self.result()

    def result(self) -> SimulationResult:
        """Metrics and series of the steps run so far."""
        s = {k: np.asarray(v) for k, v in self._series.items() if k != "loads"}
        finished = ~np.isnan(self._finish_s)
        multi = finished & (self._output > 1)
        tpot = (self._finish_s[multi] - self._first_token_s[multi]) / (self._output[multi] - 1)
        ttft = self._first_token_s[finished] - self._enqueued_s[finished]
        metrics = summarize(max_load=s["max"], sum_load=s["sum"], min_load=s["min"], n_alive=s["alive"],
                            step_time_s=s["time"], energy_j=s["energy"], tokens=s["tokens"],
                            window_steps=self._last_assign_step + 1, decision_s=np.asarray(self._decision_s),
                            ttft_s=ttft, tpot_s=tpot, completed=int(finished.sum()),
                            max_after=s["max_after"], sum_after=s["sum_after"])
        loads = np.asarray(self._series["loads"]) if self.config.record_loads else None
        return SimulationResult(policy=self.policy_name, metrics=metrics, step_time_s=s["time"],
                                max_load=s["max"], sum_load=s["sum"], loads=loads,
                                decisions=dict(self._branches), truncated=not self.done)


def simulate(workload: Workload, policy: Policy, *, config: SimulationConfig | None = None, predictor=None,
             policy_name: str | None = None, progress=None) -> SimulationResult:
    """Run one policy over one workload; see :class:`Simulator`."""
    return Simulator(workload, policy, config=config, predictor=predictor,
                     policy_name=policy_name).run(progress=progress)
