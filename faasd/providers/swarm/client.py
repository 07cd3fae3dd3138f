"""The Swarm backend's way to dockerd: one docker SDK client, its calls on worker threads, errors translated.

Every docker SDK call blocks: :meth:`DockerClient.call` runs it in a worker thread
(``trio.to_thread.run_sync``), never on the event loop, and :func:`map_exceptions` turns what it
raises into :mod:`faasd.errors` (dockerd unreachable or not a swarm manager -> ``BackendUnavailable``,
503). Streams (events, followed logs) block for their whole life: :func:`drain_in_thread` reads one in
a thread of its own and closes it from the trio side when cancelled, so no thread outlives its caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import docker
import docker.errors
import docker.types
import docker.utils
import requests.exceptions
import trio

from faasd.errors import BackendError, BackendTimeout, BackendUnavailable, Conflict, FunctionNotFound, InvalidRequest
from faasd.logs import event

__all__ = [
    "API_TIMEOUT_S",
    "DockerClient",
    "NotManager",
    "close_stream",
    "drain_in_thread",
    "first_line",
    "map_exceptions",
    "out_of_sequence",
]

log = logging.getLogger("faasd.providers.swarm")

T = TypeVar("T")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT_S = 30
"""Socket timeout of every Docker API call: a hung dockerd cannot hold a worker thread longer."""


@contextlib.contextmanager
def map_exceptions(what: str, *, not_found: str | None = None) -> Iterator[None]:
    """Translate docker SDK and transport errors raised in the block into :mod:`faasd.errors`.

    Args:
        what: what was being done, the start of the message (``scaling f``).
        not_found: message of the ``FunctionNotFound`` a Docker 404 becomes; without it a 404 is a
            ``BackendError`` (something faasd relies on vanished).

    Error handling:
        404 -> FunctionNotFound (or BackendError); 400 -> InvalidRequest (Docker refused the spec, e.g.
        a malformed constraint); 409 -> Conflict; 503 (not a swarm manager) and connection failures
        -> BackendUnavailable; timeouts -> BackendTimeout; anything else -> BackendError.
    """
    try:
        yield
    except docker.errors.NotFound as exc:
        if not_found is not None:
            raise FunctionNotFound(not_found) from exc
        raise BackendError(f"{what}: {_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        message = f"{what}: {_explain(exc)}"
        if status == 503:
            raise BackendUnavailable(message) from exc
        if status == 400:
            raise InvalidRequest(message) from exc
        if status == 409:
            raise Conflict(message) from exc
        raise BackendError(message) from exc
    except requests.exceptions.Timeout as exc:
        raise BackendTimeout(f"{what}: dockerd did not answer within {API_TIMEOUT_S}s") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise BackendUnavailable(f"{what}: dockerd unreachable: {first_line(exc)}") from exc


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return first_line(text or exc)


def first_line(value: object) -> str:
    """The first line of ``str(value)``, or the type's name when that is empty (for one-line reasons)."""
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def out_of_sequence(exc: docker.errors.APIError) -> bool:
    """Did a service update lose a race with another writer (retry it with the new version)?"""
    return "out of sequence" in str(exc.explanation or "")


class NotManager(Exception):
    """The engine answers but cannot run services (no swarm, or a worker node)."""


class DockerClient:
    """The provider's Docker API client, made on first use and dropped when dockerd goes away.

    Args:
        docker_host: dockerd's address; empty: ``$DOCKER_HOST`` (and the other ``DOCKER_*``
            variables), else the local socket.
    """

    def __init__(self, docker_host: str = "") -> None:
        self.docker_host = docker_host
        self.where = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        """dockerd's address, for messages."""
        self._api: docker.APIClient | None = None
        self._lock = trio.Lock()

    def new_client(self) -> docker.APIClient:
        """A client bound to the engine's API version (blocking: asks dockerd for it)."""
        if self.docker_host:
            return docker.APIClient(base_url=self.docker_host, version="auto", timeout=API_TIMEOUT_S)
        kwargs = docker.utils.kwargs_from_env()
        return docker.APIClient(version="auto", timeout=API_TIMEOUT_S, **kwargs)

    async def client(self) -> docker.APIClient:
        if self._api is None:
            async with self._lock:
                if self._api is None:
                    with map_exceptions(f"connecting to dockerd at {self.where}"):
                        self._api = await trio.to_thread.run_sync(self.new_client)
        return self._api

    async def call(self, what: str, call: Callable[[docker.APIClient], T], *, not_found: str | None = None) -> T:
        """Run ``call(client)`` in a worker thread, with Docker errors translated (:func:`map_exceptions`)."""
        api = await self.client()
        with map_exceptions(what, not_found=not_found):
            return await trio.to_thread.run_sync(call, api)

    def close(self) -> None:
        """Drop the client: the next call makes a fresh one (a restarted dockerd may speak another API
        version)."""
        api, self._api = self._api, None
        if api is not None:
            api.close()


def close_stream(stream: docker.types.CancellableStream) -> None:
    """Close a Docker stream from any thread: shuts its socket down so a blocked read returns."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.close()


async def drain_in_thread(stream: docker.types.CancellableStream, pump: Callable[[], None], what: str) -> None:
    """Run ``pump`` (blocking reads of ``stream``) in a worker thread until it returns.

    Resource handling:
        The thread gets a limiter of its own (it is held for the stream's whole life and must not
        starve the API calls). When the caller is cancelled, a sibling task closes ``stream``, the
        blocked read fails, the thread returns, and only then does the cancellation go on: no thread
        outlives this call.

    Error handling:
        A read error ends the stream like its end does (logged at debug level): the caller decides
        what an ended stream means.
    """

    def guarded() -> None:
        try:
            pump()
        except Exception as exc:  # A thread boundary: whatever broke the read ends the stream.
            event(log, logging.DEBUG, "stream ended with an error", stream=what, error=first_line(exc))

    async def close_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            close_stream(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_on_cancel)
        try:
            await trio.to_thread.run_sync(guarded, limiter=trio.CapacityLimiter(1))
        finally:
            nursery.cancel_scope.cancel()
