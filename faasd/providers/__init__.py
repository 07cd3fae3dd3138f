"""Backends that run functions: one :class:`Provider` protocol, loaded by name.

Layering: ``types.py`` (wire types, pure) and ``base.py`` (the protocol) are what the rest of faasd
imports; each backend is a package of its own (``local/``, ``swarm/``, ``marathon/``) imported only by
:func:`load_provider`, inside its branch, so the docker SDK or an HTTP client is loaded only by the
daemon that uses that backend. ``common/`` holds what the backends share (the log book, the replica
health probe); nothing outside ``providers/`` imports a backend's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faasd.errors import InvalidRequest
from faasd.providers.base import Provider as Provider
from faasd.providers.base import ProviderInfo as ProviderInfo
from faasd.providers.base import SecretLookup

if TYPE_CHECKING:
    from faasd.calltoken import CallToken
    from faasd.config import DaemonConfig
    from faasd.registry import EndpointRegistry

__all__ = ["PROVIDER_NAMES", "Provider", "ProviderInfo", "load_provider"]

PROVIDER_NAMES = ("local", "swarm", "marathon")
"""Every backend name :func:`load_provider` knows (``faasd up --provider``)."""


def load_provider(
    name: str,
    *,
    config: DaemonConfig,
    registry: EndpointRegistry,
    secrets: SecretLookup | None = None,
    call_token: CallToken | None = None,
) -> Provider:
    """Build the backend called ``name`` for a daemon with ``config``.

    Every backend gets the daemon's config (and takes the settings it needs), the registry it
    publishes ready endpoints to, ``secrets`` (name -> value, from the daemon's store) and the call
    token its replicas must require (:mod:`faasd.calltoken`; None: replicas check nothing).

    Raises:
        InvalidRequest: an unknown name (the message lists the valid ones), or settings the backend
            cannot use (a Marathon URL or group).
    """
    if name == "local":
        from faasd.providers.local import LocalProvider

        return LocalProvider(
            state_dir=config.state_dir,
            registry=registry,
            secrets=secrets,
            ready_timeout_s=config.ready_timeout_s,
            call_token=call_token,
            sandbox=config.sandbox,
            pool_size=config.pool_size,
            cpu_classes=config.cpu_classes,
        )
    if name == "swarm":
        from faasd.providers.swarm import SwarmProvider

        return SwarmProvider(
            registry=registry,
            secrets=secrets,
            docker_host=config.docker_host,
            network=config.swarm_network,
            route=config.swarm_route,
            pull=config.swarm_pull,
            engines=config.swarm_engines,
            call_token=call_token,
        )
    if name == "marathon":
        from faasd.providers.marathon.client import Auth
        from faasd.providers.marathon.provider import MarathonProvider

        return MarathonProvider(
            url=config.marathon_url,
            registry=registry,
            group=config.marathon_group,
            auth=Auth(config.marathon_user, config.marathon_password, config.marathon_token),
            verify=config.marathon_tls_verify,
            ca_file=config.marathon_ca,
            watchdog_uri=config.marathon_watchdog_uri,
            force=config.marathon_force,
            deploy_timeout_s=config.marathon_deploy_timeout_s,
            call_token=call_token,
        )
    raise InvalidRequest(f"unknown provider {name!r}; valid providers: {', '.join(PROVIDER_NAMES)}")
