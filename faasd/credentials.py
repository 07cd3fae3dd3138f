"""The admin credentials: user ``admin``, password from ``FAASD_PASSWORD`` or a file in the state dir.

On first start the daemon generates a strong password into ``<state_dir>/password`` (mode 0600);
``faasd status`` and the CLI read it from there. Kept apart from the gateway so the CLI can use it
without importing the server.

A password shorter than :data:`MIN_PASSWORD_LENGTH` is refused: the management API is reachable by
anyone who can reach the port, and NIST SP 800-63B asks for at least 15 characters when a password
is the only factor. The generated one has 43.

A password file that other users could read (any group or other permission bit) is refused rather than
used: whoever could read it may already have the password, and fixing the mode silently would hide
that. The message says what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Mapping

from faasd.errors import FaasdError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "PASSWORD_FILE",
    "USERNAME",
    "InsecurePasswordFile",
    "WeakPassword",
    "load_or_create_password",
    "validate_password",
]

USERNAME = "admin"
PASSWORD_FILE = "password"
MIN_PASSWORD_LENGTH = 16


class WeakPassword(FaasdError):
    """The configured password is too short; ``message`` is one line saying which one and what to do.

    A :class:`~faasd.errors.FaasdError`, so ``faasd up`` reports it as its one ``cannot run`` line.
    """


def validate_password(password: str, source: str) -> str:
    """Return ``password`` if it is long enough.

    Raises:
        WeakPassword: naming ``source`` (``FAASD_PASSWORD`` or the file).
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"the admin password from {source} has {len(password)} characters; at least {MIN_PASSWORD_LENGTH} "
            "are required (unset FAASD_PASSWORD and remove the password file to let faasd generate one)"
        )
    return password


class InsecurePasswordFile(PermissionError):
    """The password file is readable or writable by users other than its owner."""


def load_or_create_password(state_dir: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    """Return (password, file it came from or None when from ``FAASD_PASSWORD``).

    Resource handling: creates ``<state_dir>/password`` with mode 0600 (whatever the umask) when it
    does not exist.

    Raises:
        InsecurePasswordFile: the file exists with group or other permissions (its ``strerror`` is the
            one-line message for the user).
    """
    from_env = env.get("FAASD_PASSWORD")
    if from_env:
        return validate_password(from_env, "FAASD_PASSWORD"), None
    path = os.path.join(state_dir, PASSWORD_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd, encoding="utf-8") as file:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                raise InsecurePasswordFile(
                    errno.EPERM,
                    f"password file {path} has mode {mode:04o}: other users may have read it; make it private "
                    f"(chmod 600 {path}) and consider a new password (delete the file to have one generated)",
                )
            password = file.read().strip()
        if password:
            return validate_password(password, path), path
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)  # Before the password is written: an existing empty file may have had any mode.
        file.write(password + "\n")
    return password, path
