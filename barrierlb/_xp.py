"""Array-namespace dispatch: one kernel source for numpy and CuPy arrays.

CuPy is detected only when the caller's arrays are CuPy arrays, which requires
``cupy`` to be imported already; this module never imports it to find out.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np


def array_namespace(*arrays) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Parameters
    ----------
    *arrays
        Arrays (or ``None``) passed to a kernel.

    Examples
    --------
    >>> import numpy as np
    >>> array_namespace(np.zeros(3)).__name__
    'numpy'
    """
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        for array in arrays:
            if isinstance(array, cupy.ndarray):
                return cupy
    return np


def to_host(array):
    """A numpy array (or the Python value itself) on the host for ``array``.

    numpy arrays and Python values pass through; CuPy arrays are copied with
    ``.get()``; other array-API arrays (any device) through DLPack after an
    explicit move to the CPU. This is the solvers' one conversion boundary.
    """
    if array is None or isinstance(array, (np.ndarray, list, tuple, int, float, bool, np.generic)):
        return array
    get = getattr(array, "get", None)
    if get is not None and "cupy" in sys.modules and isinstance(array, sys.modules["cupy"].ndarray):
        return get()
    if hasattr(array, "__dlpack__") and hasattr(array, "to_device"):
        return _from_device(array)
    return array


def _from_device(array) -> np.ndarray:
    import array_api_compat

    xp = array_api_compat.array_namespace(array)
    cpu = getattr(xp, "CPU_DEVICE", "cpu")
    return np.from_dlpack(xp.asarray(array, device=cpu) if array.device != cpu else array)
