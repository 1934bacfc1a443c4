"""Shared fixtures: the array backends every kernel test runs on."""

from __future__ import annotations

import numpy as np
import pytest


def _backends():
    backends = [pytest.param(np, id="numpy")]
    try:
        import cupy

        cupy.zeros(1)
        backends.append(pytest.param(cupy, id="cupy", marks=pytest.mark.gpu))
    except (ImportError, RuntimeError):
        backends.append(pytest.param(None, id="cupy", marks=[pytest.mark.gpu, pytest.mark.skip(
            reason="CuPy or a CUDA device is not available")]))
    return backends


@pytest.fixture(params=_backends())
def xp(request):
    """The array namespace a kernel test runs on: numpy, and CuPy where a GPU is present."""
    return request.param
