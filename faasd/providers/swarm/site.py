"""Where the Swarm backend's functions are, seen from this daemon: their network, their rule, the route.

Shared by the provider (deploys attach to the network and publish for the route; only functions may
be inspected, scaled or removed) and the discovery (reads find functions by the rule, and addresses
by the route). :meth:`Site.locate` decides the route and the rule from where the daemon runs
(:mod:`.placement`) on every connection to dockerd.
"""

from __future__ import annotations

import dataclasses
import logging

import docker
import trio

from faasd.errors import InvalidRequest
from faasd.logs import event
from faasd.providers.swarm.client import DockerClient
from faasd.providers.swarm.placement import Placement, locate, network_ids
from faasd.providers.swarm.spec import ROUTE_SETTINGS, FunctionRule

__all__ = ["Site"]

log = logging.getLogger("faasd.providers.swarm")


class Site:
    """The functions network, the :class:`FunctionRule` and the route in use.

    Args:
        network: the attachable overlay network functions join; every service attached to it is a
            function too (:class:`FunctionRule`).
        route: ``host-port`` or ``overlay-dns`` (how the daemon reaches tasks), or ``auto``: chosen
            from where the daemon runs when it connects.

    Raises:
        InvalidRequest: an unknown route.
    """

    def __init__(self, network: str, route: str) -> None:
        if route not in ROUTE_SETTINGS:
            raise InvalidRequest(f"swarm_route {route!r}: use one of {', '.join(ROUTE_SETTINGS)}")
        self.network = network
        self.route_setting = route
        self.route = "" if route == "auto" else route
        """The route in use; empty until :meth:`locate` chose it (``auto``)."""
        self.placement: Placement | None = None
        self.rule = FunctionRule(networks=frozenset({network}))
        self._lock = trio.Lock()

    async def locate(self, client: DockerClient) -> str:
        """Find where this daemon runs -- its own container and service, the functions network's ID --
        and choose the route when it is ``auto`` (:mod:`.placement`); return the route.

        Run on every connection to dockerd (a few API calls), and by the first deploy if that comes
        before the first connection; logged when it changes.
        """
        async with self._lock:

            def find(api: docker.APIClient) -> tuple[frozenset[str], Placement]:
                networks = network_ids(api, self.network)
                return networks, locate(api, networks=networks, network_name=self.network)

            networks, placement = await client.call("finding where this daemon runs", find)
            self.rule = FunctionRule(
                networks=networks, exclude=frozenset({placement.service}) if placement.service else frozenset()
            )
            route = placement.route if self.route_setting == "auto" else self.route_setting
            if placement != self.placement or route != self.route:
                warn = placement.warning and self.route_setting == "auto"
                event(
                    log,
                    logging.WARNING if warn else logging.INFO,
                    "swarm route",
                    route=route,
                    swarm_route=self.route_setting,
                    where=placement.reason,
                )
            self.placement = placement
            self.route = route
            return route

    async def current_route(self, client: DockerClient) -> str:
        """The route, located first if no connection has chosen it yet."""
        return self.route or await self.locate(client)

    def add_network(self, network_id: str) -> None:
        """The functions network was (re)made with this ID: services on it are functions too."""
        if network_id not in self.rule.networks:
            self.rule = dataclasses.replace(self.rule, networks=self.rule.networks | {network_id})
