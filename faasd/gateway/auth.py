"""HTTP basic auth for ``/system/*`` (credentials: :mod:`faasd.credentials`).

As in OpenFaaS, ``/function/*``, ``/healthz`` and ``/metrics`` stay public. Comparisons are
constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

__all__ = ["BasicAuth"]


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
