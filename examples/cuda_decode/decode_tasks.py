"""Decode-like tasks for the CUDA backend: a key matrix that grows one row per step, and a mat-vec on it.

A request's sticky state is its key matrix (``prompt + output`` rows of ``dim``
float32, allocated once on its worker) and its query vector. Each step appends
one row (the query, a device-to-device copy) and computes ``keys[:rows] @ query``
(cuBLAS through CuPy's matmul; BLAS through numpy on the host executor), so the
step's work grows by one row a step, as a decode step's attention over its KV
cache does. Nothing here needs CUDA's runtime compiler: the copies are memcpy
calls and the product is cuBLAS.
"""

from __future__ import annotations

import functools

import numpy as np


class DecodeTask:
    """One request's device arrays and progress."""

    __slots__ = ("keys", "query", "out", "rows", "output", "generated")

    def __init__(self, keys, query, rows: int, output: int):
        self.keys, self.query, self.out = keys, query, None
        self.rows, self.output, self.generated = rows, output, 0


@functools.lru_cache(maxsize=4)
def _host_block(rows: int, dim: int) -> np.ndarray:
    """One random host block that every request's prompt rows are copied from (read-only)."""
    block = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
    block.setflags(write=False)
    return block


def _upload(xp, target, host: np.ndarray) -> None:
    """Copy host rows into the (contiguous) device view ``target``."""
    if xp is np:
        target[...] = host
    else:
        target.set(host)                       # cudaMemcpyAsync on the current stream


def _copy(xp, target, source) -> None:
    """Device-to-device copy of a contiguous array into a contiguous view of the same size."""
    if xp is np:
        target[...] = source
    else:
        target.data.copy_from_device_async(source.data, source.nbytes)


def create(spec: dict, xp) -> DecodeTask:
    """Allocate a request's key matrix and query on the current worker and upload its prompt rows."""
    prompt, output, dim = int(spec["prompt"]), int(spec["output"]), int(spec["dim"])
    block = _host_block(int(spec["block_rows"]), dim)
    keys = xp.empty((prompt + output, dim), dtype=xp.float32)
    _upload(xp, keys[:prompt], block[np.arange(prompt) % block.shape[0]])
    query = xp.empty(dim, dtype=xp.float32)
    _upload(xp, query, block[int(spec["id"]) % block.shape[0]])
    return DecodeTask(keys, query, prompt, output)


def step(task: DecodeTask, xp) -> bool:
    """One decode step: append a row, multiply; ``True`` when the request has produced its output."""
    _copy(xp, task.keys[task.rows], task.query)
    task.rows += 1
    task.out = task.keys[: task.rows] @ task.query
    task.generated += 1
    return task.generated >= task.output


def cost(spec: dict) -> tuple[float, float, float]:
    """Ledger cost in key rows: the prompt's rows now, one more a step, for ``output`` steps (known lengths)."""
    return float(spec["prompt"]), 1.0, float(spec["output"])
