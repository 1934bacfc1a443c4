"""Step-time and power models of a barrier-synchronized decode step (the paper's evaluation setup, docs/energy.md).

Two step-time models:

- :class:`StepTimeModel` (linear, the paper's default): ``c + t_l * max_g L_g / speed_g``;
- :class:`RooflineStepTime`: each worker's decode work (weights and KV cache read, FLOPs
  of its tokens and their attention) against an accelerator's peaks, the slowest
  worker's time plus a fixed overhead.

Two power models:

- :class:`PowerModel` (*relative*, the reference code's): every alive worker draws
  ``P_idle + (P_max - P_idle) * (L_g / max L)**0.7`` for the whole step, utilization
  measured against the slowest worker;
- :class:`AbsolutePowerModel` (the paper's formula): utilization is the share of the
  step a worker's bottleneck resource (tensor cores or HBM) is busy, measured against
  the accelerator's peaks, ``P_wait + (P_max - P_wait) * min(1, u / u_sat)**0.7``.

:func:`step_cost` turns one step's loads into its duration and energy under any pair.
Accelerator and model presets live in :mod:`barrierlb.hardware`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from barrierlb._validate import check_int, check_real
from barrierlb.hardware import ACCELERATOR_PRESETS, Accelerator, ModelSpec, _lookup, accelerator_preset

#: The paper's fixed per-step cost is ``(B * 0.6e-3 + 35e-3) / 16`` s; its batch-independent
#: part, 35 ms / 16, is the roofline's default overhead (launches, sampling, collectives).
PAPER_FIXED_OVERHEAD_S = 35e-3 / 16


@dataclass(frozen=True)
class StepTimeModel:
    """Linear step time ``overhead_s + per_unit_s * max load``.

    For the absolute power model a worker is busy for ``overhead_s + per_unit_s * L_g``:
    the paper's ``c`` grows with the batch size, so it stands for the per-step weight and
    expert work that every data-parallel rank joins (in an expert-parallel MoE every rank
    runs every forward pass), not for idle time.

    Attributes
    ----------
    overhead_s : float
        Fixed cost of a step, ``c`` (s).
    per_unit_s : float
        Time per unit of work (s per resident token), ``t_l``.
    """

    overhead_s: float
    per_unit_s: float

    def __post_init__(self):
        check_real("overhead_s", self.overhead_s, minimum=0.0)
        check_real("per_unit_s", self.per_unit_s, minimum=0.0)

    @classmethod
    def paper(cls, slots: int = 72) -> StepTimeModel:
        """DeepSeek-V3-like decode: ``c = (B * 0.6e-3 + 35e-3) / 16`` s, ``t_l = 1.5 * 2 * 576 * 61e-6 / 2**20`` s."""
        slots = check_int("slots", slots, minimum=1)
        return cls(overhead_s=(slots * 0.6e-3 + 35e-3) / 16, per_unit_s=1.5 * 2 * 576 * 61e-6 / 2**20)

    def step_time_s(self, max_load: float) -> float:
        return self.overhead_s + self.per_unit_s * max_load

    def busy_s(self, loads: np.ndarray, tokens: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Per-worker time spent on work, shape (G,): ``per_unit_s * L_g`` (the overhead comes on top)."""
        return self.per_unit_s * np.asarray(loads, dtype=np.float64)

    #: Whether the fixed overhead counts as busy time for the absolute power model.
    overhead_is_busy = True


