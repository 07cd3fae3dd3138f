"""The ``faasd.spec`` label: the parts of a spec a backend's own objects cannot hold as the user wrote them.

Swarm services and Marathon apps keep resources in their own units (nano-CPUs, MiB) and drop what they have
no field for; so both backends store a small JSON "hint" in this label when writing, and read it back to
report the spec exactly as deployed. The reader is forgiving: a label edited by hand, or missing, is an
empty hint, and the backend reports what its own object says instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["LABEL_SPEC", "read_hint", "write_hint"]

LABEL_SPEC = "faasd.spec"


def write_hint(hint: Mapping[str, Any]) -> str:
    """The label's value: compact, key-sorted JSON (the same hint always reads the same)."""
    return json.dumps(hint, sort_keys=True, separators=(",", ":"))


def read_hint(text: str | None) -> dict[str, Any]:
    """The hint in a label value; ``{}`` when absent, not JSON, or not an object."""
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}
