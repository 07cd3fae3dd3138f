"""``faasd install-service``: put faasd.pyz and its systemd unit in place, and say what to run next.

The unit depends on the backend (``--provider``): only ``swarm`` gets the ``docker`` group -- a member
can drive dockerd, which is root on the host, so a local backend's functions must never be near it --
and ``ProtectKernelTunables``/``ProtectKernelLogs``, which the local backend's bubblewrap sandbox cannot
run under, and ``ProtectControlGroups``, which would make read-only the cgroup subtree the local backend
is delegated (``Delegate=yes``, for a cgroup per replica; see the unit's comments).
"""

from __future__ import annotations

import grp
import os
import shutil

import click

from faasd.cli.common import fail
from faasd.runtime import self_command

__all__ = ["UNIT_NAME", "install_service", "unit_text"]

UNIT_NAME = "faasd.service"
INSTALL_DIR = "/usr/local/lib/faasd"
SERVICE_PROVIDERS = ("local", "swarm")

_SWARM_ONLY = (
    "SupplementaryGroups=docker",
    "ProtectKernelTunables=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
)
"""Lines the shipped unit has commented out, enabled for ``--provider swarm``."""
_LOCAL_ONLY = ("Delegate=yes",)
"""Lines of the shipped unit that ``--provider swarm`` comments out (no local replicas, no cgroups)."""


def unit_text(pyz_path: str, *, provider: str = "local", docker_group: bool = False) -> str:
    """The unit shipped as ``systemd/faasd.service``, pointed at ``pyz_path``, for ``provider``.

    Args:
        docker_group: for ``swarm``, add ``SupplementaryGroups=docker`` (when the group exists).
    """
    from importlib import resources

    text = resources.files("faasd").joinpath("faasd.service").read_text(encoding="utf-8")
    text = text.replace("/usr/local/lib/faasd/faasd.pyz", pyz_path)
    if provider == "swarm":
        for line in _SWARM_ONLY:
            if line != "SupplementaryGroups=docker" or docker_group:
                text = text.replace(f"#{line}\n", f"{line}\n")
        for line in _LOCAL_ONLY:
            text = text.replace(f"\n{line}\n", f"\n#{line}\n")
        text = text.replace("Environment=FAASD_BIND=127.0.0.1", "Environment=FAASD_PROVIDER=swarm FAASD_BIND=127.0.0.1")
    return text


@click.command("install-service")
@click.option("--root", default="/", show_default=True, help="Install below this directory (for packaging).")
@click.option("--python", default="/usr/bin/python3", show_default=True, help="Interpreter for the unit.")
@click.option(
    "--provider",
    type=click.Choice(SERVICE_PROVIDERS),
    default="local",
    show_default=True,
    help="Backend the service runs; only swarm gets the docker group.",
)
def install_service(root: str, python: str, provider: str) -> None:
    """Install this faasd.pyz to /usr/local/lib/faasd and the systemd unit faasd.service."""
    command = self_command()
    if command.zipapp is None:
        raise fail("install-service needs the built zipapp: run it as 'python3 dist/faasd.pyz install-service'")
    target_dir = os.path.join(root, INSTALL_DIR.lstrip("/"))
    unit_dir = os.path.join(root, "etc/systemd/system")
    docker_group = provider == "swarm" and _group_exists("docker")
    try:
        os.makedirs(target_dir, exist_ok=True)
        os.makedirs(unit_dir, exist_ok=True)
        pyz = os.path.join(target_dir, "faasd.pyz")
        shutil.copyfile(command.zipapp, pyz + ".new")
        os.chmod(pyz + ".new", 0o755)
        os.replace(pyz + ".new", pyz)
        text = unit_text(os.path.join(INSTALL_DIR, "faasd.pyz"), provider=provider, docker_group=docker_group)
        text = text.replace("/usr/bin/python3", python)
        with open(os.path.join(unit_dir, UNIT_NAME), "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise fail(f"cannot install: {exc.strerror}: {exc.filename} (run as root)") from None
    click.echo(f"Installed {pyz} and {os.path.join(unit_dir, UNIT_NAME)} (provider {provider})")
    if provider == "swarm" and not docker_group:
        click.echo("Note: there is no docker group yet; install Docker, then run install-service again.")
    click.echo("Next: systemctl daemon-reload && systemctl enable --now faasd && faasd status")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
