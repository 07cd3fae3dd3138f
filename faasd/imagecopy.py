"""Copy an image from one Docker engine to another by ID: ``docker save | docker load`` over the engine APIs.

What a swarm of several nodes without a registry needs: an image built on one node must be on every
node that may run it, under the same ID (faasd references images by ID, so no node tries a registry).
Used by the Swarm backend at deploy time (``swarm_engines``) and by ``faasd build --node-engine``. The
archive is streamed from ``GET /images/{id}/get`` into ``POST /images/load`` in chunks: nothing is
written to disk on the way, nothing held whole in memory.

Blocking (docker SDK): callers run it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import docker.errors
import requests.exceptions

__all__ = ["CopyFailed", "copy_image"]

LOAD_TIMEOUT_S = 600
"""A copy of a big image over a slow link: the whole load is bounded by this."""
CHUNK_BYTES = 1 << 20


class CopyFailed(Exception):
    """An engine of another node could not be reached or refused the image (the message says which)."""


def copy_image(api: docker.APIClient, *, address: str, image_id: str) -> bool:
    """Have ``image_id`` on the engine at ``address``, streaming it from ``api``'s engine if missing.

    Returns:
        True when it was copied, False when it was there already.

    Raises:
        CopyFailed: the engine at ``address`` failed (unreachable, refused the archive).
    """
    try:
        other = docker.APIClient(base_url=address, version="auto", timeout=LOAD_TIMEOUT_S)
    except docker.errors.DockerException as exc:
        raise CopyFailed(f"Docker engine {address}: {first_line(exc)}") from exc
    try:
        try:
            name = str((other.info() or {}).get("Name") or address)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise CopyFailed(f"Docker engine {address} unreachable: {first_line(exc)}") from exc
        try:
            other.inspect_image(image_id)
            return False
        except docker.errors.ImageNotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise CopyFailed(f"node {name} ({address}): {first_line(exc)}") from exc
        try:
            archive: Iterator[bytes] = api.get_image(image_id, chunk_size=CHUNK_BYTES)
            for message in other.load_image(archive) or ():
                if isinstance(message, dict) and message.get("error"):
                    raise CopyFailed(f"node {name} ({address}) refused the image: {message['error']}")
            other.inspect_image(image_id)  # Loaded under the same ID, or the services could not use it.
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise CopyFailed(f"copying the image to node {name} ({address}): {first_line(exc)}") from exc
        return True
    finally:
        other.close()


def first_line(value: object) -> str:
    """The first line of ``str(value)``, or the type's name when that is empty (for one-line reasons)."""
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
