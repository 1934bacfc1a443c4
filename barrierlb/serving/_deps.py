"""The serving extra's dependencies, imported with an error that names the extra."""

try:
    import aiohttp
    from aiohttp import web
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("barrierlb.serving needs aiohttp and prometheus-client: "
                      "pip install 'barrierlb[serve]'") from error

__all__ = ["aiohttp", "web"]
