"""The event bus behind ``GET /v2/events``: Server-Sent Events, filtered by ``event_type``.

As documented in `Event Bus <https://mesosphere.github.io/marathon/docs/event-bus.html>`_ and
`events.raml <https://github.com/mesosphere/marathon/blob/master/docs/docs/rest-api/public/api/v2/events.raml>`_:
each event is one SSE frame, ``event: <eventType>`` and ``data: <JSON>``; the JSON carries ``eventType``
and ``timestamp``; the first frame of a stream is ``event_stream_attached``; repeated ``event_type=``
parameters subscribe to those types only (``event_stream_attached`` included: it is sent only when
subscribed to, as the documented filter example shows).

Marathon does not guarantee the order of events (they come from asynchronous components) and the
documentation says to use the stream only to invalidate what a client has read. This emulator
publishes in the order things happen here, but clients must not rely on more than Marathon promises.

**Slow subscribers**: each has a buffer of :data:`SUBSCRIBER_BUFFER` events; one that falls further
behind is disconnected (its stream ends) rather than holding memory or the publishers; a client
reconnects and re-reads state, as it must after any disconnect.

Event types published by this emulator, with their fields (besides ``eventType``, ``timestamp``):

==================================  ==================================================================
``event_stream_attached``           ``remoteAddress``
``event_stream_detached``           ``remoteAddress`` (published to the other subscribers)
``api_post_event``                  ``clientIp``, ``uri``, ``appDefinition``
``group_change_success``            ``groupId``, ``version``
``deployment_info``                 ``plan`` (``id``, ``steps``, ``version``), ``currentStep`` (``actions``)
``deployment_success``              ``id``, ``plan``
``deployment_failed``               ``id``, ``plan``, ``reason`` (cancelled or superseded by force)
``status_update_event``             ``slaveId``, ``taskId``, ``taskStatus``, ``message``, ``appId``, ``host``,
                                    ``ports``, ``ipAddresses``, ``version``
``instance_changed_event``          ``instanceId``, ``condition``, ``runSpecId``, ``agentId``, ``host``,
                                    ``runSpecVersion``
``health_status_changed_event``     ``appId``, ``instanceId``, ``taskId``, ``version``, ``alive``
``instance_health_changed_event``   ``instanceId``, ``runSpecId``, ``runSpecVersion``, ``healthy``
``failed_health_check_event``       ``appId``, ``taskId``, ``instanceId``, ``healthCheck``
``unhealthy_instance_kill_event``   ``appId``, ``taskId``, ``instanceId``, ``version``, ``reason``, ``host``,
                                    ``slaveId``
``app_terminated_event``            ``appId``
==================================  ==================================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from tests.marathon_emulator.clock import iso_now

__all__ = ["SUBSCRIBER_BUFFER", "EventBus", "Subscription", "sse_frame"]

log = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 10_000
"""Events one subscriber may lag behind before it is disconnected."""


def sse_frame(event: dict[str, Any]) -> bytes:
    """One Server-Sent Events frame for ``event`` (its JSON is a single line)."""
    return f"event: {event['eventType']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class _Subscriber:
    def __init__(self, types: frozenset[str] | None) -> None:
        self.types = types
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)


@dataclass(frozen=True)
class Subscription:
    """One subscriber's events (``receive`` ends when the bus drops it) and how to unsubscribe."""

    receive: trio.MemoryReceiveChannel[dict[str, Any]]
    close: Callable[[], None]


class EventBus:
    """Fans each published event out to the subscribed streams (publishing never blocks)."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self.published = 0

    def __repr__(self) -> str:
        return f"<EventBus subscribers={len(self._subscribers)} published={self.published}>"

    def publish(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Publish one event to every subscriber that wants its type; returns the event."""
        event = {**fields, "eventType": event_type, "timestamp": iso_now()}
        self.published += 1
        for subscriber in list(self._subscribers):
            if subscriber.types is not None and event_type not in subscriber.types:
                continue
            try:
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                log.warning("event subscriber %d events behind: disconnected", SUBSCRIBER_BUFFER)
                self._drop(subscriber)
        return event

    def _drop(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)
        subscriber.send.close()

    def subscribe(self, types: frozenset[str] | None, remote: str) -> Subscription:
        """A stream of events (``types``: only those; None: all), registered at once, starting with
        ``event_stream_attached``.

        Resource handling: the caller must :meth:`Subscription.close` it (then ``event_stream_detached``
        is published).
        """
        subscriber = _Subscriber(types)
        if types is None or "event_stream_attached" in types:
            attached = {"remoteAddress": remote, "eventType": "event_stream_attached", "timestamp": iso_now()}
            subscriber.send.send_nowait(attached)
        self._subscribers.add(subscriber)

        def close() -> None:
            if subscriber in self._subscribers:
                self._drop(subscriber)
                self.publish("event_stream_detached", remoteAddress=remote)

        return Subscription(subscriber.receive, close)

    def close(self) -> None:
        """End every stream (the emulator is stopping)."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber)
