"""Blocks of a conservative reaction-diffusion model that spawn children and refine.

Each block is an independent periodic grid holding two species, ``u`` and ``v``,
evolving as ``u' = D lap(u) - k u v``, ``v' = D lap(v) + k u v`` (explicit Euler):
the total mass ``sum(u + v) * cell_area`` is conserved exactly up to rounding.
A block's future is fixed by its spec (seeded): at given steps it *refines*
(each cell splits in four, so its cost per step grows fourfold, mass unchanged)
and *spawns* new blocks. The state of a block depends only on its own spec,
never on which rank computes it, so any placement gives the same science.
"""

from __future__ import annotations

import hashlib

import numpy as np

ITERATIONS = 4          # explicit sub-steps per superstep
DIFFUSION = 0.1
RATE = 0.5


def child_id(parent: int, step: int, k: int) -> int:
    """A deterministic 62-bit id for the ``k``-th child ``parent`` spawns at ``step``."""
    digest = hashlib.sha256(f"{parent}:{step}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def make_spec(block_id: int, born: int, seed: int, *, size: int = 64, steps: int = 60) -> dict:
    """A block's full schedule: when it refines and spawns, drawn from its seed."""
    rng = np.random.default_rng(seed)
    refine = sorted(int(born + s) for s in rng.choice(np.arange(2, 30), size=rng.integers(0, 3), replace=False))
    spawns = sorted(int(born + s) for s in rng.choice(np.arange(1, 25), size=rng.integers(0, 3), replace=False))
    return {"id": block_id, "born": born, "seed": seed, "size": size, "refine": refine, "spawn": spawns,
            "steps": steps}


def size_at(spec: dict, step: int) -> int:
    """Grid side of the block at ``step`` (after the refinements up to it)."""
    return spec["size"] * 2 ** sum(1 for s in spec["refine"] if s <= step)


#: Measured microseconds per superstep by grid side (2-core x86 machine, numpy 2.4); the
#: fixed per-block cost of the numpy calls dominates small blocks, cache misses large ones.
STEP_US = {32: 175.0, 64: 214.0, 128: 507.0, 256: 2846.0, 512: 12000.0}


def cost_model(obj, horizon: int) -> np.ndarray:
    """Predicted cost (us) of each of the next ``horizon + 1`` steps, from the refinement schedule."""
    spec = obj if isinstance(obj, dict) else obj.spec
    now = spec["born"] if isinstance(obj, dict) else obj.step + 1
    return np.array([STEP_US[size_at(spec, now + h)] for h in range(horizon + 1)])


class Block:
    """One block's state; lives on the rank it was placed on."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.step = spec["born"] - 1
        rng = np.random.default_rng(spec["seed"] + 1)
        n = spec["size"]
        self.u = rng.uniform(0.5, 1.0, (n, n))
        self.v = rng.uniform(0.0, 0.1, (n, n))
        self.initial_mass = self.mass()

    def mass(self) -> float:
        return float((self.u.sum() + self.v.sum()) / self.u.size)

    def advance(self, step: int) -> list:
        """One superstep; returns ``[(child_id, child_spec), ...]`` for spawned blocks."""
        self.step = step
        if step in self.spec["refine"]:
            # Split every cell in four: same mass, four times the cells.
            self.u = np.repeat(np.repeat(self.u, 2, axis=0), 2, axis=1)
            self.v = np.repeat(np.repeat(self.v, 2, axis=0), 2, axis=1)
        u, v = self.u, self.v
        for _ in range(ITERATIONS):
            lap_u = np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4 * u
            lap_v = np.roll(v, 1, 0) + np.roll(v, -1, 0) + np.roll(v, 1, 1) + np.roll(v, -1, 1) - 4 * v
            reaction = RATE * u * v
            u = u + DIFFUSION * lap_u - reaction
            v = v + DIFFUSION * lap_v + reaction
        self.u, self.v = u, v
        children = []
        for k, when in enumerate(self.spec["spawn"]):
            if when == step and step + 1 < self.spec["steps"]:
                cid = child_id(self.spec["id"], step, k)
                children.append((cid, make_spec(cid, step + 1, seed=cid % (2**31), steps=self.spec["steps"])))
        return children

    def digest_bytes(self) -> bytes:
        return self.u.tobytes() + self.v.tobytes()
