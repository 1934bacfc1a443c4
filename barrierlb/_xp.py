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


def to_numpy(array) -> np.ndarray:
    """Copy a numpy or CuPy array to a numpy array on the host."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if get is not None:
        return get()
    return np.asarray(array)
