"""Backends that run functions: one :class:`Provider` protocol, loaded by name.

Layering: ``types.py`` (wire types, pure) and ``base.py`` (the protocol) are what the rest of faasd
imports; each backend lives in its own module (``local.py`` now; ``swarm.py`` and ``marathon.py``
later) and is imported only by :func:`load_provider`, inside its branch, so the docker SDK or an HTTP
client is loaded only by the daemon that uses that backend. Underscored modules (``_archive.py``) are
helpers of the backends, not API.
"""

from __future__ import annotations

from typing import Any

from faasd.errors import InvalidRequest, NotSupported
from faasd.providers.base import Provider as Provider
from faasd.providers.base import ProviderInfo as ProviderInfo

__all__ = ["PROVIDER_NAMES", "Provider", "ProviderInfo", "load_provider"]

PROVIDER_NAMES = ("local", "swarm", "marathon")
"""Every backend name :func:`load_provider` knows (``faasd up --provider``)."""


def load_provider(name: str, **kwargs: Any) -> Provider:
    """Build the backend called ``name`` with its keyword arguments.

    For ``local``: ``state_dir``, ``registry`` and optionally ``secrets``, ``ready_timeout_s``,
    ``stop_grace_s``, ``log_lines`` (see :class:`faasd.providers.local.LocalProvider`).

    Raises:
        NotSupported: a known backend that is not implemented yet (``swarm``, ``marathon``).
        InvalidRequest: an unknown name; the message lists the valid ones.
    """
    if name == "local":
        from faasd.providers.local import LocalProvider

        return LocalProvider(**kwargs)
    if name in ("swarm", "marathon"):
        raise NotSupported(f"the {name} backend is not implemented yet; use provider = local")
    raise InvalidRequest(f"unknown provider {name!r}; valid providers: {', '.join(PROVIDER_NAMES)}")
