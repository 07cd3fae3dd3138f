"""``faasd install-service``: put faasd.pyz and its systemd unit in place, and say what to run next."""

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


def unit_text(pyz_path: str) -> str:
    """The unit shipped as ``systemd/faasd.service``, pointed at ``pyz_path``."""
    from importlib import resources

    template = resources.files("faasd").joinpath("faasd.service").read_text(encoding="utf-8")
    return template.replace("/usr/local/lib/faasd/faasd.pyz", pyz_path)


@click.command("install-service")
@click.option("--root", default="/", show_default=True, help="Install below this directory (for packaging).")
@click.option("--python", default="/usr/bin/python3", show_default=True, help="Interpreter for the unit.")
def install_service(root: str, python: str) -> None:
    """Install this faasd.pyz to /usr/local/lib/faasd and the systemd unit faasd.service."""
    command = self_command()
    if command.zipapp is None:
        raise fail("install-service needs the built zipapp: run it as 'python3 dist/faasd.pyz install-service'")
    target_dir = os.path.join(root, INSTALL_DIR.lstrip("/"))
    unit_dir = os.path.join(root, "etc/systemd/system")
    try:
        os.makedirs(target_dir, exist_ok=True)
        os.makedirs(unit_dir, exist_ok=True)
        pyz = os.path.join(target_dir, "faasd.pyz")
        shutil.copyfile(command.zipapp, pyz + ".new")
        os.chmod(pyz + ".new", 0o755)
        os.replace(pyz + ".new", pyz)
        text = unit_text(os.path.join(INSTALL_DIR, "faasd.pyz")).replace("/usr/bin/python3", python)
        if _group_exists("docker"):
            text = text.replace("#SupplementaryGroups=docker", "SupplementaryGroups=docker")
        with open(os.path.join(unit_dir, UNIT_NAME), "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise fail(f"cannot install: {exc.strerror}: {exc.filename} (run as root)") from None
    click.echo(f"Installed {pyz} and {os.path.join(unit_dir, UNIT_NAME)}")
    click.echo("Next: systemctl daemon-reload && systemctl enable --now faasd && faasd status")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
