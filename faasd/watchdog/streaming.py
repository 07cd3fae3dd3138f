"""Streaming mode: fork the function per request like fork mode, but send its stdout as it comes.

For large or slow outputs: the answer starts (status 200, chunked) with the first bytes the function
writes, so the client sees output at once and the watchdog holds only what the client has not taken
yet. Back-pressure: while the client reads slower than the function writes, the watchdog stops reading
the function's stdout, so the pipe fills and the function blocks on write -- memory stays flat
whatever the size (a 200 MB output costs no more than a small one). ``max_output_bytes`` does not
apply to the streamed stdout.

Failures after the answer has started cannot change its status any more (as in OpenFaaS of-watchdog
``mode=streaming``): a non-zero exit is logged and the body ends normally; a timeout or shutdown cuts the
body (the connection is closed without the final chunk, so the client sees it is incomplete). A call
that fails before writing anything is answered like fork mode (500 with stderr, 408, ...).
"""

from __future__ import annotations

import os

from faasd.logs import WARNING, LineLogger, event
from faasd.watchdog.fork import DEFAULT_CONTENT_TYPE, CallResult, ForkCall, ForkRunner

__all__ = ["StreamingCall", "StreamingRunner"]

log = LineLogger("faasd.watchdog")


class StreamingCall(ForkCall):
    """A fork-mode call whose stdout goes to the client as it arrives."""

    __slots__ = ("_paused", "_streaming")

    def spawn(self) -> bool:
        self._streaming = False
        self._paused = False
        return super().spawn()

    def _output(self, data: bytes) -> None:
        if self.kill_reason is not None:
            return  # Killed: drain and drop until EOF.
        connection = self.connection
        assert connection is not None
        if not self._streaming:
            self._streaming = True
            config = self.runner.config
            content_type = config.content_type or self.request.content_type or DEFAULT_CONTENT_TYPE
            connection.start_stream(200, content_type, on_writable=self._resume)
        connection.stream_write(data)
        if not connection.writable and self.out_fd >= 0 and not self._paused:
            self._paused = True
            self.runner.fds.remove(self.out_fd)

    def _resume(self) -> None:
        """The client caught up: read the function's output again."""
        if self._paused and self.out_fd >= 0:
            self._paused = False
            self.runner.fds.add(self.out_fd, self._on_stdout)

    def _finish_with(self, result: CallResult) -> None:
        if not self._streaming:
            super()._finish_with(result)
            return
        if self._done is None:
            return  # Abandoned: the client is gone.
        self._done = None
        connection = self.connection
        assert connection is not None
        complete = self.kill_reason is None
        if complete and self.status:
            code = os.waitstatus_to_exitcode(self.status)
            event(log, WARNING, "function failed after its answer started", exit=code)
        connection.end_stream(complete=complete)


class StreamingRunner(ForkRunner):
    """Fork mode's runner with streamed answers."""


StreamingRunner.call_class = StreamingCall
