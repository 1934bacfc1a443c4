"""Run emulators and proxies on an event loop in a background thread (tests, benchmarks, notebooks).

    with BackgroundLoop() as loop:
        emulator = start_emulator(loop, EmulatorConfig(n_ranks=2))
        proxy = start_proxy(loop, ServeConfig(ranks=emulator.urls, slots=8, port=0))
        ...                     # send requests to proxy.url from this thread
"""

from __future__ import annotations

import asyncio
import threading


class BackgroundLoop:
    """An asyncio loop in a daemon thread; :meth:`run` runs a coroutine there and waits for it.

    Closing (or leaving the ``with`` block) runs every registered cleanup
    (:meth:`on_close`) in reverse order, then stops the loop and joins the thread.
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="barrierlb-serving", daemon=True)
        self._thread.start()
        self._cleanups = []

    def run(self, coro, timeout: float | None = 120.0):
        """Run ``coro`` on the loop and return its result (``TimeoutError`` after ``timeout`` seconds)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_close(self, coro_function) -> None:
        """Await ``coro_function()`` on the loop at :meth:`close`."""
        self._cleanups.append(coro_function)

    def close(self) -> None:
        try:
            while self._cleanups:
                try:
                    self.run(self._cleanups.pop()(), timeout=30)
                except Exception:          # one failed cleanup must not keep the others from running
                    pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_emulator(loop: BackgroundLoop, config):
    """Start an :class:`~barrierlb.serving.emulator.Emulator` on ``loop``, stopped at its close."""
    from barrierlb.serving.emulator import Emulator

    return _start(loop, Emulator, config)


def start_proxy(loop: BackgroundLoop, config):
    """Start a :class:`~barrierlb.serving.proxy.Proxy` on ``loop``, stopped at its close."""
    from barrierlb.serving.proxy import Proxy

    return _start(loop, Proxy, config)


def _start(loop: BackgroundLoop, cls, config):
    async def go():
        server = cls(config)
        await server.start()
        return server

    server = loop.run(go())
    loop.on_close(server.stop)
    return server
