"""A load of calls from a process of its own: how a test drives a misbehaving function while it times
calls to another one.

Why a process: a test that times a reference function's calls in its own thread, while threads of the
same interpreter call the misbehaving function, measures their share of the GIL as well as the daemon.
Measured on the 2-vCPU project machine (2026-11-30): steady's p99 while a thread of the test called a
*harmless* function (``cat``) in a loop, one new ``httpx`` client per call as the fork-bomb test did,
was 1.75x and 2.29x its p99 without; the same loop from a process of its own, 1.31x and 1.38x. A
client of a misbehaving function is never inside the interpreter of another function's client.

The child (tests/fault_caller.py) makes the calls with ``httpx`` and writes one JSON line per call;
the parent (:class:`ProcessLoad`) records each as it comes (:class:`tests.helpers.Outcomes`). Bounded:
the child stops after ``max_calls`` calls per worker or ``seconds``, whichever comes first, and when its
stdin closes (the parent's :meth:`ProcessLoad.stop`, or the test process dying).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tests.helpers import Outcomes, scaled, status_200

CALLER = Path(__file__).with_name("fault_caller.py")


class Answer(NamedTuple):
    """One answer as the child reported it: what ``ok`` predicates read (``status_code``, ``text``)."""

    status_code: int
    text: str


class ProcessLoad(Outcomes):
    """Calls ``method url+path`` with ``body`` from ``workers`` threads of a child process, each with its
    own keep-alive client and ``pause`` seconds between its calls, for ``seconds`` (scaled) from when the
    ``with`` block is entered (which waits until the child is ready to call) or until :meth:`stop`; every
    outcome is recorded here as it comes (:class:`tests.helpers.Outcomes`), and ``responses`` keeps the
    first :data:`tests.helpers.Outcomes.MAX_FAILURE_LINES` answers as ``(status, text)``.

    Example::

        with ProcessLoad(daemon.url, "/function/bad", workers=2, pause=0.1) as fault:
            fault.wait_ok(1)
            ...  # time another function's calls
        assert fault.failed == 0, fault.summary()
    """

    def __init__(
        self,
        url: str,
        path: str,
        *,
        method: str = "POST",
        body: bytes = b"x",
        workers: int = 1,
        pause: float = 0.0,
        seconds: float = 120.0,
        max_calls: int = 100_000,
        timeout: float = 60.0,
        ok: Callable[[Any], bool] = status_200,
    ) -> None:
        super().__init__(ok)
        self.spec = {
            "url": url,
            "path": path,
            "method": method,
            "body": body.decode("latin-1"),
            "workers": workers,
            "pause": pause,
            "seconds": scaled(seconds),
            "max_calls": max_calls,
            "timeout": scaled(timeout),
        }
        self.responses: list[tuple[int, str]] = []
        self._child: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._started = threading.Event()

    def __enter__(self) -> ProcessLoad:
        self._child = subprocess.Popen(
            [sys.executable, str(CALLER), json.dumps(self.spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="process-load", daemon=True)
        self._reader.start()
        if not self._started.wait(scaled(30.0)):
            self.stop()
            raise AssertionError(f"the load's process did not start its calls: {self.summary()}")
        return self

    def _read(self) -> None:
        assert self._child is not None and self._child.stdout is not None
        for line in self._child.stdout:
            outcome, text = json.loads(line)
            if outcome == "started":
                self._started.set()
            elif isinstance(outcome, int):
                with self._lock:
                    if len(self.responses) < self.MAX_FAILURE_LINES:
                        self.responses.append((outcome, text))
                self.record_response(Answer(outcome, text))
            else:
                self.record_exception(outcome, text)

    def done(self) -> bool:
        """True once the child has made its last call and every outcome is recorded."""
        return self._reader is not None and not self._reader.is_alive()

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the child to end on its own (its ``seconds`` or ``max_calls``)."""
        if self._reader is not None:
            self._reader.join(scaled(timeout))

    def stop(self, timeout: float = 30.0) -> None:
        """Tell the child to stop (each worker finishes the call it is in) and wait for it."""
        child = self._child
        if child is None:
            return
        if child.stdin is not None and not child.stdin.closed:
            child.stdin.close()
        try:
            child.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            hung = f"the load's process still in a call {timeout:g}s after stop; {self.summary()}"
            raise AssertionError(hung) from None
        finally:
            if self._reader is not None:
                self._reader.join(scaled(timeout))
