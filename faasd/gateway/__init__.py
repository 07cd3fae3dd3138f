"""The gateway: OpenFaaS-compatible HTTP API on hypercorn's HTTP/1.1 protocol (with faasd's own connection
layer, :mod:`faasd.gateway.server`), invoke fast path + Quart management API.

The names below are loaded on first use (PEP 562): importing one part of the gateway -- the daemon's
first stage, :mod:`faasd.gateway.auth` for the Flock-of-Birds routes -- must not import Quart, which only
the management API needs (:mod:`faasd.gateway.lazyapp` loads it once the gateway serves).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faasd.gateway.app import GatewayApp as GatewayApp
    from faasd.gateway.auth import BasicAuth as BasicAuth
    from faasd.gateway.invoke import Invoker as Invoker
    from faasd.gateway.metrics import GatewayMetrics as GatewayMetrics
    from faasd.gateway.proxy import UpstreamPool as UpstreamPool
    from faasd.gateway.routes_system import create_management_app as create_management_app
    from faasd.gateway.server import HttpServer as HttpServer
    from faasd.gateway.server import ServerLimits as ServerLimits
    from faasd.gateway.server import fit_connections as fit_connections

__all__ = [
    "BasicAuth",
    "GatewayApp",
    "GatewayMetrics",
    "HttpServer",
    "Invoker",
    "ServerLimits",
    "UpstreamPool",
    "create_management_app",
    "fit_connections",
]

_WHERE = {
    "BasicAuth": "auth",
    "GatewayApp": "app",
    "GatewayMetrics": "metrics",
    "HttpServer": "server",
    "Invoker": "invoke",
    "ServerLimits": "server",
    "UpstreamPool": "proxy",
    "create_management_app": "routes_system",
    "fit_connections": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
