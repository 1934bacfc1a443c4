"""Task specifications: what a sticky task is and how its work evolves.

A task's *lookahead* is its predicted work in each of the next ``H + 1`` steps,
zero after its predicted end. Three kinds cover the systems barrierlb serves:

- **LLM decode**: work is the resident tokens (prompt plus tokens generated so
  far), growing by one per step until the request ends;
- **constant work**: the same work every step (a mesh block, an expert);
- **profile**: any user-supplied per-step work vector.

Decode and constant tasks are both *affine*: ``work + growth * h`` until
``steps`` have run. Profiles are explicit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from barrierlb._validate import check_array, check_int, check_real


@dataclass(frozen=True)
class Task:
    """A sticky task, described by how much work it will do per step.

    Parameters
    ----------
    task_id : int
        Unique non-negative identifier.
    work : float
        Work in the first step after placement (work units, e.g. tokens).
    growth : float, optional
        Work added per step (1.0 for LLM decode). Default 0.
    steps : float, optional
        Predicted number of steps the task runs; its lookahead is zero from
        then on. ``math.inf`` (default) means no predicted end.
    prompt : float, optional
        Prompt tokens, used by the TensorRT-LLM baseline. Defaults to ``work``.
    profile : array-like of float, optional
        Explicit per-step work from placement on; overrides ``work``,
        ``growth`` and ``steps``.
    """

    task_id: int
    work: float = 0.0
    growth: float = 0.0
    steps: float = math.inf
    prompt: float | None = None
    profile: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_int("task_id", self.task_id, minimum=0)
        if self.profile is not None:
            profile = check_array("profile", self.profile, ndim=1, nonnegative=True).copy()
            profile.setflags(write=False)
            object.__setattr__(self, "profile", profile)
            object.__setattr__(self, "work", float(profile[0]) if profile.size else 0.0)
            object.__setattr__(self, "growth", 0.0)
            object.__setattr__(self, "steps", float(profile.size))
        check_real("work", self.work, minimum=0.0)
        check_real("growth", self.growth)
        steps = check_real("steps", self.steps, minimum=0.0, allow_inf=True)
        object.__setattr__(self, "steps", steps)
        prompt = self.work if self.prompt is None else check_real("prompt", self.prompt, minimum=0.0)
        object.__setattr__(self, "prompt", float(prompt))

    @classmethod
    def decode(cls, task_id: int, prompt_tokens: float, predicted_output_tokens: float = math.inf) -> Task:
        """An LLM decode request: work = prompt + generated tokens, +1 per step."""
        return cls(task_id, work=prompt_tokens, growth=1.0, steps=predicted_output_tokens,
                   prompt=prompt_tokens)

    @classmethod
    def constant(cls, task_id: int, work: float, steps: float = math.inf) -> Task:
        """A task doing the same work every step."""
        return cls(task_id, work=work, growth=0.0, steps=steps)

    @classmethod
    def from_profile(cls, task_id: int, profile) -> Task:
        """A task with an explicit per-step work profile."""
        return cls(task_id, profile=profile)

    def lookahead(self, horizon: int) -> np.ndarray:
        """Predicted work in steps ``0..horizon`` after placement, shape ``(horizon + 1,)``."""
        horizon = check_int("horizon", horizon, minimum=0)
        if self.profile is not None:
            out = np.zeros(horizon + 1)
            n = min(horizon + 1, self.profile.size)
            out[:n] = self.profile[:n]
            return out
        h = np.arange(horizon + 1, dtype=np.float64)
        return np.where(h < self.steps, np.maximum(self.work + self.growth * h, 0.0), 0.0)
