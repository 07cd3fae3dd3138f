"""The gateway: OpenFaaS-compatible HTTP API on hypercorn, invoke fast path + Quart management API."""

from __future__ import annotations

from faasd.gateway.app import GatewayApp as GatewayApp
from faasd.gateway.auth import BasicAuth as BasicAuth
from faasd.gateway.invoke import Invoker as Invoker
from faasd.gateway.metrics import GatewayMetrics as GatewayMetrics
from faasd.gateway.proxy import UpstreamPool as UpstreamPool
from faasd.gateway.routes_system import create_management_app as create_management_app

__all__ = [
    "BasicAuth",
    "GatewayApp",
    "GatewayMetrics",
    "Invoker",
    "UpstreamPool",
    "create_management_app",
]
