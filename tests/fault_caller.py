"""The child of :class:`tests.fault_load.ProcessLoad`: makes its calls and reports each on stdout.

Run as ``python tests/fault_caller.py '<spec as JSON>'`` (stdlib and ``httpx`` only: it does not import
the tests package). It writes ``["started", ""]`` once its clients are made, then one JSON line per call:
``[status, text]`` (the body's first :data:`MAX_TEXT` characters) or ``[exception name, repr]``. It
stops after ``max_calls`` calls per worker or ``seconds``, whichever comes first, and when its stdin
closes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import httpx

MAX_TEXT = 2000
"""Characters of each answer's body reported."""


def main(spec: dict[str, Any]) -> None:
    """The calls, as the spec says; one JSON line per call on stdout: ``[status, text]`` or
    ``[exception name, repr]``."""

    stop = threading.Event()
    lock = threading.Lock()
    clients = [httpx.Client(base_url=spec["url"], timeout=spec["timeout"]) for _ in range(spec["workers"])]
    print(json.dumps(["started", ""]), flush=True)  # What the parent waits for: the calls begin now.
    deadline = time.monotonic() + spec["seconds"]

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    def worker(client: httpx.Client) -> None:
        with client:
            for _ in range(spec["max_calls"]):
                if stop.is_set() or time.monotonic() >= deadline:
                    return
                try:
                    response = client.request(spec["method"], spec["path"], content=spec["body"].encode("latin-1"))
                except Exception as exc:
                    line = [type(exc).__name__, repr(exc)[:300]]
                else:
                    line = [response.status_code, response.text[:MAX_TEXT]]
                with lock:
                    print(json.dumps(line), flush=True)
                if spec["pause"]:
                    stop.wait(spec["pause"])

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    workers = [threading.Thread(target=worker, args=(client,)) for client in clients]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
