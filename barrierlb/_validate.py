"""Argument checks that raise errors naming the argument and the bad value.

Nothing is converted silently: a float where an integer is wanted (``1.5``,
``0.7``), an integer outside int64, or a value that is neither true nor false
where a flag is wanted is an error, never a truncation.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

#: Largest value an int64 id, count or slot index may take.
INT64_MAX = int(np.iinfo(np.int64).max)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = INT64_MAX) -> int:
    """Return ``value`` as an int, or raise naming ``name``."""
    if type(value) is int and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return value                 # a plain int in range: no ABC check (a request's ids and counts)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
               allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise naming ``name``."""
    if (type(value) is float and (value - value == 0.0 or (allow_inf and value == value))
            and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)):
        return value                 # a plain float in range (finite unless allow_inf): no ABC check
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


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool: a bool, 0 or 1, or one of true/false/1/0/yes/no/on/off."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Integral) and int(value) in (0, 1)):
        return bool(value)
    if isinstance(value, str) and parse_bool(value) is not None:
        return bool(parse_bool(value))
    raise ValueError(f"{name} must be true or false (or 1/0, yes/no, on/off), got {value!r}")


def check_callable(name: str, value: Any, usage: str, *, optional: bool = False) -> Any:
    """Return ``value`` if it is callable (or ``None`` and ``optional``), else ``TypeError`` showing ``usage``."""
    if callable(value) or (optional and value is None):
        return value
    raise TypeError(f"{name} must be callable: {usage}, got {value!r}")


def parse_bool(text: str) -> bool | None:
    """``True``/``False`` for the words :func:`check_bool` accepts, else ``None``."""
    lowered = text.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def check_array(name: str, value: Any, *, ndim: int | None = None, shape: tuple | None = None,
                nonnegative: bool = False, allow_inf: bool = False, dtype: Any = np.float64) -> np.ndarray:
    """Return ``value`` as a numpy array of ``dtype``, checking shape and values.

    ``shape`` entries that are ``None`` match any length. An integer ``dtype``
    takes only integral values within its range (``1.5`` is an error, not 1);
    a bool ``dtype`` takes bools or 0/1.
    """
    target = np.dtype(dtype)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"{name} must be numeric array-like, got {type(value).__name__}: {error}") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    if shape is not None:
        if array.ndim != len(shape) or any(want is not None and want != got
                                           for want, got in zip(shape, array.shape)):
            wanted = tuple("*" if want is None else want for want in shape)
            raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    array = _convert(name, array, target)
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


def _convert(name: str, array: np.ndarray, target: np.dtype) -> np.ndarray:
    """``array`` as ``target``, refusing every conversion that would change a value."""
    kind = array.dtype.kind
    if array.dtype == target:
        return array
    if kind not in "biuf" and not (kind == "O" and target.kind in "iu"):
        raise TypeError(f"{name} must be numeric, got an array of {array.dtype}")
    if target.kind == "b":
        if kind != "b" and array.size and not np.isin(array, (0, 1)).all():
            bad = array[~np.isin(array, (0, 1))].flat[0].item()
            raise ValueError(f"{name} must hold true/false (or 0/1), got {bad!r}")
        return array.astype(bool)
    if target.kind in "iu":
        if kind == "b":
            raise TypeError(f"{name} must hold integers, got booleans")
        if kind == "f" and array.size:
            whole = np.isfinite(array) & (array == np.floor(array))
            if not whole.all():
                raise ValueError(f"{name} must hold integers, got {array[~whole].flat[0].item()!r}")
        info = np.iinfo(target)
        if array.size and kind in "ufO":
            if kind == "O":
                values = array.ravel().tolist()
                if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values):
                    bad = next(v for v in values if not isinstance(v, Integral) or isinstance(v, bool))
                    raise TypeError(f"{name} must hold integers, got {bad!r}")
                low, high = min(values), max(values)
            else:
                low, high = array.min(), array.max()
            # A float compares with info.max rounded to a float: 2.0**63 > int64's max is false.
            # Against info.max + 1, exact as a float for every integer dtype, it is not.
            over = high >= float(info.max // 2 + 1) * 2 if kind == "f" else high > info.max
            if low < info.min or over:
                bad = high if over else low
                raise ValueError(f"{name} must fit in {target} (at most {info.max}), got {bad}")
        return array.astype(target)
    # A float target takes integers and floats; booleans are flags, not amounts.
    if kind == "b":
        raise TypeError(f"{name} must be numeric, got booleans")
    return array.astype(target)


def broadcast(name: str, value: Any, n: int) -> Any:
    """``value`` broadcast to length ``n``, or a ``ValueError`` naming ``name`` and both shapes."""
    try:
        return np.broadcast_to(value, (n,))
    except ValueError:
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got shape {np.shape(value)}") from None
