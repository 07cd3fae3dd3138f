"""A function's image on every node, without a registry: copied at deploy time through each node's engine.

Swarm runs a task on a node only if the image is there. faasd references images by ID (no registry
pull), so on a swarm of several nodes an image built on the manager is missing on the others unless
it gets there some way:

* ``swarm_engines`` (this module): the Docker engines of the other nodes, e.g.
  ``unix:///run/faasd-node2.sock`` or ``tcp://node2:2375`` (an engine API the daemon may use; protect
  a TCP one with TLS or keep it on a private network). Every deploy and update checks that each engine
  has the image ID and, when one does not, streams ``GET /images/{id}/get`` from the manager's engine
  into ``POST /images/load`` on it (``docker save | docker load``, layers and all, nothing on disk
  here). An engine that cannot be reached, or refuses the image, fails the deploy with a 400 that
  names it: better than a replica stuck on that node.
* ``swarm_pull = true``: images are referenced by name and every node pulls from the registry.
* neither: the image must be loaded on every node by hand; a task that cannot start on a node for
  want of it makes the function's status name that node (:func:`.nodes.rejection`).

Blocking (docker SDK): :func:`faasd.imagecopy.copy_image` (shared with ``faasd build --node-engine``)
runs in a worker thread through :meth:`.client.DockerClient.call`.

The same engines also tell where a new replica on their node answers (:meth:`Engines.client_for`): the
manager's engine knows a task's host-mode port only once Swarm reports it in the task's status, which it
does after the task's first health check passed -- 2 s after the container started (the health check's
interval; Docker 20.10 has no shorter first probe) -- while the node's own engine has the port from the
container's start. Measured on two nodes (``bench/swarm_cold.py``, ``tests/swarm/test_multinode.py``): the
first 200 of a deploy on the other node came 2.35 s after its container started when the port waited for
Swarm's report, 0.07-0.40 s with the port read from the node's engine (73 ms on the manager's node).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence

import docker
import requests
import trio

from faasd.errors import InvalidRequest
from faasd.imagecopy import CopyFailed, copy_image
from faasd.providers.swarm.client import DockerClient

__all__ = ["Engines"]

INSPECT_TIMEOUT_S = 2
"""A node's engine answers a container's inspection within this, or the port waits for Swarm's report."""
MAP_AGAIN_S = 10.0
"""An engine that could not be reached (or is not in the swarm) is asked which node it is again after this."""


class Engines:
    """The engines of the swarm's other nodes (``swarm_engines``): deploys copy images to them, discovery
    reads new replicas' ports from them."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = [address.strip() for address in addresses if address.strip()]
        self._by_node: dict[str, docker.APIClient] = {}
        """Node ID -> a client of its engine, for the engines that said which node they are."""
        self._unmapped = list(self.addresses)
        self._map_again_at = 0.0
        self._lock = threading.Lock()  # Discovery's reads run in worker threads, several at once.

    def __bool__(self) -> bool:
        return bool(self.addresses)

    def client_for(self, node_id: str) -> docker.APIClient | None:
        """The engine of node ``node_id`` among ``swarm_engines``, or None (blocking: the first time, and
        every :data:`MAP_AGAIN_S` while one is not mapped, each unmapped engine is asked which node it is)."""
        with self._lock:
            client = self._by_node.get(node_id)
            if client is None and self._unmapped and time.monotonic() >= self._map_again_at:
                self._map()
                client = self._by_node.get(node_id)
            return client

    def _map(self) -> None:
        still: list[str] = []
        for address in self._unmapped:
            try:
                client = docker.APIClient(base_url=address, version="auto", timeout=INSPECT_TIMEOUT_S)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                still.append(address)
                continue
            try:
                node_id = str(((client.info() or {}).get("Swarm") or {}).get("NodeID") or "")
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                node_id = ""
            if node_id and node_id not in self._by_node:
                self._by_node[node_id] = client
            else:
                client.close()
                if not node_id:
                    still.append(address)
        self._unmapped = still
        self._map_again_at = time.monotonic() + MAP_AGAIN_S

    def close(self) -> None:
        """Close the clients of the nodes' engines (the daemon stops)."""
        with self._lock:
            for client in self._by_node.values():
                client.close()
            self._by_node.clear()
            self._unmapped = list(self.addresses)

    async def distribute(self, client: DockerClient, image_id: str, reference: str) -> list[str]:
        """Have ``image_id`` on every engine (concurrently); the addresses it was copied to.

        Raises:
            InvalidRequest: an engine failed; the message names it and the image.
        """
        copied: list[str] = []
        failures: list[str] = []

        async def one(address: str) -> None:
            call = functools.partial(copy_image, address=address, image_id=image_id)
            try:  # CopyFailed is no Docker error of the manager's engine: it passes map_exceptions as is.
                if await client.call(f"copying image {reference}", call):
                    copied.append(address)
            except CopyFailed as exc:
                failures.append(str(exc))

        async with trio.open_nursery() as nursery:
            for address in self.addresses:
                nursery.start_soon(one, address)
        if failures:
            raise InvalidRequest(
                f"image {reference} is not on every node and could not be copied: {'; '.join(sorted(failures))}"
            )
        return copied
