"""Argument checks that raise errors naming the argument and the bad value."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
               allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_array(name: str, value, *, ndim: int | None = None, shape: tuple | None = None,
                nonnegative: bool = False, allow_inf: bool = False, dtype=np.float64) -> np.ndarray:
    """Return ``value`` as a numpy array of ``dtype``, checking shape and values.

    ``shape`` entries that are ``None`` match any length.
    """
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be numeric array-like, got {type(value).__name__}: {error}") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    if shape is not None:
        if array.ndim != len(shape) or any(want is not None and want != got
                                           for want, got in zip(shape, array.shape)):
            wanted = tuple("*" if want is None else want for want in shape)
            raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    if array.dtype.kind == "f":
        # One pass in the common (finite) case; the second only to name the problem.
        if allow_inf:
            if np.isnan(array).any():
                raise ValueError(f"{name} contains NaN")
        elif not np.isfinite(array).all():
            if np.isnan(array).any():
                raise ValueError(f"{name} contains NaN")
            raise ValueError(f"{name} contains infinite values")
    if nonnegative and array.size and array.min() < 0:
        bad = array[array < 0].flat[0]
        raise ValueError(f"{name} must be non-negative, got {bad}")
    return array
