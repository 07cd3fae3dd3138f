"""Does a local function's code exist: the files its command or its python handler name, checked at deploy.

Why: faas-cli never uploads a handler folder -- it builds an image from it -- so a ``lang``/``handler``
function of a stack file deployed with ``faas-cli deploy`` reaches faasd as a command alone
(``python3 index.py``, from the language template). The local backend runs commands in the function's
own directory, which is then empty: every call used to end in a 500 from the replica ("can't open file
'index.py'"). This module finds that at deploy time and says what to do instead, as one line.

What it checks, in the function's directory (after the handler archive, if any, was unpacked):

* a program given by a relative path (``./handler``);
* the script of an interpreter -- the first argument after ``python``/``python3.X``, ``node``, ``sh``,
  ``bash``, ``ruby``, ``perl``, ``php`` ..., when it is a relative path and not an option (a command that
  starts with an option, ``python3 -u x.py``, is not looked into);
* ``mode=python``'s ``handler`` (default ``handler.py``).

Pure apart from ``os.path`` checks; the caller turns the message into a 400.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

__all__ = ["missing_code"]

_INTERPRETER = re.compile(r"(python[0-9.]*|pypy[0-9.]*|node|nodejs|sh|bash|dash|ash|zsh|ruby|perl|php)")
"""Programs whose first argument is a script file (unless it is an option). Not ``deno``/``bun``: their
first argument is a subcommand (``deno run main.ts``)."""

_HOW_TO_UPLOAD = (
    "no code came with this deploy (faas-cli never uploads a handler folder): deploy with "
    "'faasd deploy -f stack.yml', which uploads it, or 'faasd deploy NAME --handler DIR'"
)


def missing_code(argv: Sequence[str], env_vars: Mapping[str, str], workdir: str, *, uploaded: bool) -> str | None:
    """What the function needs from its directory and does not find there, as a one-line reason; None
    when nothing is missing (or nothing can be told).

    Args:
        argv: the command (``envProcess`` split), empty in python mode without one.
        env_vars: the deploy's ``envVars`` (``mode``, ``handler``).
        workdir: the function's directory, filled already.
        uploaded: whether the deploy carried a handler archive (the advice differs).
    """
    where = "is not in the uploaded handler folder" if uploaded else None
    if argv:
        program = argv[0]
        if "/" in program and not os.path.isabs(program) and not os.path.isfile(os.path.join(workdir, program)):
            return _reason(f"envProcess runs {_clip(program)}", where)
        script = _script(argv)
        if script is not None and not os.path.exists(os.path.join(workdir, script)):
            return _reason(f"envProcess {_clip(' '.join(argv))!r} runs {_clip(script)}", where)
    if env_vars.get("mode", "").strip() == "python":
        handler = env_vars.get("handler") or "handler.py"
        if not os.path.isabs(handler) and not os.path.isfile(os.path.join(workdir, handler)):
            return _reason(f"mode=python runs handle() from {_clip(handler)}", where)
    return None


def _script(argv: Sequence[str]) -> str | None:
    """The relative script path an interpreter command runs, or None."""
    if len(argv) < 2 or not _INTERPRETER.fullmatch(os.path.basename(argv[0])):
        return None
    first = argv[1]
    if not first or first.startswith("-") or os.path.isabs(first):
        return None
    return first


def _reason(what: str, where: str | None) -> str:
    if where is not None:
        return f"{what}, which {where}"
    return f"{what}, but {_HOW_TO_UPLOAD}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
