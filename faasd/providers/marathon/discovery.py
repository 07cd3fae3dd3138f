"""Discovery: what Marathon runs, kept current from its event stream plus a periodic re-list.

Stateless: everything is read from Marathon (the apps of the group labelled as functions, with their
tasks), so a restarted daemon has the same view within one listing, and an app created by hand with
the label is a function as soon as it is listed.

**Two sources, one rule.** Marathon's events come in no guaranteed order, so they are never applied:
each one that concerns the group only asks for a re-list soon (:meth:`Discovery.poke`). Re-lists also
come on their own: every :data:`POLL_MIN_S` doubling to :data:`POLL_MAX_S` while something is moving
(a deployment runs, replicas are starting), every :data:`RESYNC_S` otherwise -- so a lost or
unsupported event stream costs latency, never correctness.

**Readiness.** A task is ready once Marathon reports its health check passing -- or, until Marathon has
a result (its check runs every second), once faasd's own probe of the watchdog's ``/_/health`` answers
200 (:mod:`faasd.providers.common.probe`, the probe every backend runs): a task is probed from the
listing that first shows it running until it answers, Marathon gives its verdict, or it is gone. A
health check Marathon reports failing always wins.

**Marathon down.** A failed listing marks the backend unhealthy with the reason (``/healthz``, and a 503
for API calls that need Marathon), retried every :data:`RECONNECT_S`. The endpoints published last stay:
Mesos keeps the tasks running without Marathon, so calls keep working; a replica that went away
meanwhile is a refused connection, which the gateway fails over. The first good listing brings
everything up to date.
"""

from __future__ import annotations

import logging

import trio

from faasd.errors import BackendError, FaasdError
from faasd.logs import event
from faasd.providers.common.probe import health_ok
from faasd.providers.marathon.appdef import LABEL_FUNCTION
from faasd.providers.marathon.client import MarathonClient, MarathonHttpError, SseEvent
from faasd.providers.marathon.view import AppState, read_app, replicas
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry

__all__ = ["EMBED", "EVENT_TYPES", "Discovery", "describe_http_error"]

log = logging.getLogger("faasd.providers.marathon")

EMBED = ("apps.tasks", "apps.lastTaskFailure", "apps.deployments")
EVENT_TYPES = (
    "status_update_event",
    "instance_changed_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "failed_health_check_event",
    "deployment_success",
    "deployment_failed",
    "app_terminated_event",
    "api_post_event",
)
"""The events that can change a function's replicas or spec (``event_type`` filter of ``/v2/events``)."""
POLL_MIN_S = 0.05
POLL_MAX_S = 2.0
RESYNC_S = 5.0
RECONNECT_S = 1.0
EVENTS_RETRY_MAX_S = 10.0
PROBE_POLL_S = (0.02, 1.0)
"""First and longest pause between two probes of a replica still starting (doubling)."""
PROBE_TIMEOUT_S = 2.0
DEBOUNCE_S = 0.01
"""Events come in bursts (a task's status, then its health, then the deployment's end): one re-list."""


def describe_http_error(exc: MarathonHttpError, url: str) -> str:
    """An error answer to a listing, as the backend's health reason."""
    if exc.status == 401:
        return (
            f"Marathon at {url} refused faasd's credentials ({exc.message}): check marathon_user and "
            "marathon_password, or marathon_token"
        )
    if exc.status == 403:
        return f"Marathon at {url} denied faasd access ({exc.message})"
    return f"Marathon at {url} answered {exc.status}: {exc.describe()}"


