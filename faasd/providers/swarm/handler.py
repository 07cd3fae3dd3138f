"""A function's handler archive on Swarm: a Docker config mounted into its tasks, unpacked by the watchdog.

A handler archive (``faasd deploy --handler DIR``, and every Flock-of-Birds snippet) is the function's
code without an image. The local backend unpacks it into the replica's working directory; a Swarm task
runs on whichever node the scheduler picks, and has only its image. So the archive travels with the
service, as Swarm carries small files to every node:

* the archive is a **Docker config** (replicated by the managers to each node that runs a task, so it
  works across nodes), named ``faasd-handler-<name>-<digest>`` -- configs cannot change, so new content
  is a new config -- and labelled with the function (:data:`LABEL_HANDLER`) and faasd as its owner;
* it is mounted read-only at :data:`ARCHIVE_PATH` and named in the watchdog's ``handler_archive``
  variable: faasd's watchdog (the base image's entrypoint, and that of every image built FROM it)
  unpacks it into the working directory, :data:`HANDLER_DIR` -- where ``faasd build`` puts the same
  files -- with the local backend's safe extractor, before it starts (:mod:`faasd.watchdog.unpack`);
* with ``readOnlyRootFilesystem`` that directory is a tmpfs (of :data:`HANDLER_DIR_TMPFS_BYTES`),
  which Docker mounts ``noexec``: run scripts through their interpreter (``sh handler.sh``,
  ``python3 handler.py``, or python mode), not as ``./handler.sh``;
* Docker keeps a config below 500 KB (:data:`MAX_ARCHIVE_BYTES`): a larger archive is refused before
  anything is created, with the way out (build an image);
* an image given with the archive must run faasd's watchdog (:func:`runs_faasd_watchdog`), which is
  the only thing that unpacks it; without one the service runs faasd's base image.

Reading back: the archive is the config's data (the provider reads and caches it by config ID, which
never changes content), so a service deployed with an archive reports exactly the spec it was given.

Pure: plain data in and out, no Docker client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec

__all__ = [
    "ARCHIVE_ENV",
    "ARCHIVE_PATH",
    "HANDLER_DIR",
    "HANDLER_DIR_TMPFS_BYTES",
    "LABEL_HANDLER",
    "MAX_ARCHIVE_BYTES",
    "HandlerConfig",
    "archive_config_id",
    "check_archive",
    "config_name",
    "mount_archive",
    "referenced_configs",
    "runs_faasd_watchdog",
    "take_archive",
]

ARCHIVE_PATH = "/run/faasd/handler-archive"
"""Where a task finds its archive (beside the call token, apart from the function's own secrets)."""
ARCHIVE_ENV = "handler_archive"
"""The watchdog's variable (:data:`faasd.watchdog.unpack.HANDLER_ARCHIVE_VARIABLE`; not imported: the
backend does not import the watchdog, tests/swarm/test_spec.py checks they agree)."""
HANDLER_DIR = "/home/app"
"""The task's working directory when it has an archive: the base image's, and ``faasd build``'s."""
HANDLER_DIR_TMPFS_BYTES = 64 * 1024 * 1024
"""Size of the tmpfs holding the unpacked archive under a read-only root."""
MAX_ARCHIVE_BYTES = 500 * 1024
"""Docker's documented limit on a config's size (500 KB; Docker 20.10 takes up to 1000 KiB, older
engines less): the largest archive carried as a config."""
LABEL_HANDLER = "faasd.handler"
"""On a handler archive's Docker config: the function it belongs to."""
CONFIG_NAME_MAX = 64
"""Docker's limit on a config's name."""


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    """The Docker config holding a function's archive."""

    docker_id: str
    docker_name: str


def config_name(function: str, archive: bytes) -> str:
    """The Docker config holding ``archive`` for ``function``: ``faasd-handler-<name>-<digest>``.

    The digest covers the name too, so two long names cut to the same prefix never share a config.
    """
    digest = hashlib.sha256(function.encode() + b"\0" + archive).hexdigest()[:12]
    keep = CONFIG_NAME_MAX - len("faasd-handler--") - len(digest)
    return f"faasd-handler-{function[:keep]}-{digest}"


def check_archive(spec: FunctionSpec) -> None:
    """Refuse an archive Swarm cannot carry, before anything is created.

    Raises:
        InvalidRequest: larger than :data:`MAX_ARCHIVE_BYTES`, or ``envVars`` sets the watchdog's
            ``handler_archive`` itself.
    """
    if not spec.handler_archive:
        return
    if len(spec.handler_archive) > MAX_ARCHIVE_BYTES:
        raise InvalidRequest(
            f"handlerArchive is {len(spec.handler_archive)} bytes; the swarm backend carries it as a Docker "
            f"config, at most {MAX_ARCHIVE_BYTES} bytes: build an image from the directory with "
            "'faasd build DIR' and deploy it with --image"
        )
    if ARCHIVE_ENV in spec.env_vars:
        raise InvalidRequest(f"envVars.{ARCHIVE_ENV} is set by faasd when a handlerArchive is given")


def mount_archive(container: dict[str, Any], config: HandlerConfig) -> None:
    """Add the archive to a ContainerSpec: the config's mount, the watchdog's variable, the working
    directory (a tmpfs when the root is read-only)."""
    container.setdefault("Env", []).append(f"{ARCHIVE_ENV}={ARCHIVE_PATH}")
    container["Configs"] = [
        {
            "File": {"Name": ARCHIVE_PATH, "UID": "0", "GID": "0", "Mode": 0o444},
            "ConfigID": config.docker_id,
            "ConfigName": config.docker_name,
        }
    ]
    container["Dir"] = HANDLER_DIR
    if container.get("ReadOnly"):
        container.setdefault("Mounts", []).append(
            {"Type": "tmpfs", "Target": HANDLER_DIR, "TmpfsOptions": {"SizeBytes": HANDLER_DIR_TMPFS_BYTES}}
        )


def archive_config_id(container: Mapping[str, Any] | None) -> str | None:
    """The ID of the config mounted as the archive in a ContainerSpec, or None."""
    for ref in (container or {}).get("Configs") or []:
        if (ref.get("File") or {}).get("Name") == ARCHIVE_PATH and ref.get("ConfigID"):
            return str(ref["ConfigID"])
    return None


def take_archive(container: Mapping[str, Any] | None, env: dict[str, str], archives: Mapping[str, bytes]) -> bytes:
    """The archive a ContainerSpec carries (b"" when none, or when ``archives`` lacks its config);
    faasd's own ``handler_archive`` variable is taken out of ``env``."""
    config_id = archive_config_id(container)
    if config_id is None:
        return b""
    if env.get(ARCHIVE_ENV) == ARCHIVE_PATH:
        del env[ARCHIVE_ENV]
    return archives.get(config_id, b"")


def referenced_configs(services: Sequence[Mapping[str, Any]]) -> set[str]:
    """Config IDs the services use -- in their spec, and in the previous spec a rollback returns to
    (a config removed under it would leave the rollback's tasks without their code)."""
    used: set[str] = set()
    for service in services:
        for key in ("Spec", "PreviousSpec"):
            container = ((service.get(key) or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
            used.update(str(ref["ConfigID"]) for ref in container.get("Configs") or [] if ref.get("ConfigID"))
    return used


def runs_faasd_watchdog(image: Mapping[str, Any]) -> bool:
    """Whether an image (``docker image inspect``) starts faasd's watchdog -- faasd's base image and
    those built FROM it (``ENTRYPOINT ["python3", "/faasd.pyz", "watchdog"]``) -- the only one that
    unpacks a handler archive."""
    config = image.get("Config") or {}
    entrypoint = [str(part) for part in config.get("Entrypoint") or []]
    return bool(entrypoint) and entrypoint[-1] == "watchdog" and any(p.endswith("faasd.pyz") for p in entrypoint)
