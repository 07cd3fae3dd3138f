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
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import trio

from faasd.errors import InvalidRequest
from faasd.imagecopy import CopyFailed, copy_image
from faasd.providers.swarm.client import DockerClient

__all__ = ["Engines"]


class Engines:
    """The engines of the swarm's other nodes that deploys copy images to (``swarm_engines``)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = [address.strip() for address in addresses if address.strip()]

    def __bool__(self) -> bool:
        return bool(self.addresses)

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
