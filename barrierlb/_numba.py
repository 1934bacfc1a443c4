"""barrierlb's numba-compiled modules, imported on first use.

``import barrierlb`` does not load numba (about half a second): the fast solver's greedy and
local search (:mod:`barrierlb.solvers._compiled`), the router's one-request kernels
(:mod:`barrierlb._router_kernels`) and the lifetime observer's pass
(:mod:`barrierlb._lifetime_kernel`) are imported here when first needed. The kernels compile
once per installation and load from numba's cache afterwards.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def compiled(name: str) -> ModuleType:
    """The compiled module ``barrierlb.<name>`` (e.g. ``"solvers._compiled"``), imported once.

    An install without numba (a dependency of barrierlb) is an ImportError that says so.
    """
    try:
        return importlib.import_module(f"barrierlb.{name}")
    except ImportError as error:
        raise ImportError(f"barrierlb.{name} needs numba, a dependency of barrierlb ({error}); "
                          "pip install numba") from error
