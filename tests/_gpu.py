"""What the GPU tests share: CuPy with a usable device, or a skip naming why not."""

import pytest


def cupy_or_skip():
    """Return the ``cupy`` module when it imports and a CUDA device answers; else skip the test."""
    try:
        import cupy

        cupy.zeros(1)
    except (ImportError, RuntimeError):
        pytest.skip("CuPy or a CUDA device is not available")
    return cupy
