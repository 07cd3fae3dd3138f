"""JSON request bodies: parsed only when bounded in size, and refused with one clear line otherwise.

Every JSON body the daemon parses (the management API, an Alexa request on ``POST /``) goes through
:func:`parse_json`. The size is bounded before parsing (``max_json_size``, or ``max_body_size`` for a
deploy, which carries the function's code), so a parse costs milliseconds on the event loop; running it
in a thread would not help, as the C decoder holds the GIL throughout. Nesting deeper than the
interpreter's recursion limit (``[[[[...`` 100,000 deep) is a 400, not a ``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any

from faasd.errors import InvalidRequest, PayloadTooLarge

__all__ = ["parse_json", "too_large"]


def parse_json(data: bytes) -> Any:
    """The document in ``data``.

    Raises:
        InvalidRequest: not JSON (or not UTF-8), or nested too deeply to parse.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidRequest("the body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def too_large(limit: int, setting: str) -> PayloadTooLarge:
    """The error for a body over ``limit`` bytes, naming the setting that raises it."""
    return PayloadTooLarge(f"the body exceeds {setting} ({limit} bytes)")