@dataclass(frozen=True)
class RooflineStepTime:
    """Roofline decode step: each worker's work against an accelerator's peaks.

    Per worker ``g`` with ``b_g`` tokens to decode and ``L_g`` resident tokens, two phases
    run one after the other, each as long as its slower resource:

    - weights: FLOPs ``2 * shared_params * b_g`` and bytes ``shared_params * bytes_per_param``
      if ``b_g > 0``; for a MoE with expert parallelism over the ``G`` alive workers, every
      worker also holds ``routed_expert_params / min(G, E)`` (replicated beyond ``E``
      experts), reads the share of them that at least one of the step's tokens reaches
      (``1 - (1 - k / E)**(T * min(G, E) / G)`` for ``T`` tokens in the whole step, uniform
      routing) and computes ``2 * active_routed_params * T / G`` FLOPs (routing balanced
      over the ranks, as EPLB aims for), whether or not it has requests of its own;
    - attention: FLOPs ``attention_flops_per_token * L_g``, bytes ``kv_bytes_per_token * L_g``.

    ``time_g = (max(flops_w / peak_gemm, bytes_w / bw) + max(flops_a / peak_attn, bytes_a / bw))
    / tensor_parallel``; the step lasts ``overhead_s + max_g time_g / speed_g``. Not modelled:
    communication bandwidth, kernel efficiency below peak, memory capacity.

    Attributes
    ----------
    accelerator : Accelerator
    model : ModelSpec
    overhead_s : float
        Fixed cost per step (s), spent waiting (not busy); default the paper's
        batch-independent 35 ms / 16.
    """

    accelerator: Accelerator
    model: ModelSpec
    overhead_s: float = PAPER_FIXED_OVERHEAD_S

    overhead_is_busy = False

    def __post_init__(self):
        if not isinstance(self.accelerator, Accelerator):
            raise TypeError(f"accelerator must be an Accelerator, got {type(self.accelerator).__name__}")
        if not isinstance(self.model, ModelSpec):
            raise TypeError(f"model must be a ModelSpec, got {type(self.model).__name__}")
        check_real("overhead_s", self.overhead_s, minimum=0.0)

    def busy_s(self, loads: np.ndarray, tokens: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Per-worker roofline time of the step's work (s), shape (G,), before speeds."""
        model, chip = self.model, self.accelerator
        loads = np.asarray(loads, dtype=np.float64)
        tokens = np.asarray(tokens, dtype=np.float64)
        n_alive = int(np.count_nonzero(alive))
        weight_flops = 2.0 * model.shared_params * tokens
        weight_bytes = model.weight_bytes_per_param * model.shared_params * (tokens > 0)
        if model.is_moe and n_alive:
            step_tokens = float(tokens[alive].sum())
            ranks = min(n_alive, model.routed_experts)
            routed_per_replica = step_tokens * ranks / n_alive
            touched = 1.0 - (1.0 - model.experts_per_token / model.routed_experts) ** routed_per_replica
            weight_flops = weight_flops + 2.0 * model.active_routed_params * step_tokens / n_alive
            weight_bytes = weight_bytes + model.weight_bytes_per_param * model.routed_expert_params / ranks * touched
        weights_s = np.maximum(weight_flops / chip.peak_flops(model.weight_bytes_per_param),
                               weight_bytes / chip.hbm_bytes_s)
        attention_s = np.maximum(model.attention_flops_per_token * loads
                                 / chip.peak_flops(model.attention_bytes_per_value),
                                 model.kv_bytes_per_token * loads / chip.hbm_bytes_s)
        return (weights_s + attention_s) / model.tensor_parallel


def _check_curve(model) -> None:
    """The checks both power models share: powers and the curve's exponent."""
    check_real("idle_w", model.idle_w, minimum=0.0)
    check_real("max_w", model.max_w, minimum=model.idle_w)
    check_real("exponent", model.exponent, minimum=0.0)


@dataclass(frozen=True)
class PowerModel:
    """The *relative* power model, the reference code's: ``idle_w + (max_w - idle_w) * u**exponent`` (W).

    The simulator gives it ``u = L_g / max_g L``, a worker's load relative to the slowest
    worker's, so a balanced cluster counts every worker at ``max_w`` however little work
    the step holds. It reproduces the authors' simulator and holds in the overloaded
    regime; :class:`AbsolutePowerModel` holds in every regime.
    """

    idle_w: float
    max_w: float
    exponent: float = 0.7
    source: str = ""

    def __post_init__(self):
        _check_curve(self)

    def power_w(self, utilization) -> np.ndarray:
        """Power per worker for utilizations in [0, 1]."""
        u = np.clip(np.asarray(utilization, dtype=np.float64), 0.0, 1.0)
        return self.idle_w + (self.max_w - self.idle_w) * u**self.exponent


@dataclass(frozen=True)
class AbsolutePowerModel:
    """The paper's power formula on an absolute utilization (W per worker).

    ``power = wait_w + (max_w - wait_w) * min(1, u / saturation)**exponent`` for the whole
    step, where ``u`` is the share of the step the worker's bottleneck resource is busy
    (its roofline or linear work time over the step time: compute utilization when
    compute-bound, bandwidth utilization when memory-bound), so it is measured against
    the accelerator's peaks, not against the slowest worker. A worker waiting at the
    barrier for the whole step draws ``wait_w``: ``idle_w`` by default, or a stated
    spin-wait power (a polling barrier kernel keeps clocks up).

    Attributes
    ----------
    idle_w, max_w : float
        Worker power idle and at saturation (W).
    exponent : float
        Shape of the power curve (the paper's 0.7).
    saturation : float
        Utilization at which the worker reaches ``max_w`` (the paper's saturation MFU);
        default 1: only a worker busy the whole step draws full power.
    wait_w : float, optional
        Power while waiting at the barrier (``idle_w <= wait_w <= max_w``); default ``idle_w``.
    source : str
    """

    idle_w: float
    max_w: float
    exponent: float = 0.7
    saturation: float = 1.0
    wait_w: float | None = None
    source: str = ""

    def __post_init__(self):
        _check_curve(self)
        check_real("saturation", self.saturation, minimum=1e-9, maximum=1.0)
        if self.wait_w is not None:
            check_real("wait_w", self.wait_w, minimum=self.idle_w, maximum=self.max_w)

    @classmethod
    def for_worker(cls, accelerator: Accelerator, *, tensor_parallel: int = 1, exponent: float = 0.7,
                   saturation: float = 1.0, wait_w: float | None = None) -> AbsolutePowerModel:
        """A worker of ``tensor_parallel`` accelerators (powers add; ``wait_w`` is per accelerator)."""
        tensor_parallel = check_int("tensor_parallel", tensor_parallel, minimum=1)
        return cls(idle_w=accelerator.idle_w * tensor_parallel, max_w=accelerator.max_w * tensor_parallel,
                   exponent=exponent, saturation=saturation,
                   wait_w=None if wait_w is None else wait_w * tensor_parallel,
                   source=f"{tensor_parallel} x {accelerator.name}: {accelerator.source}")

    @property
    def floor_w(self) -> float:
        return self.idle_w if self.wait_w is None else self.wait_w

    def power_w(self, utilization) -> np.ndarray:
        """Power per worker for absolute utilizations (clipped to [0, 1], capped at ``max_w``)."""
        u = np.clip(np.asarray(utilization, dtype=np.float64), 0.0, 1.0)
        return self.floor_w + (self.max_w - self.floor_w) * np.minimum(1.0, u / self.saturation) ** self.exponent


def step_cost(step_time, power, loads, tokens, alive, speeds=None) -> tuple[float, float]:
    """Duration (s) and energy (J) of one barrier step.

    Parameters
    ----------
    step_time : StepTimeModel or RooflineStepTime
    power : PowerModel or AbsolutePowerModel
    loads : ndarray, shape (G,)
        Resident tokens (work) per worker this step.
    tokens : ndarray, shape (G,)
        Tokens each worker decodes this step (its running requests).
    alive : ndarray of bool, shape (G,)
        Dead workers neither count in the step time nor draw power; at least one is alive.
    speeds : ndarray, shape (G,), optional
        Relative worker speeds (work time is divided by them).

    Returns
    -------
    duration_s, energy_j : float
    """
    alive_loads = loads[alive]
    if isinstance(step_time, StepTimeModel) and isinstance(power, PowerModel):
        # The reference code's arithmetic, operation for operation, so its figures reproduce exactly.
        effective = loads / speeds if speeds is not None else loads
        duration = step_time.step_time_s(float(effective[alive].max()))
    else:
        busy = step_time.busy_s(loads, tokens, alive)
        if speeds is not None:
            busy = busy / speeds
        busy = busy[alive]
        duration = step_time.overhead_s + float(busy.max())
    if isinstance(power, PowerModel):
        max_load = float(alive_loads.max())
        utilization = alive_loads / max_load if max_load > 0 else np.zeros_like(alive_loads)
    elif isinstance(power, AbsolutePowerModel):
        if step_time.overhead_is_busy:
            busy = busy + step_time.overhead_s
        utilization = busy / duration if duration > 0 else np.zeros_like(busy)
    else:
        raise TypeError(f"power must be a PowerModel or AbsolutePowerModel, got {type(power).__name__}")
    return duration, float(power.power_w(utilization).sum()) * duration


def average_power_w(energy_per_token_j: float, throughput_tok_s: float) -> float:
    """Cluster power averaged over the measurement window (W): energy per token x tokens per second."""
    return energy_per_token_j * throughput_tok_s


_TDP_NOTE = ("max_w is the vendor's board power (TDP); idle_w assumes the paper's idle/max ratio of 1/4, "
             "since idle draw depends on clocks and the serving stack")

#: Relative-model power presets by the names earlier versions used (``--power paper`` and
#: so on); the numbers come from :data:`barrierlb.hardware.ACCELERATOR_PRESETS`.
POWER_PRESETS: dict[str, PowerModel] = {
    name: PowerModel(ACCELERATOR_PRESETS[chip].idle_w, ACCELERATOR_PRESETS[chip].max_w, 0.7, source)
    for name, chip, source in [
        ("paper", "paper", "Chen et al. 2026, evaluation setup (arXiv 2601.17855)"),
        ("a100-sxm", "a100", f"NVIDIA A100 datasheet: 400 W SXM4; {_TDP_NOTE}"),
        ("h100-sxm", "h100", f"NVIDIA H100 datasheet: up to 700 W SXM5; {_TDP_NOTE}"),
        ("h200-sxm", "h200", f"NVIDIA H200 datasheet: up to 700 W SXM; {_TDP_NOTE}"),
        ("b200", "b200", f"NVIDIA DGX B200 / HGX B200: 1000 W per GPU; {_TDP_NOTE}"),
        ("mi300x", "mi300x", f"AMD Instinct MI300X datasheet: 750 W OAM; {_TDP_NOTE}"),
    ]
}


def power_preset(name: str) -> PowerModel:
    """A named relative :class:`PowerModel`; ``ValueError`` lists the names on a miss."""
    return _lookup(POWER_PRESETS, "power preset", name)


def relative_power(accelerator: Accelerator, *, tensor_parallel: int = 1, exponent: float = 0.7) -> PowerModel:
    """The reference code's relative model with a worker of ``tensor_parallel`` accelerators' powers."""
    tensor_parallel = check_int("tensor_parallel", tensor_parallel, minimum=1)
    return PowerModel(accelerator.idle_w * tensor_parallel, accelerator.max_w * tensor_parallel, exponent,
                      f"{tensor_parallel} x {accelerator.name}: {accelerator.source}")


__all__ = ["AbsolutePowerModel", "PAPER_FIXED_OVERHEAD_S", "POWER_PRESETS", "PowerModel",
           "RooflineStepTime", "StepTimeModel", "accelerator_preset", "average_power_w", "power_preset",
           "relative_power", "step_cost"]
