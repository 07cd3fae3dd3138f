"""``faasd build-base`` and ``faasd build DIR``: images for the Swarm backend, without any registry.

Both talk to dockerd directly (``--docker-host``, else ``$DOCKER_HOST``, else the local socket) and
print the image ID on stdout -- deploy by that ID, or by the tag (faasd resolves it on the engine).
``--node-engine`` (repeated; default ``$FAASD_SWARM_ENGINES``, the daemon's ``swarm_engines``) copies the
image to the engines of a swarm's other nodes too (:mod:`faasd.imagecopy`), by ID: what
a deploy would do, done ahead of it.
The docker SDK and the build code are imported only when one of these commands runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from faasd.cli.common import fail
from faasd.errors import FaasdError

if TYPE_CHECKING:
    import docker

__all__ = ["build", "build_base"]

_DOCKER_HOST = click.option(
    "--docker-host", default="", help="dockerd address [env FAASD_DOCKER_HOST or DOCKER_HOST; default local socket]."
)


_NODE_ENGINES = click.option(
    "--node-engine",
    "node_engines",
    multiple=True,
    help="Docker engine of another swarm node to copy the image to (repeat) [env FAASD_SWARM_ENGINES].",
)


def _copy_to_nodes(client: docker.DockerClient, image_id: str, engines: tuple[str, ...]) -> None:
    """Copy ``image_id`` to each engine (``--node-engine``, else ``$FAASD_SWARM_ENGINES``)."""
    from faasd.imagecopy import CopyFailed, copy_image

    if not engines:
        engines = tuple(e.strip() for e in os.environ.get("FAASD_SWARM_ENGINES", "").split(",") if e.strip())
    for address in engines:
        try:
            copied = copy_image(client.api, address=address, image_id=image_id)
        except CopyFailed as exc:
            raise fail(f"image {image_id[:19]} built, but not copied: {exc}") from None
        click.echo(f"{address}: {'copied' if copied else 'already there'}", err=True)


def _client(docker_host: str) -> docker.DockerClient:
    from faasd.images import docker_client

    try:
        return docker_client(docker_host or os.environ.get("FAASD_DOCKER_HOST", ""))
    except FaasdError as exc:
        raise fail(exc.message) from None


@click.command("build-base")
@click.option("--tag", default="faasd/watchdog:latest", show_default=True, help="Name of the image.")
@click.option("--pyz", type=click.Path(dir_okay=False, exists=True), help="Zipapp to put inside [default: this one].")
@click.option("--force", is_flag=True, help="Rebuild even when the image already holds this zipapp.")
@_DOCKER_HOST
@_NODE_ENGINES
def build_base(tag: str, pyz: str | None, force: bool, docker_host: str, node_engines: tuple[str, ...]) -> None:
    """Build the base image (Python 3, busybox, faasd.pyz as the watchdog entrypoint).

    Copies the host's Debian python3.11, its stdlib and libraries and a static busybox into a scratch
    image (needs 'apt-get install busybox-static'); no registry, no network. Prints the image ID.
    """
    from faasd.images import BaseImageSources, build_base, running_zipapp

    zipapp = pyz or running_zipapp()
    if zipapp is None:
        raise fail("not running from faasd.pyz: run 'python3 dist/faasd.pyz build-base', or pass --pyz")
    client = _client(docker_host)
    try:
        image_id = build_base(client, BaseImageSources(pyz=os.path.abspath(zipapp)), tag=tag, force=force)
        _copy_to_nodes(client, image_id, node_engines)
    except FaasdError as exc:
        raise fail(exc.message) from None
    finally:
        client.close()
    click.echo(f"{tag}: {image_id}", err=True)
    click.echo(image_id)


@click.command("build")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--tag", "-t", help="Name of the image [default: faasd/<directory name>:latest].")
@click.option("--base", default="faasd/watchdog:latest", show_default=True, help="Base image (faasd build-base).")
@click.option("--fprocess", help="Default command of the function (env fprocess), e.g. 'python3 handler.py'.")
@_DOCKER_HOST
@_NODE_ENGINES
def build(
    directory: str, tag: str | None, base: str, fprocess: str | None, docker_host: str, node_engines: tuple[str, ...]
) -> None:
    """Build a function image from DIRECTORY: FROM the base image, the directory copied to /home/app.

    No Dockerfile needed (a .dockerignore is honoured). Prints the image ID.
    """
    from faasd.images import build_function, default_tag

    name = tag or default_tag(directory)
    client = _client(docker_host)
    try:
        image_id = build_function(client, directory, tag=name, base=base, fprocess=fprocess)
        _copy_to_nodes(client, image_id, node_engines)
    except FaasdError as exc:
        raise fail(exc.message) from None
    finally:
        client.close()
    click.echo(f"{name}: {image_id}", err=True)
    click.echo(image_id)
