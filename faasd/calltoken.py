"""The call token: replicas accept calls only from their daemon's gateway.

A replica listens where others can reach it: on 127.0.0.1 for the local backend (any local user or
function), on every interface of a Swarm node for a host-mode published port, on the overlay network
for the other containers there. So the daemon makes one random token per state dir
(``<state dir>/call-token``, mode 0600), the gateway adds it to every call it forwards
(:data:`HEADER`), and the watchdog answers any other request 403 -- except its health check
(``/_/health``), which says only ``OK`` or ``Not ready``. The watchdog compares in constant time and
strips the header before the function sees the request: never an ``Http_*`` variable, a header given
to a handler, or a header forwarded to an http-mode server.

How a replica gets the token, never through its environment (a function running as the same user can
read ``/proc/<watchdog pid>/environ``):

* local backend: on an inherited pipe (``call_token_fd=N``), read once at start and closed before any
  function runs; the watchdog then marks itself non-dumpable, so its memory and ``/proc`` files are
  closed to processes of its own uid (its functions);
* Swarm: a Docker secret mounted into the container 0400, root's (``call_token_file=PATH``): the
  watchdog starts as root, reads it, then drops to ``run_as`` (:mod:`faasd.watchdog.privileges`), so
  the function cannot read it either -- unless deployed with ``run_as=root``, the opt-out.

A watchdog started without either (a container entrypoint in someone's own image) checks nothing,
as before; it still strips the header.

Pure and light: imported by the watchdog at start-up (no ``secrets``/``hmac`` imports at module level).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "HEADER",
    "HEADER_LOWER",
    "TOKEN_FILE",
    "CallToken",
    "TokenError",
    "check_token",
    "header_line",
    "load_or_create",
    "read_token_fd",
    "read_token_file",
]

HEADER = "X-Faasd-Call-Token"
HEADER_LOWER = HEADER.lower()
TOKEN_FILE = "call-token"
"""In the state dir, mode 0600."""
MAX_TOKEN_BYTES = 256
MIN_TOKEN_BYTES = 16
_TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~+/="
"""What a token is made of: nothing that needs escaping in a header. With at least
:data:`MIN_TOKEN_BYTES` of them it is long enough to be unguessable. Checked with ``bytes.translate``,
not a regular expression: the watchdog checks its token at start, and ``re`` is not imported there."""


class TokenError(ValueError):
    """A token source that cannot be used (unreadable, empty, not a token); the message says why."""


class CallToken:
    """The daemon's token and the header line the gateway adds to each call.

    One object shared by the gateway and the provider: the Swarm backend may replace the value with
    the one the swarm already uses (:meth:`set`), and the gateway picks it up on the next call.
    """

    __slots__ = ("header_line", "value")

    def __init__(self, value: bytes) -> None:
        self.value = b""
        self.header_line = b""
        self.set(value)

    def set(self, value: bytes) -> None:
        """Use ``value`` from now on.

        Raises:
            TokenError: ``value`` is not a token.
        """
        self.value = check_token(value)
        self.header_line = header_line(self.value)

    def __repr__(self) -> str:  # Never the value: reprs end up in logs.
        return f"<CallToken {len(self.value)} bytes>"


def header_line(value: bytes) -> bytes:
    """The header line (with its leading CRLF) the gateway appends to a call's head to send ``value``."""
    return b"\r\n" + HEADER.encode() + b": " + value


def check_token(value: bytes) -> bytes:
    """``value`` without surrounding whitespace, if it is a usable token.

    Raises:
        TokenError: too short, too long, or with characters a token never has.
    """
    value = value.strip()
    if not MIN_TOKEN_BYTES <= len(value) <= MAX_TOKEN_BYTES or value.translate(None, _TOKEN_BYTES):
        raise TokenError(f"not a call token (16-{MAX_TOKEN_BYTES} characters of [A-Za-z0-9_-.~+/=])")
    return value


def load_or_create(state_dir: str) -> bytes:
    """The token of the daemon using ``state_dir``: read from ``<state_dir>/call-token``, made on first use.

    Raises:
        OSError: the file cannot be read or written, or others may read it (mode with group/other
            bits: the token must be assumed known; the message says how to fix it).
        TokenError: the file holds something that is not a token.
    """
    import secrets

    path = os.path.join(state_dir, TOKEN_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _create(path, secrets.token_urlsafe(32).encode())
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if mode & 0o077:
            raise OSError(
                errno.EPERM,
                f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}): delete it and restart the "
                "daemon to make a new call token",
            )
        data = file.read(MAX_TOKEN_BYTES + 1)
    try:
        return check_token(data)
    except TokenError as exc:
        raise TokenError(f"{path}: {exc}; delete it and restart the daemon to make a new one") from None


def _create(path: str, token: bytes) -> bytes:
    """Write ``token`` to a new file at ``path``, 0600 whatever the umask (another daemon racing on the
    same state dir wins and its token is used)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return load_or_create(os.path.dirname(path))
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token + b"\n")
    finally:
        os.close(fd)
    return token


def read_token_fd(fd: int) -> bytes:
    """Read the token from inherited fd ``fd`` to its end, then close it (whatever happens).

    Raises:
        TokenError: unreadable, or not a token.
    """
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, MAX_TOKEN_BYTES + 1):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_TOKEN_BYTES:
                break
    except OSError as exc:
        raise TokenError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return check_token(b"".join(chunks))


def read_token_file(path: str) -> bytes:
    """Read the token from ``path`` (a mounted Docker secret).

    Raises:
        TokenError: unreadable, or not a token.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise TokenError(f"cannot read: {exc.strerror or exc}") from None
    return check_token(data)
