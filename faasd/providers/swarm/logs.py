"""Logs of Swarm functions: ``docker service logs`` read whole or followed, as faasd's LogMessages.

Docker keeps the lines (json-file logs, with details and timestamps); faasd keeps none of its own.
:func:`read_logs` and :func:`open_logs` are blocking (run in worker threads); :func:`follow` turns a
followed stream into an async iterator whose reader thread ends when the iterator is closed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC
from typing import Any

import docker
import docker.types
import trio

from faasd.providers.swarm.client import close_stream, drain_in_thread
from faasd.providers.swarm.spec import parse_log_line
from faasd.providers.types import LogMessage, LogRequest

__all__ = ["FOLLOW_BUFFER_LINES", "LOG_LINES_MAX", "follow", "log_params", "messages", "open_logs", "read_logs"]

LOG_LINES_MAX = 10_000
"""Lines kept for a ``logs`` call without ``tail`` (Docker's json-file logs are unbounded)."""
FOLLOW_BUFFER_LINES = 1024


async def follow(
    stream: docker.types.CancellableStream, request: LogRequest, nursery: trio.Nursery
) -> AsyncGenerator[LogMessage, None]:
    """The messages of a followed stream (:func:`open_logs`) as they come.

    Resource handling:
        The stream is read in a worker thread whose task runs in ``nursery`` (the provider's): an
        async generator must not hold a nursery open across its yields (it runs in its consumer's
        task and cancel scopes). Closing the iterator closes the stream from the trio side, which
        ends the thread before ``aclose`` returns.
    """
    send, receive = trio.open_memory_channel[LogMessage](FOLLOW_BUFFER_LINES)
    done = trio.Event()

    def pump() -> None:
        with send:
            for item in messages(stream, request):
                try:
                    trio.from_thread.run(send.send, item)
                except (trio.BrokenResourceError, trio.RunFinishedError):
                    return

    async def read() -> None:
        try:
            await drain_in_thread(stream, pump, f"logs of {request.name}")
        finally:
            send.close()
            done.set()

    nursery.start_soon(read)
    try:
        async with receive:
            async for item in receive:
                yield item
    finally:
        close_stream(stream)
        with trio.CancelScope(shield=True):
            await done.wait()


def log_params(request: LogRequest, follow: bool) -> dict[str, Any]:
    """The query of ``/services/{name}/logs`` for ``request``: details (the task id) and timestamps, a
    bounded tail unless following."""
    params: dict[str, Any] = {
        "details": True,
        "follow": follow,
        "stdout": True,
        "stderr": True,
        "timestamps": True,
        "tail": str(request.tail) if request.tail > 0 else ("all" if follow else str(LOG_LINES_MAX)),
    }
    if request.since is not None:
        moment = request.since.astimezone(UTC)
        params["since"] = f"{math.floor(moment.timestamp())}.{moment.microsecond * 1000:09d}"
    return params


def open_logs(api: docker.APIClient, *, request: LogRequest) -> docker.types.CancellableStream:
    """A following ``/services/{name}/logs`` stream that can be closed from another thread.

    docker-py's ``service_logs`` returns a bare generator that cannot be interrupted, so this makes the
    same request and wraps the response in the SDK's ``CancellableStream`` (as ``events`` does).
    """
    # These helpers are APIClient's own (its ``events`` uses them), private and so absent from its stubs.
    client: Any = api
    response = client._get(
        client._url("/services/{0}/logs", request.name),
        params=log_params(request, follow=True),
        stream=True,
    )
    client._raise_for_status(response)
    return docker.types.CancellableStream(client._multiplexed_response_stream_helper(response), response)


def messages(chunks: Iterator[bytes] | docker.types.CancellableStream, request: LogRequest) -> Iterator[LogMessage]:
    """Log frames -> LogMessages of ``request`` (instance and since filters applied)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            found = _message(line, request)
            if found is not None:
                yield found
    if pending:
        found = _message(pending, request)
        if found is not None:
            yield found


def _message(line: bytes, request: LogRequest) -> LogMessage | None:
    parsed = parse_log_line(line.decode("utf-8", "replace").rstrip("\r"))
    if parsed is None:
        return None
    timestamp, task_id, text = parsed
    if request.instance and task_id != request.instance:
        return None
    if request.since is not None and timestamp < request.since:
        return None
    return LogMessage(name=request.name, instance=task_id, timestamp=timestamp, text=text)


def read_logs(api: docker.APIClient, *, request: LogRequest) -> list[LogMessage]:
    """The kept lines of every task, merged by time; the last ``tail`` of them when asked."""
    params = log_params(request, follow=False)
    chunks = api.service_logs(
        request.name,
        details=True,
        follow=False,
        stdout=True,
        stderr=True,
        timestamps=True,
        # docker-py passes ``since`` through to the API, which takes "seconds.nanoseconds"; its stubs say int.
        since=params.get("since"),  # type: ignore[arg-type]
        tail=params["tail"],
        is_tty=False,
    )
    kept = sorted(messages(chunks, request), key=lambda message: message.timestamp)
    limit = request.tail if request.tail > 0 else LOG_LINES_MAX
    return kept[-limit:]
