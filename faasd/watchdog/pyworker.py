"""A python-mode worker process: imports the handler once, then answers calls one at a time.

Started by the watchdog (``faasd _pyworker HANDLER``) with the request pipe on fd 3 and the answer pipe
on fd 4; its stdout and stderr go to the watchdog's log, so ``print()`` in a handler is safe.

Frames, both ways: ``!II`` (meta length, body length), then the meta as JSON, then the body bytes.
Request meta: ``{"method", "path", "query", "headers": [[name, value], ...]}``.
Answer meta: ``{"status", "headers": [[name, value], ...], "content_type"}`` (+ ``"error"``).
The first frame a worker sends is ``{"ready": true}`` once the handler is imported, or ``{"error": ...}``.

The handler contract (docs/watchdog.md "python mode"):

* ``handle(req)`` -- ``req`` is the body as ``str`` (UTF-8, undecodable bytes replaced), as the OpenFaaS
  ``python3`` template;
* ``handle(event, context)`` -- as the OpenFaaS ``python3-http`` template: ``event.body`` (bytes),
  ``event.headers`` (dict, canonical names), ``event.method``, ``event.path``, ``event.query``
  (dict of first values), ``context.hostname``.

Return values: ``None`` -> 200 empty; ``str`` -> 200 text; ``bytes`` -> 200 as is; ``dict``/``list`` ->
200 JSON -- except a dict with ``statusCode`` (the python3-http form: ``statusCode``, ``body``,
``headers``); a tuple ``(body, status)`` or ``(body, status, headers)``. An exception answers 500 with
``<ExceptionType>: <message>`` and its traceback goes to the log.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from faasd.watchdog.pyreap import Reaper

__all__ = ["Context", "Event", "encode_answer", "main", "read_frame", "write_frame"]

REQUEST_FD = 3
ANSWER_FD = 4
HEADER = struct.Struct("!II")


def write_frame(fd: int, meta: dict[str, Any], body: bytes = b"") -> None:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    data = memoryview(HEADER.pack(len(meta_bytes), len(body)) + meta_bytes + body)
    while data:
        data = data[os.write(fd, data) :]


def read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at end of file (the watchdog closed the pipe: time to exit)."""
    header = read_exactly(fd, HEADER.size)
    if header is None:
        return None
    meta_length, body_length = HEADER.unpack(header)
    meta = read_exactly(fd, meta_length)
    body = read_exactly(fd, body_length) if body_length else b""
    if meta is None or body is None:
        return None
    return json.loads(meta), body


class Event:
    """The request as the OpenFaaS python3-http template presents it."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, meta: dict[str, Any], body: bytes) -> None:
        self.body = body
        self.method: str = meta["method"]
        self.path: str = meta["path"]
        self.headers = {"-".join(p.capitalize() for p in name.split("-")): value for name, value in meta["headers"]}
        query: dict[str, str] = {}
        for key, value in parse_qsl(meta.get("query", ""), keep_blank_values=True):
            query.setdefault(key, value)  # The first of repeated values, as Flask's request.args[key] in the template.
        self.query = query


class Context:
    __slots__ = ("hostname",)

    def __init__(self) -> None:
        self.hostname = socket.gethostname()


def encode_answer(result: object) -> tuple[dict[str, Any], bytes]:
    """Turn what ``handle`` returned into (answer meta, body); see the module docstring."""
    status = 200
    headers: dict[str, str] = {}
    if isinstance(result, tuple) and 2 <= len(result) <= 3:
        parts: tuple[Any, ...] = result
        if len(parts) == 3:
            headers = {str(k): str(v) for k, v in dict(parts[2]).items()}
        result, status = parts[0], int(parts[1])
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result.get("statusCode", 200))
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        result = result.get("body", b"")
    content_type: str | None = None
    if result is None:
        body = b""
    elif isinstance(result, bytes | bytearray):
        body = bytes(result)
    elif isinstance(result, str):
        body = result.encode()
        content_type = "text/plain; charset=utf-8"
    else:
        body = json.dumps(result).encode()
        content_type = "application/json"
    for name in [name for name in headers if name.lower() == "content-type"]:
        content_type = headers.pop(name)
    return {"status": status, "headers": sorted(headers.items()), "content_type": content_type}, body


def load_handler(path: str) -> Callable[..., Any]:
    """Import ``path`` as a module and return its ``handle``."""
    directory = os.path.dirname(os.path.abspath(path))
    for extra in (os.path.join(directory, ".packages"), directory):
        if os.path.isdir(extra) and extra not in sys.path:
            sys.path.insert(0, extra)
    spec = importlib.util.spec_from_file_location("handler", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise AttributeError(f"{path} defines no handle() function")
    return handle


def _limit_memory(limit: int) -> None:
    """Cap the address space at what it is now plus ``limit``: a runaway allocation raises MemoryError
    here instead of taking the machine's memory (the watchdog also watches the resident size)."""
    import resource

    with open("/proc/self/statm", encoding="ascii") as file:
        virtual = int(file.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (virtual + limit, resource.RLIM_INFINITY))


def _over_limit(limit: int) -> str:
    return f"Function output exceeded max_output_bytes ({limit} bytes)"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: faasd _pyworker HANDLER_FILE (started by the watchdog in mode=python)", file=sys.stderr)
        return 2
    try:
        handle = load_handler(argv[0])
        two_arguments = len(inspect.signature(handle).parameters) >= 2
    except BaseException as exc:  # The watchdog reports it: any failure to import is the user's code.
        traceback.print_exc()
        write_frame(ANSWER_FD, {"error": f"cannot import {argv[0]}: {type(exc).__name__}: {exc}"})
        return 1
    limit = int(os.environ.get("FAASD_WORKER_MEMORY_LIMIT", "0") or 0)
    if limit:
        _limit_memory(limit)
    output_limit = int(os.environ.get("FAASD_WORKER_OUTPUT_LIMIT", "0") or 0) or sys.maxsize
    context = Context()
    reaper = Reaper()
    reaper.install()
    write_frame(ANSWER_FD, {"ready": True, "pid": os.getpid()})
    while (frame := read_frame(REQUEST_FD)) is not None:
        meta, body = frame
        reaper.busy = True
        try:
            arguments = (Event(meta, body), context) if two_arguments else (body.decode("utf-8", "replace"),)
            answer, answer_body = encode_answer(handle(*arguments))
        except MemoryError:
            write_frame(ANSWER_FD, {"status": 500, "error": "handler exceeded the memory limit", "exit": True})
            return 3  # The heap may be in any state: let the watchdog start a fresh worker.
        except Exception as exc:
            traceback.print_exc()
            sys.stderr.flush()
            answer, answer_body = {"status": 500, "error": f"{type(exc).__name__}: {exc}"}, b""
        if len(answer_body) > output_limit or len(str(answer.get("error", ""))) > output_limit:
            # The watchdog would kill a worker whose answer passes max_output_bytes: refuse it here.
            answer, answer_body = {"status": 502, "error": _over_limit(output_limit)}, b""
        sys.stdout.flush()
        write_frame(ANSWER_FD, answer, answer_body)
        reaper.after_call()  # What the watchdog killed during the call (faasd.watchdog.pyreap).
    return 0
