"""The admin credentials: user ``admin``, password from ``FAASD_PASSWORD`` or a file in the state dir.

On first start the daemon generates a strong password into ``<state_dir>/password`` (mode 0600);
``faasd status`` and the CLI read it from there. Kept apart from the gateway so the CLI can use it
without importing the server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

__all__ = ["PASSWORD_FILE", "USERNAME", "load_or_create_password"]

USERNAME = "admin"
PASSWORD_FILE = "password"


def load_or_create_password(state_dir: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    """Return (password, file it came from or None when from ``FAASD_PASSWORD``).

    Resource handling: creates ``<state_dir>/password`` with mode 0600 when it does not exist.
    """
    from_env = env.get("FAASD_PASSWORD")
    if from_env:
        return from_env, None
    path = os.path.join(state_dir, PASSWORD_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            password = file.read().strip()
        if password:
            return password, path
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    os.chmod(path, 0o600)
    return password, path
