"""Marathon path ids (app ids such as ``/faasd/hello``): the documented syntax, canonical form and task ids.

Pure functions, no I/O. Two layers reject a bad id, as in Marathon 1.5+ (whose JSON reader is generated
from the RAML types and whose validator runs afterwards):

* the **RAML pattern** of ``PathId`` (`stringTypes.raml
  <https://github.com/mesosphere/marathon/blob/master/docs/docs/rest-api/public/api/v2/types/stringTypes.raml>`_):
  ``/``-separated pieces, each empty, ``..`` or dot-separated labels of lowercase letters, digits and
  ``-`` not starting or ending with ``-``. A violation is a JSON reading error (``error.pattern``);
* the **path rules** (`Application basics <https://mesosphere.github.io/marathon/docs/application-basics.html>`_
  and `Application groups <https://mesosphere.github.io/marathon/docs/application-groups.html>`_): once
  made absolute and canonical, every segment must match the segment pattern (so ``/a//b`` fails here),
  the last segment must not be a reserved word (``restart``, ``tasks``, ``versions``, ``.``, ``..``), and
  the root itself is no app. A violation is an "Object is not valid" error on ``/id``.

The pattern is matched piece by piece (split at ``/``), never with the documented nested regular
expression as a whole, so a hostile 100 kB id costs linear time.
"""

from __future__ import annotations

import re

__all__ = [
    "RESERVED",
    "SEGMENT_PATTERN_TEXT",
    "canonical",
    "instance_id",
    "matches_raml_pattern",
    "path_errors",
    "task_prefix",
]

_LABEL = r"(?:[a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])"
_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_SEGMENT = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}|\.|\.\.")

SEGMENT_PATTERN_TEXT = r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$"
"""The segment pattern as Marathon prints it in its "must fully match regular expression" message."""

RESERVED = ("restart", "tasks", "versions", ".", "..")
"""Last segments an app id may not have: they would collide with the sub-resources of ``/v2/apps/{id}``."""


def matches_raml_pattern(text: str) -> bool:
    """True when ``text`` matches the RAML ``PathId`` pattern (pieces: empty, ``..`` or a dotted name)."""
    return all(piece in ("", "..") or _NAME.fullmatch(piece) for piece in text.split("/"))


def _segments(text: str) -> list[str]:
    """Marathon's split: leading and trailing slashes dropped, then every ``/`` separates (``a//b`` has an
    empty middle segment)."""
    stripped = text.strip("/")
    return stripped.split("/") if stripped else []


def canonical(text: str) -> str:
    """The absolute, canonical form of ``text`` relative to the root: ``foo/`` -> ``/foo``,
    ``/a/./b/../c`` -> ``/a/c``. Segments are not validated here (see :func:`path_errors`)."""
    resolved: list[str] = []
    for segment in _segments(text):
        if segment == ".":
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    return "/" + "/".join(resolved)


def path_errors(text: str) -> list[str]:
    """The path-rule violations of the id ``text`` (already canonical or not), as Marathon words them."""
    segments = _segments(canonical(text))
    errors = []
    if any(not _SEGMENT.fullmatch(segment) for segment in segments):
        errors.append(f"must fully match regular expression '{SEGMENT_PATTERN_TEXT}'")
    if segments and segments[-1] in RESERVED:
        errors.append("must not end with any of the following reserved keywords: " + ", ".join(RESERVED))
    if not segments:
        errors.append("Path must contain at least one path element")
    return errors


def task_prefix(app_id: str) -> str:
    """The part of a task id naming its app: the path without its leading ``/``, ``/`` turned into ``_``
    (``/faasd/hello`` -> ``faasd_hello``), as in the documented task ids."""
    return app_id.strip("/").replace("/", "_")


def instance_id(app_id: str, uuid: str) -> str:
    """``<prefix>.instance-<uuid>``: the id of one instance of the app (a task id adds ``._app.<n>``)."""
    return f"{task_prefix(app_id)}.instance-{uuid}"