class Discovery:
    """The view of the group's functions; publishes their ready endpoints into ``registry``."""

    def __init__(self, client: MarathonClient, group: str, registry: EndpointRegistry) -> None:
        self.client = client
        self.group = group
        self.registry = registry
        self.apps: dict[str, AppState] = {}
        self.healthy = False
        self.reason = f"Marathon at {client.url}: not read yet"
        self._dirty = trio.Event()
        self._changed = trio.Event()
        self._events_connected = False
        self._nursery: trio.Nursery | None = None
        self._probed: set[str] = set()
        """Tasks whose watchdog answered faasd's probe (ready before Marathon's first health result)."""
        self._undecided: set[str] = set()
        """Running tasks Marathon has no health verdict on: the ones worth probing."""
        self._probing: set[str] = set()
        self._started = 0
        """Listings begun (several may run at once: the loop's, a deploy's, ``list``)."""
        self._settled = 0
        """The newest listing whose answer may still be published: an older one that answers late
        would bring back what a newer one (or :meth:`forget`) removed."""

    def __repr__(self) -> str:
        return f"<Discovery {self.client.url}{self.group} functions={len(self.apps)} healthy={self.healthy}>"

    @property
    def probed(self) -> frozenset[str]:
        """Tasks whose watchdog answered faasd's probe (see "Readiness" above)."""
        return frozenset(self._probed)

    def poke(self) -> None:
        """Re-list soon (something changed, or someone waits for a change)."""
        self._dirty.set()

    async def changed(self, timeout_s: float) -> None:
        """Wait for the next listing (at most ``timeout_s``)."""
        event_ = self._changed
        with trio.move_on_after(timeout_s):
            await event_.wait()

    async def refresh(self) -> dict[str, AppState]:
        """List the group's functions, publish their endpoints, and return them.

        Raises:
            FaasdError: Marathon cannot be read (also recorded as the backend's health).
        """
        self._started += 1
        number = self._started
        try:
            apps = await self.client.list_apps(self.group, LABEL_FUNCTION, EMBED)
        except MarathonHttpError as exc:
            reason = describe_http_error(exc, self.client.url)
            self._unhealthy(number, reason)
            raise BackendError(reason) from exc
        except FaasdError as exc:
            self._unhealthy(number, exc.message)
            raise
        states = {}
        undecided: dict[str, Endpoint] = {}
        for app in apps:
            state = read_app(app, self.group, self._probed)
            if state is None:
                continue
            states[state.name] = state
            for replica in replicas(app):
                if replica.marathon_healthy is None:
                    undecided[replica.endpoint.replica] = replica.endpoint
        if number > self._settled:
            self._settled = number
            self._publish(states)
            self._probe(undecided)
        return states

    def _probe(self, undecided: dict[str, Endpoint]) -> None:
        """Probe each running task Marathon has no verdict on yet, until it answers or leaves."""
        self._undecided = set(undecided)
        self._probed &= self._undecided  # Marathon decides from its first result on.
        if self._nursery is None:
            return
        for replica, endpoint in undecided.items():
            if replica not in self._probed and replica not in self._probing:
                self._probing.add(replica)
                self._nursery.start_soon(self._probe_one, endpoint, name=f"probe {replica}")

    async def _probe_one(self, endpoint: Endpoint) -> None:
        pause, longest = PROBE_POLL_S
        try:
            while endpoint.replica in self._undecided:
                if await health_ok(
                    endpoint.host, endpoint.port, connect_timeout_s=PROBE_TIMEOUT_S, timeout_s=PROBE_TIMEOUT_S
                ):
                    if endpoint.replica in self._undecided:
                        self._probed.add(endpoint.replica)
                        self.poke()
                    return
                await trio.sleep(pause)
                pause = min(pause * 2, longest)
        finally:
            self._probing.discard(endpoint.replica)

    def _publish(self, states: dict[str, AppState]) -> None:
        for name in [name for name in self.apps if name not in states]:
            self.registry.forget(name)
        for name, state in states.items():
            self.registry.publish(name, state.endpoints)
        self.apps = states
        if not self.healthy:
            event(log, logging.INFO, "marathon reachable", url=self.client.url, functions=len(states))
        self.healthy = True
        self.reason = f"Marathon at {self.client.url}: {len(states)} functions in {self.group}"
        self._changed.set()
        self._changed = trio.Event()

    def forget(self, name: str) -> None:
        """A function removed by this daemon: drop it now rather than at the next listing (and never
        publish a listing that began before)."""
        self._settled = self._started
        self.apps.pop(name, None)
        self.registry.forget(name)

    def _unhealthy(self, number: int, reason: str) -> None:
        if number <= self._settled:
            return  # A newer listing has answered since this one began.
        self._settled = number
        if self.healthy or reason != self.reason:
            event(log, logging.WARNING, "marathon unavailable", reason=reason)
        self.healthy = False
        self.reason = reason
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow events and re-list until cancelled; ``started`` after the first listing (or the first
        failure to list: the daemon starts while Marathon is down, and catches up later)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._follow_events)
            delay = POLL_MIN_S
            started = False
            previous: dict[str, AppState] | None = None
            while True:
                try:
                    states = await self.refresh()
                except FaasdError:
                    wait = RECONNECT_S
                    previous = None
                else:
                    if any(state.moving for state in states.values()):
                        delay = POLL_MIN_S if states != previous else min(delay * 2, POLL_MAX_S)
                        wait = delay
                    else:
                        delay = POLL_MIN_S
                        wait = RESYNC_S
                    previous = states
                if not started:
                    task_status.started()
                    started = True
                with trio.move_on_after(wait):
                    await self._dirty.wait()
                    await trio.sleep(DEBOUNCE_S)
                self._dirty = trio.Event()

    async def _follow_events(self) -> None:
        """Read ``/v2/events`` for ever, poking a re-list on each event about the group; reconnects with
        a growing pause (the periodic re-list covers the gap)."""
        pause = RECONNECT_S
        while True:
            try:
                async for item in self.client.events(EVENT_TYPES):
                    if item.type == "event_stream_attached":
                        pause = RECONNECT_S
                        if not self._events_connected:
                            event(log, logging.DEBUG, "marathon event stream attached", url=self.client.url)
                        self._events_connected = True
                        self.poke()  # What happened while it was not attached.
                    elif self._concerns_us(item):
                        self.poke()
            except (FaasdError, MarathonHttpError) as exc:
                if self._events_connected:
                    event(log, logging.DEBUG, "marathon event stream lost", error=str(exc))
            self._events_connected = False
            await trio.sleep(pause)
            pause = min(pause * 2, EVENTS_RETRY_MAX_S)

    def _concerns_us(self, item: SseEvent) -> bool:
        """Events naming an app outside the group are someone else's (a shared Marathon is busy)."""
        data = item.data
        for key in ("appId", "runSpecId"):
            value = data.get(key)
            if isinstance(value, str):
                return value.startswith(self.group + "/")
        instance = data.get("instance")
        if isinstance(instance, dict) and isinstance(instance.get("runSpecId"), str):
            return str(instance["runSpecId"]).startswith(self.group + "/")
        return True
