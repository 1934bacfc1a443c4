"""The serving extra's dependencies, imported with an error that names the extra."""

try:
    import aiohttp
    import httptools  # noqa: F401  (barrierlb.serving.upstream)
    from aiohttp import web
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("barrierlb.serving needs aiohttp, httptools and prometheus-client: "
                      "pip install 'barrierlb[serve]'") from error

__all__ = ["aiohttp", "web"]
