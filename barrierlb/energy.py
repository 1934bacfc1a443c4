"""Power and step-time models of a barrier-synchronized decode step (DESIGN.md section 4).

Step time is ``c + t_l * max_g L_g / speed_g``; a worker's power while the step
runs is ``P_idle + (P_max - P_idle) * u**exponent`` with ``u = L_g / max L``, so
energy = sum over steps and alive workers of power x step time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from barrierlb._validate import check_int, check_real


@dataclass(frozen=True)
class StepTimeModel:
    """Linear step time ``overhead_s + per_unit_s * max load``.

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


@dataclass(frozen=True)
class PowerModel:
    """Per-worker power ``idle_w + (max_w - idle_w) * utilization**exponent`` (W)."""

    idle_w: float
    max_w: float
    exponent: float = 0.7
    source: str = ""

    def __post_init__(self):
        check_real("idle_w", self.idle_w, minimum=0.0)
        check_real("max_w", self.max_w, minimum=self.idle_w)
        check_real("exponent", self.exponent, minimum=0.0)

    def power_w(self, utilization) -> np.ndarray:
        """Power per worker for utilizations in [0, 1]."""
        u = np.clip(np.asarray(utilization, dtype=np.float64), 0.0, 1.0)
        return self.idle_w + (self.max_w - self.idle_w) * u**self.exponent


_TDP_NOTE = ("max_w is the vendor's board power (TDP); idle_w assumes the paper's idle/max ratio of 1/4, "
             "since idle draw depends on clocks and the serving stack")

#: Power presets. ``paper`` is DESIGN.md's; the accelerator presets take the vendor's
#: maximum board power and the paper's idle ratio (see each ``source``).
POWER_PRESETS: dict[str, PowerModel] = {
    "paper": PowerModel(100.0, 400.0, 0.7, "Chen et al. 2026, evaluation setup (arXiv 2601.17855)"),
    "a100-sxm": PowerModel(100.0, 400.0, 0.7, f"NVIDIA A100 datasheet: 400 W SXM4; {_TDP_NOTE}"),
    "h100-sxm": PowerModel(175.0, 700.0, 0.7, f"NVIDIA H100 datasheet: up to 700 W SXM5; {_TDP_NOTE}"),
    "h200-sxm": PowerModel(175.0, 700.0, 0.7, f"NVIDIA H200 datasheet: up to 700 W SXM; {_TDP_NOTE}"),
    "b200": PowerModel(250.0, 1000.0, 0.7, f"NVIDIA DGX B200 / HGX B200: 1000 W per GPU; {_TDP_NOTE}"),
    "mi300x": PowerModel(187.5, 750.0, 0.7, f"AMD Instinct MI300X datasheet: 750 W OAM; {_TDP_NOTE}"),
}


def power_preset(name: str) -> PowerModel:
    """A named :class:`PowerModel`; ``ValueError`` lists the names on a miss."""
    try:
        return POWER_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown power preset {name!r}; known: {', '.join(POWER_PRESETS)}") from None
