"""systemd's readiness protocol (sd_notify) in a few lines: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd considers faasd started only once it sends ``READY=1`` -- after the
gateway accepts connections -- so ``systemctl start faasd`` returns when faasd really answers.
No dependency needed: the protocol is a unix datagram with ``KEY=VALUE`` lines.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not run by systemd or on failure.

    Error handling: never raises -- a daemon must not die because its supervisor went away.
    """
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # '@' = abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
