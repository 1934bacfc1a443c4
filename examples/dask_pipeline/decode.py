"""A real decode-like workload for Dask workers: numpy work proportional to each request's load.

A request with prompt ``p`` and output ``o`` tokens runs ``o`` supersteps; in
step ``k`` of its life it sums ``(p + k) * WORK_PER_TOKEN`` floats, the way a
decode step's attention reads the whole KV cache, which grows by one token per
step. The buffer it reads is allocated once per worker process.
"""

from __future__ import annotations

import numpy as np

WORK_PER_TOKEN = 256
_BUFFERS: dict[int, np.ndarray] = {}


def _buffer(size: int) -> np.ndarray:
    have = _BUFFERS.get(0)
    if have is None or have.size < size:
        have = _BUFFERS[0] = np.ones(max(size, 1 << 20))
    return have


class Request:
    """State of one running request (lives on one worker)."""

    def __init__(self, spec: dict):
        self.id = spec["id"]
        self.prompt = int(spec["prompt"])
        self.output = int(spec["output"])
        self.generated = int(spec.get("generated", 0))
        self.checksum = float(spec.get("checksum", 0.0))
        self.workers: list[str] = list(spec.get("workers", []))

    def spec(self) -> dict:
        """A checkpoint to rebuild this request from."""
        return {"id": self.id, "prompt": self.prompt, "output": self.output, "generated": self.generated,
                "checksum": self.checksum, "workers": list(self.workers)}


def create(spec: dict) -> Request:
    return Request(spec)


def step(request: Request, step_index: int):
    from distributed import get_worker

    from barrierlb.backends.dask import Done

    load = request.prompt + request.generated
    buf = _buffer(load * WORK_PER_TOKEN)
    request.checksum += float(buf[: load * WORK_PER_TOKEN].sum()) / WORK_PER_TOKEN
    address = get_worker().address
    if not request.workers or request.workers[-1] != address:
        request.workers.append(address)
    request.generated += 1
    if request.generated >= request.output:
        return Done({"id": request.id, "tokens": request.generated, "checksum": request.checksum,
                     "workers": request.workers})
    return None


def cost(obj, horizon: int) -> np.ndarray:
    """Predicted work (tokens read) of the next ``horizon + 1`` steps: the load grows by one a step.

    Uses what a router knows: the prompt and the tokens generated so far, not the
    output length (no oracle), so the request is assumed to keep running.
    """
    load = obj["prompt"] + obj.get("generated", 0) if isinstance(obj, dict) else obj.prompt + obj.generated
    return load + np.arange(horizon + 1, dtype=np.float64)


def checkpoint(request: Request) -> dict:
    return request.spec()


def expected_checksum(prompt: int, output: int) -> float:
    """What a request's checksum must be after all its steps (the buffer holds ones)."""
    return float(sum(prompt + k for k in range(output)))
