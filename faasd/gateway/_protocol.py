"""hypercorn's HTTP/1.1 protocol and per-connection task group, adapted for :mod:`faasd.gateway.server`.

What changes against hypercorn 0.18 (see the server's docstring for why):

* :class:`Http1Protocol` -- an answer sent before the request body was read says ``Connection: close``;
  HTTP/2 is never switched to; a head over the size limit is a 431 however it arrived;
* :class:`AppTasks` -- each app's ``receive()`` queue (:class:`_Inbox`) never blocks the disconnect, and
  a put waiting on a full queue is released when the app is done;
* :class:`ClientGone` -- what the app's ``send()`` raises once the connection is closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import Any, NoReturn

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup

__all__ = ["AppTasks", "ClientGone", "Http1Protocol", "RequestRefused"]


class Http1Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol with three changes: an answer sent before the request body was read
    says ``Connection: close`` (the rest of that body would otherwise be read as the next request);
    HTTP/2 is never switched to (an ``Upgrade: h2c`` is ignored; a request that is not HTTP/1.x is
    answered 505); a head over ``max_header_bytes`` is answered 431 however it arrived."""

    async def stream_send(self, message: StreamEvent) -> None:
        if (
            isinstance(message, Response)
            and message.status_code >= 200
            and isinstance(self.connection, h11.Connection)
            and self.connection.their_state is h11.SEND_BODY
        ):
            message = replace(message, headers=[*message.headers, (b"connection", b"close")])
        await super().stream_send(message)

    async def _check_protocol(self, request: h11.Request) -> None:
        if not request.http_version.startswith(b"1."):
            await self._refuse(505)
        # h11 bounds a head only while it is incomplete: one that came whole in a single read (up to
        # 64 KiB) is measured here.
        size = len(request.method) + len(request.target) + 12
        for name, value in request.headers.raw_items():
            size += len(name) + len(value) + 4
        if size > self.config.h11_max_incomplete_size:
            await self._refuse(431)

    async def _refuse(self, status: int) -> NoReturn:
        await self._send_error_response(status)
        await self.send(Closed())
        raise RequestRefused


class ClientGone(OSError):
    """Raised by the app's ``send()`` once the client's connection is closed (as the ASGI spec asks: a
    subclass of OSError), so an app relaying a long answer stops instead of writing into the void."""


class RequestRefused(Exception):
    """Raised out of the protocol after it refused a request head (431, 505): the connection is closing."""


Message = MutableMapping[str, Any]


class _Inbox:
    """The app's ``receive()`` queue: bounded (back-pressure on the client), but putting the disconnect
    never waits, and a put blocked on a full queue is released once the request is over."""

    def __init__(self, size: int) -> None:
        self.send, self.receive_channel = trio.open_memory_channel[Message](size)

    async def put(self, message: Message) -> None:
        if message["type"] == "http.disconnect":
            self.send.close()  # The app reads what is queued, then a disconnect (see receive).
            return
        # Closed or broken: the request is over (disconnected, or the app finished without reading it all).
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self.send.send(message)

    async def receive(self) -> Message:
        try:
            return await self.receive_channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {"type": "http.disconnect"}


class AppTasks(TaskGroup):
    """hypercorn's per-connection task group, with :class:`_Inbox` as each app's receive queue."""

    # hypercorn's signature names its TypedDict events; this one takes them as the plain dicts (Message)
    # they are at run time, as the rest of this module does: narrower on paper only.
    async def spawn_app(  # type: ignore[override]
        self,
        app: Callable[..., Awaitable[None]],
        config: HypercornConfig,
        scope: Message,
        send: Callable[[Message | None], Awaitable[None]],
    ) -> Callable[[Message], Awaitable[None]]:
        inbox = _Inbox(config.max_app_queue_size)
        assert self._nursery is not None
        self._nursery.start_soon(_run_app, app, config, scope, inbox, send)
        return inbox.put


async def _run_app(
    app: Callable[..., Awaitable[None]],
    config: HypercornConfig,
    scope: Message,
    inbox: _Inbox,
    send: Callable[[Message | None], Awaitable[None]],
) -> None:
    try:
        await app(scope, inbox.receive, send, trio.to_thread.run_sync, trio.from_thread.run)
    except trio.Cancelled:
        raise
    except ClientGone:
        pass  # The client went away while the app answered: nothing to report.
    except BaseExceptionGroup as error:
        _, others = error.split((trio.Cancelled, ClientGone))
        if others is not None:
            await config.log.exception("Error in ASGI Framework")
        elif error.subgroup(trio.Cancelled) is not None:
            raise
    except Exception:
        await config.log.exception("Error in ASGI Framework")
    finally:
        inbox.receive_channel.close()  # Releases a put waiting on a queue nobody reads any more.
        with contextlib.suppress(ClientGone):
            await send(None)  # hypercorn ends the stream (a 500 if the app never answered).
