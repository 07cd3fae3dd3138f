"""The gateway: OpenFaaS-compatible HTTP API on hypercorn's HTTP/1.1 protocol (with faasd's own connection
layer, :mod:`faasd.gateway.server`), invoke fast path + Quart management API."""

from __future__ import annotations

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
