"""Array namespaces: where the array code gets its functions, and the one host boundary.

The array code (the objective, the enumerations, the water-filling) takes its
namespace from :func:`array_namespace` (array-api-compat's), so it runs
unchanged on numpy, CuPy or any array-API library. CuPy is detected only when
the caller's arrays are CuPy arrays; nothing here imports it to find out.

The numpy/CuPy-only fast paths live here, by name:

- :func:`add_rows_to_columns`: ``numpy.add.at`` (CuPy: ``cupyx.scatter_add``)
  where the standard needs a one-hot matrix product.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as _numpy
import numpy as np
from array_api_compat import array_namespace as _compat_namespace
from array_api_compat import device as _device
from array_api_compat import is_cupy_array, is_numpy_array

__all__ = ["add_rows_to_columns", "array_namespace", "device_of", "to_host"]


def array_namespace(*arrays: Any) -> Any:
    """The array-API namespace of the arrays (``None`` entries and Python scalars skipped).

    Examples
    --------
    >>> import numpy as np
    >>> array_namespace(np.zeros(3), None).__name__
    'array_api_compat.numpy'
    """
    arrays = tuple(a for a in arrays if a is not None and not isinstance(a, (int, float, bool)))
    if all(type(a) is np.ndarray for a in arrays):       # the common case, without compat's scan
        return _numpy
    return _compat_namespace(*arrays)


def device_of(array: Any) -> Any:
    """The device ``array`` lives on, for creating arrays beside it."""
    return _device(array)


def to_host(array: Any) -> Any:
    """A numpy array (or the Python value itself) on the host for ``array``.

    numpy arrays and Python values pass through; CuPy arrays are copied with
    ``.get()``; other array-API arrays (any device) through DLPack, asking for
    the CPU. This is the solvers' one conversion boundary
    (:class:`barrierlb.problem.StepProblem`).
    """
    if array is None or isinstance(array, (np.ndarray, list, tuple, int, float, bool, np.generic)):
        return array
    if is_cupy_array(array):
        return array.get()
    if hasattr(array, "__dlpack__"):
        return np.from_dlpack(array, device="cpu")   # the producer copies to the host if it must
    return array


def add_rows_to_columns(loads: Any, rows: Any, columns: Any) -> Any:
    """``loads`` (H + 1, G) plus ``rows[k]`` added to column ``columns[k]`` for every k; a new array.

    ``rows`` has shape (K, H + 1) and ``columns`` (K,) int64. Repeated columns
    add up. numpy and CuPy scatter in place into a copy; other namespaces
    multiply by a one-hot (K, G) matrix (the same sums, up to the order of
    addition).
    """
    xp = array_namespace(loads, rows)
    out = xp.asarray(loads, copy=True)
    if is_numpy_array(loads):
        np.add.at(out.T, np.asarray(columns), rows)
    elif is_cupy_array(loads):
        import cupyx

        cupyx.scatter_add(out.T, columns, rows)
    elif columns.shape[0]:
        onehot = xp.astype(columns[:, None] == xp.arange(loads.shape[1], device=_device(loads))[None, :], xp.float64)
        out = out + xp.permute_dims(xp.permute_dims(onehot, (1, 0)) @ rows, (1, 0))
    return out
