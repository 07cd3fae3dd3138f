"""``GET /system/functions`` encoded from per-function pieces kept between requests.

Why: the answer is a list of FunctionStatus documents, and with thousands of functions building and encoding
each one per request took the event loop for longer than anything else the daemon does (10,000 functions:
about 0.35 s of ``to_json`` and ``json.dumps`` per listing, while no call could be proxied). Most of a
document never changes between two listings: the function's spec and creation time. So each function's
document is encoded once, without the fields that move (invocation count, replicas, availability, faasd's
state), and kept until its spec is replaced (the service's stored spec is a new object then); a listing
joins the kept pieces with those few fields.

The document is :meth:`~faasd.providers.types.FunctionStatus.to_json`'s, key for key (the moving keys come
last): the static piece is encoded from it, not rebuilt here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from faasd.providers.types import FunctionSpec, FunctionStatus

__all__ = ["FunctionListing"]

MOVING = ("invocationCount", "replicas", "availableReplicas", "faasd")
"""The keys of a FunctionStatus document that change without its spec changing."""

_DEPLOYED = json.dumps({"state": "deployed"})


class FunctionListing:
    """Encodes listings of :class:`FunctionStatus`, keeping each function's static piece between calls.

    Only the functions of the latest listing are kept (a removed function's piece goes with the next one).
    """

    def __init__(self) -> None:
        self._pieces: dict[str, tuple[FunctionSpec, datetime | None, str]] = {}

    def __len__(self) -> int:
        return len(self._pieces)

    def encode(self, statuses: Iterable[FunctionStatus]) -> str:
        """The JSON array of the statuses' documents."""
        kept = self._pieces
        pieces: dict[str, tuple[FunctionSpec, datetime | None, str]] = {}
        parts = []
        for status in statuses:
            piece = kept.get(status.name)
            if piece is None or piece[0] is not status.spec or piece[1] != status.created_at:
                piece = (status.spec, status.created_at, _static(status))
            pieces[status.name] = piece
            faasd = (
                _DEPLOYED if status.state == "deployed" and not status.reason else json.dumps(status.to_json()["faasd"])
            )
            parts.append(
                f'{piece[2]}, "invocationCount": {json.dumps(status.invocation_count)}, '
                f'"replicas": {int(status.replicas)}, "availableReplicas": {int(status.available_replicas)}, '
                f'"faasd": {faasd}}}'
            )
        self._pieces = pieces
        return "[" + ", ".join(parts) + "]"


def _static(status: FunctionStatus) -> str:
    """The document without its moving keys, as JSON without the closing brace."""
    document = status.to_json()
    for key in MOVING:
        document.pop(key, None)
    return json.dumps(document)[:-1]
