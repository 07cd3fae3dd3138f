"""The snippet's driver: the python-mode handler that runs one Flock-of-Birds snippet in its replica.

Not imported by the daemon: its source is copied into every snippet's function as ``handler.py``, beside
the snippet as ``snippet.py`` (:mod:`faasd.fob.spec`), and the python-mode worker imports it there
(``mode=python``, docs/watchdog.md). So it stands alone: standard library only, nothing from faasd -- a
replica on another host may run another faasd version, and the copy keeps working.

Loaded by a worker (as the module ``handler``) it imports the snippet at once, so a snippet whose top
level fails, or whose ``callme`` is not callable, stops the worker at start-up with the error (the
function then fails to start, and ``POST /api/gen`` answers 400 saying why).

``handle(event, context)`` calls ``callme(**kwargs)`` with the request's query arguments (the gateway
turns ``/api/call/{id}?a:1,b:2`` into ``?a=1&b=2``; every value is a string, as in the seed) and
answers JSON (one document and a newline):

===================================================  ======  ==========================================
case                                                 status  body
===================================================  ======  ==========================================
``callme`` returned a JSON-serialisable value        200     ``{"result": value}``
the arguments do not fit ``callme``'s signature      400     ``{"error"}`` naming the mismatch
``callme`` raised                                    500     ``{"error", "type", "message"}``; the
                                                             traceback goes to the function's log only
the result is not JSON-serialisable                  500     ``{"error"}`` saying so, ``"type"``
``callme`` ran past ``snippet_timeout``              408     ``{"error"}``; the call is interrupted by
                                                             ``SIGALRM`` (the watchdog's ``exec_timeout``,
                                                             a second later, kills what ignores it)
===================================================  ======  ==========================================
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["SnippetTimeout", "load_callme", "make_handle"]

SNIPPET_FILE = "snippet.py"
TIMEOUT_VARIABLE = "snippet_timeout"
"""Environment variable (the function's ``envVars``): seconds a call may run, e.g. ``10``."""
MAX_MESSAGE_CHARS = 1000
"""An exception message longer than this is cut (an answer says why, it does not carry data)."""
_JSON = {"Content-Type": "application/json"}


class SnippetTimeout(BaseException):
    """Raised inside ``callme`` when its time is up (a BaseException: ``except Exception`` in the
    snippet does not swallow it)."""


def load_callme(path: str) -> Callable[..., Any]:
    """Import the snippet at ``path`` as the module ``fobfun`` (the seed's name) and return its ``callme``.

    Raises:
        whatever the snippet's top level raises; TypeError when ``callme`` is missing or not callable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # The snippet may import a module of its own beside it.
    spec = importlib.util.spec_from_file_location("fobfun", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fobfun"] = module
    spec.loader.exec_module(module)
    callme = getattr(module, "callme", None)
    if not callable(callme):
        raise TypeError(f"the snippet's callme is not a function (it is {type(callme).__name__})")
    return callme


def make_handle(callme: Callable[..., Any], timeout_s: float) -> Callable[[Any, Any], dict[str, Any]]:
    """The python-mode ``handle(event, context)`` calling ``callme`` (see the module docstring)."""
    try:
        signature: inspect.Signature | None = inspect.signature(callme)
    except (TypeError, ValueError):  # A builtin without a signature: let the call itself say.
        signature = None

    def handle(event: Any, context: Any) -> dict[str, Any]:
        kwargs = dict(event.query)
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                return _answer(400, {"error": f"the arguments do not fit callme{signature}: {exc}"})
        try:
            result = _call(callme, kwargs, timeout_s)
        except SnippetTimeout:
            return _answer(408, {"error": f"the snippet did not finish within {timeout_s:g}s", "type": "Timeout"})
        except MemoryError:
            raise  # The worker answers 500 and is replaced: its heap may be in any state.
        except BaseException as exc:  # The snippet's own failure, SystemExit included: its answer.
            traceback.print_exc()
            kind = type(exc).__name__
            message = _message(exc)
            return _answer(500, {"error": f"{kind}: {message}" if message else kind, "type": kind, "message": message})
        try:
            body = json.dumps({"result": result}, allow_nan=False) + "\n"
        except Exception as exc:  # TypeError, ValueError (NaN, a cycle, a huge int), RecursionError, ...
            reason = _message(exc)
            return _answer(
                500,
                {
                    "error": f"the result of callme is not JSON-serialisable: {reason}",
                    "type": type(exc).__name__,
                },
            )
        return {"statusCode": 200, "body": body, "headers": _JSON}

    return handle


def _call(callme: Callable[..., Any], kwargs: dict[str, str], timeout_s: float) -> Any:
    """``callme(**kwargs)``, interrupted by :class:`SnippetTimeout` after ``timeout_s`` (0: never)."""
    if timeout_s <= 0:
        return callme(**kwargs)

    def time_is_up(signum: int, frame: object) -> None:
        raise SnippetTimeout

    previous = signal.signal(signal.SIGALRM, time_is_up)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return callme(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # An exception whose __str__ fails still gets an answer.
        text = "(the exception's message cannot be shown)"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _answer(status: int, document: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "body": json.dumps(document) + "\n", "headers": _JSON}


def _timeout_from_env() -> float:
    try:
        return max(0.0, float(os.environ.get(TIMEOUT_VARIABLE, "0") or 0))
    except ValueError:
        return 0.0


if __name__ == "handler":  # Imported by a python-mode worker as the function's handler.py.
    handle = make_handle(
        load_callme(os.path.join(os.path.dirname(os.path.abspath(__file__)), SNIPPET_FILE)), _timeout_from_env()
    )
