"""What a task runs: the app's ``cmd`` as Mesos runs it, or -- for a container image -- faasd's watchdog.

No Docker runs images here, and nothing can read an image's entrypoint or environment, so the emulator
runs a command in its place and says so:

* **``cmd``** (any app): ``/bin/sh -c <cmd>``, as Mesos wraps ``cmd`` (app.raml, ``cmd``), in the task's
  sandbox with the documented environment (``$PORT0``, ``$PORT``, ``$HOST``...). For a Docker app,
  Marathon hands ``cmd`` to the container as its shell command too, so the image does not matter.
* **``args`` without a container**: executed directly, ``args[0]`` looked up on ``PATH``.
* **A Docker (or Mesos-containerizer) image without ``cmd``**: the image's entrypoint would run. Every
  image is taken to be a faasd function image, whose entrypoint is the watchdog, so the task runs
  ``<python> <faasd.pyz> watchdog`` with ``args`` (if any) after it. What such an image carries in its own
  ``ENV`` (``fprocess``, ``mode``, ``handler``...) cannot be read here: it must be in the app's ``env``
  -- as faasd's backends set it anyway (the Swarm backend puts ``fprocess`` in the service's
  environment). Files an image would contain (a ``handler.py``) must be in the sandbox, by ``fetch``
  (fetched artifacts land in the sandbox, the task's working directory) or by absolute host paths.
  The image name itself is only reported (``MARATHON_APP_DOCKER_IMAGE``).

**Container ports.** A container listens on its ``containerPort`` in a network namespace of its own, and
Docker forwards the mapped ``hostPort``. Here the process shares the host's network, so for the
watchdog the emulator sets its listen port (env ``port``, default 8080) to the **host port** mapped to
that container port, and its metrics port (``metrics_port``, default 8081) likewise; a container port
with no mapping (unreachable from outside, as in Docker) gets a free port nobody is told about. The
watchdog binds the agent's address (``$HOST``, env ``bind``) unless the app's env says otherwise. With host networking
there is nothing to translate: the container's ports are the host's (``$PORT0``), as on a Mesos agent.

Each container has its own ``/tmp``; here each task has its sandbox, set as ``TMPDIR`` (the watchdog's
lock file goes there).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.marathon_emulator.appdef import is_bridge

__all__ = ["Runtime", "command_for", "free_port"]

WATCHDOG_PORT = 8080
WATCHDOG_METRICS_PORT = 8081
"""The watchdog's defaults for ``port`` and ``metrics_port`` (docs/watchdog.md)."""


@dataclass(frozen=True)
class Runtime:
    """How to run the watchdog of a faasd image here."""

    python: str
    pyz: Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _image(app: dict[str, Any]) -> str | None:
    return ((app.get("container") or {}).get("docker") or {}).get("image")


def _container_port_to_host(
    app: dict[str, Any], host_ports: list[int], allocate: Callable[[], int]
) -> Callable[[int], int]:
    mappings = app["container"]["portMappings"]

    def host_port(container_port: int) -> int:
        for index, mapping in enumerate(mappings):
            mapped = mapping["containerPort"] or host_ports[index]
            if mapped == container_port and index < len(host_ports):
                return host_ports[index]
        return allocate()

    return host_port


def command_for(
    app: dict[str, Any],
    env: dict[str, str],
    host_ports: list[int],
    runtime: Runtime,
    allocate: Callable[[], int] = free_port,
) -> tuple[list[str], dict[str, str]]:
    """The argv a task of ``app`` runs and its environment (``env`` with the container translations).

    Args:
        app: the canonical app definition.
        env: the task's documented environment (:func:`tasks.task_env`).
        host_ports: the task's host ports, in port order.
        runtime: the interpreter and zipapp for the watchdog.
        allocate: gives a free port for a container port without a mapping.
    """
    if app.get("cmd"):
        return ["/bin/sh", "-c", app["cmd"]], env
    if _image(app) is None:
        return list(app["args"]), env
    env = dict(env)
    if is_bridge(app):
        to_host = _container_port_to_host(app, host_ports, allocate)
        for name, default in (("port", WATCHDOG_PORT), ("metrics_port", WATCHDOG_METRICS_PORT)):
            value = env.get(name, "").strip() or str(default)
            if value.isdigit() and int(value) != 0:  # Anything else: the watchdog refuses it, as it would.
                env[name] = str(to_host(int(value)))
    env.setdefault("bind", env.get("HOST", "127.0.0.1"))
    return [runtime.python, str(runtime.pyz), "watchdog", *app.get("args", [])], env
