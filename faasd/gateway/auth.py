"""HTTP basic auth for ``/system/*``: user ``admin``, password from ``FAASD_PASSWORD`` or a file.

On first start the daemon generates a strong password into ``<state_dir>/password`` (mode 0600);
``faasd status`` and the CLI read it from there. As in OpenFaaS, ``/function/*``, ``/healthz`` and
``/metrics`` stay public. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PASSWORD_FILE", "USERNAME", "BasicAuth", "load_or_create_password"]

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


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str

    def check(self, authorization: str | None) -> bool:
        """True when the ``Authorization`` header carries these credentials."""
        if not authorization:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        user, colon, password = decoded.partition(":")
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(colon) and user_ok and password_ok
