"""The event loop of ``barrierlb serve`` and the emulator: uvloop when installed, else asyncio's."""

from __future__ import annotations

import asyncio

#: ``--event-loop`` choices: ``auto`` is uvloop when it imports, asyncio's loop otherwise.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def uvloop_module(event_loop: str = "auto"):
    """The uvloop module for ``event_loop`` (None: asyncio's loop); ``uvloop`` without it raises ImportError."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}")
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise ImportError("--event-loop uvloop needs uvloop: pip install 'barrierlb[serve]'") from None
        return None
    return uvloop


def run(main, event_loop: str = "auto"):
    """``asyncio.run(main)`` on the chosen loop (:func:`uvloop_module`)."""
    try:
        uvloop = uvloop_module(event_loop)
    except (ValueError, ImportError):
        main.close()                              # never started: no "never awaited" warning
        raise
    return asyncio.run(main) if uvloop is None else uvloop.run(main)


def name() -> str:
    """The running loop's kind: ``uvloop`` or ``asyncio``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
