"""``barrierlb serve``: an OpenAI-compatible BF-IO router in front of data-parallel engine ranks.

Needs the ``serve`` extra (``pip install 'barrierlb[serve]'``: aiohttp, httptools and
prometheus-client), imported only when a name below is first used.

- :class:`ServeConfig` and :class:`Proxy` (``barrierlb.serving.proxy``): the proxy;
- :class:`Emulator` and :class:`EmulatorConfig` (``barrierlb.serving.emulator``):
  an emulator of a lockstep data-parallel engine to test and benchmark it against.
"""

from barrierlb.serving.config import ServeConfig

_LAZY = {"Proxy": "barrierlb.serving.proxy", "Emulator": "barrierlb.serving.emulator",
         "EmulatorConfig": "barrierlb.serving.emulator"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'barrierlb.serving' has no attribute {name!r}")


__all__ = ["Emulator", "EmulatorConfig", "Proxy", "ServeConfig"]
