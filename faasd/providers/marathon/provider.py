"""The Marathon backend: each function one Marathon app, driven through Marathon's v2 REST API.

Pieces: :mod:`.appdef` (spec <-> app definition), :mod:`.client` (the REST client), :mod:`.view` (an
app's status and ready endpoints), :mod:`.discovery` (events plus re-lists, publishing endpoints) and
this module, the lifecycle. docs/marathon.md is the user's side of it.

**Changes and deployments.** Every change is a Marathon deployment, and Marathon refuses a change to an
app a deployment still holds (409). So:

* ``deploy``/``update``/``remove`` wait for their deployment to finish, bounded by
  ``marathon_deploy_timeout``. A deploy whose new tasks fail (``lastTaskFailure`` of the new version:
  the command exits, the image cannot be pulled, the health check kills it) is reported at once, a
  400 with Mesos's reason; one still unfinished at the bound is a 504 naming how far it got. Either
  way it is undone -- a new app is removed, an update is rolled back (``DELETE /v2/deployments/{id}``)
  -- so what runs is what faasd's store says;
* ``scale`` returns once Marathon accepted it (the autoscaler does not wait for replicas; calls wait
  for endpoints);
* a 409 lock is retried with a growing pause for up to :data:`LOCK_WAIT_S`, then reported (409);
  with ``marathon_force`` the change overrides the deployment at once (``?force=true``).

**Errors** become faasd's: 404 -> FunctionNotFound, 422 -> InvalidRequest with Marathon's ``details``,
409 -> Conflict, 401/403 -> BackendError naming the credentials to check, unreachable -> 503 with the
reason (:class:`~faasd.errors.BackendUnavailable`), which clears by itself when Marathon is back.

**Logs.** Marathon's API does not serve task output (Mesos keeps it in each task's sandbox), so
``logs`` raises NotSupported (501) with where to look, after checking the function exists.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import trio

from faasd.calltoken import CallToken
from faasd.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Conflict,
    FaasdError,
    FunctionNotFound,
    InvalidRequest,
    NotSupported,
)
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.marathon.appdef import (
    LABEL_FUNCTION,
    AppSettings,
    app_definition,
    app_id,
    check_group,
    check_spec,
    function_token,
)
from faasd.providers.marathon.client import NO_AUTH, Auth, Change, MarathonClient, MarathonHttpError
from faasd.providers.marathon.discovery import Discovery, describe_http_error
from faasd.providers.marathon.view import read_app
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry

__all__ = ["LOCK_WAIT_S", "MarathonProvider"]

log = logging.getLogger("faasd.providers.marathon")

LOCK_WAIT_S = 30.0
"""Longest a change waits for the deployment that locks its app (without ``marathon_force``)."""
LOCK_PAUSE_S = (0.1, 2.0)
"""First and longest pause between two tries of a locked change (doubling)."""
SETTLE_POLL_S = (0.05, 0.5)
"""First and longest pause between two looks at a deployment being waited for (growing)."""
UNDO_WAIT_S = 10.0
"""Longest a failed new app's removal is waited for (so its name can be deployed again at once)."""


class MarathonProvider:
    """Functions as Marathon apps in one group (see the module docstring)."""

    name = "marathon"
    orchestration = "marathon"
    persistent = True

    def __init__(
        self,
        *,
        url: str,
        registry: EndpointRegistry,
        group: str = "faasd",
        auth: Auth = NO_AUTH,
        verify: bool = True,
        ca_file: str = "",
        watchdog_uri: str = "",
        force: bool = False,
        deploy_timeout_s: float = 120.0,
        call_token: CallToken | None = None,
        lock_wait_s: float = LOCK_WAIT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """
        Args:
            url: Marathon's base URL.
            registry: where ready endpoints are published.
            group: the Marathon group of the functions' apps (``faasd`` -> ``/faasd/NAME``).
            auth: basic credentials or a DC/OS token.
            verify, ca_file: TLS verification of Marathon's certificate, and a CA bundle to use.
            watchdog_uri: where agents download faasd.pyz (functions without an image).
            force: override locking deployments instead of waiting for them.
            deploy_timeout_s: bound on waiting for a deploy's deployment.
            call_token: the daemon's token; each function's own is derived from it. None: replicas
                check nothing.

        Raises:
            InvalidRequest: a URL or group Marathon cannot take.
        """
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest("marathon_url must be set to Marathon's http:// or https:// URL")
        self._settings = AppSettings(group=check_group(group), watchdog_uri=watchdog_uri)
        self._client = MarathonClient(url, auth=auth, verify=verify, ca_file=ca_file, transport=transport)
        self._discovery = Discovery(self._client, self._settings.group, registry)
        self._registry = registry
        self._force = force
        self._deploy_timeout_s = deploy_timeout_s
        self._lock_wait_s = lock_wait_s
        self._call_token = call_token
        self._locks = NameLocks()

    def __repr__(self) -> str:
        return f"<MarathonProvider {self._client.url}{self._settings.group}>"

    @property
    def group(self) -> str:
        return self._settings.group

    # -- lifecycle of the provider ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._discovery.run(task_status=task_status)

    def health(self) -> tuple[bool, str]:
        return self._discovery.healthy, self._discovery.reason

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        """Create the app, or replace its definition (a rolling restart), with ``replicas`` instances;
        returns once Marathon's deployment finished (see the module docstring).

        Raises:
            InvalidRequest: a spec Marathon cannot run (nothing sent), or one whose tasks fail (undone).
            Conflict: an app by that name exists in the group and is not a function; or locked too long.
            BackendTimeout: the deployment did not finish in time (undone).
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        check_spec(spec, self._settings)
        identifier = app_id(self.group, spec.name)
        async with self._locks.hold(spec.name):
            existing = await self._get(spec.name, identifier)
            if existing is not None and LABEL_FUNCTION not in (existing.get("labels") or {}):
                raise Conflict(
                    f"Marathon app {identifier} exists and is not a function (no {LABEL_FUNCTION} label); "
                    "remove it or choose another name"
                )
            body = app_definition(spec, replicas, self._settings, call_token=self._token(identifier))
            if existing is None:
                change = await self._change(spec.name, lambda force: self._client.create_app(body, force=force))
            else:
                change = await self._change(
                    spec.name, lambda force: self._client.put_app(identifier, body, partial=False, force=force)
                )
            await self._settle(spec.name, identifier, change, created=existing is None)
        event(log, logging.INFO, "app deployed", function=spec.name, app=identifier, replicas=replicas)

    async def update(self, spec: FunctionSpec) -> None:
        """Replace the app's definition keeping its instance count; waits like :meth:`deploy`.

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest, Conflict, BackendTimeout: as :meth:`deploy`.
        """
        async with self._locks.hold(spec.name):
            identifier, existing = await self._require(spec.name)
            check_spec(spec, self._settings)
            replicas = int(existing.get("instances") or 0)
            body = app_definition(spec, replicas, self._settings, call_token=self._token(identifier))
            change = await self._change(
                spec.name, lambda force: self._client.put_app(identifier, body, partial=False, force=force)
            )
            await self._settle(spec.name, identifier, change, created=False)
        event(log, logging.INFO, "app updated", function=spec.name, app=identifier)

    async def remove(self, name: str) -> None:
        """Delete the app (Marathon stops its tasks); returns once it is gone.

        Raises:
            FunctionNotFound: no such function.
        """
        async with self._locks.hold(name):
            identifier, _ = await self._require(name)
            await self._change(name, lambda force: self._client.delete_app(identifier))
            self._discovery.forget(name)
            await self._wait_gone(name, identifier, self._deploy_timeout_s)
        self._discovery.poke()
        event(log, logging.INFO, "app removed", function=name, app=identifier)

    async def scale(self, name: str, replicas: int) -> None:
        """Set the app's instances; returns once Marathon accepted it (replicas start or stop after).

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest: ``replicas`` < 0.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        identifier, existing = await self._require(name)
        if existing.get("instances") == replicas and not existing.get("deployments"):
            return
        body = {"instances": replicas}
        await self._change(name, lambda force: self._client.put_app(identifier, body, partial=True, force=force))
        self._discovery.poke()

    async def list(self) -> list[FunctionStatus]:
        """Every function in the group, read from Marathon now (and published)."""
        states = await self._discovery.refresh()
        return [state.status() for _, state in sorted(states.items())]

    async def status(self, name: str) -> FunctionStatus:
        """Raises: FunctionNotFound: no such function."""
        _, app = await self._require(name)
        state = read_app(app, self.group, self._discovery.probed)
        assert state is not None  # _require checked it is a function.
        return state.status()

    def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """Not served by Marathon's API (see the module docstring): NotSupported (501) naming the tasks.

        Raised at once for a function in the current view -- so the gateway answers 501 rather than an
        empty 200 stream -- else when iteration starts, after checking the function exists.

        Raises:
            FunctionNotFound: no such function.
            NotSupported: for every function that exists.
        """
        state = self._discovery.apps.get(request.name)
        if state is not None:
            raise self._no_logs(state.app_id, [endpoint.replica for endpoint in state.endpoints])
        return self._logs_checked(request.name)

    async def _logs_checked(self, name: str) -> AsyncGenerator[LogMessage, None]:
        identifier, app = await self._require(name)
        tasks = [str(task.get("id")) for task in app.get("tasks") or [] if isinstance(task, dict) and task.get("id")]
        raise self._no_logs(identifier, tasks)
        yield  # pragma: no cover -- makes this an async generator, as the protocol wants.

    @staticmethod
    def _no_logs(identifier: str, tasks: Sequence[str]) -> NotSupported:
        where = f"; its tasks: {', '.join(tasks[:5])}" if tasks else ""
        return NotSupported(
            f"faasd logs is not available on Marathon: its API does not serve task output. Read the stdout and "
            f"stderr of app {identifier}'s tasks in the Mesos UI (each task's sandbox) or with "
            f"'dcos task log <task id>'{where}"
        )

    # -- internals ----------------------------------------------------------------------------------

    def _token(self, identifier: str) -> str | None:
        token = self._call_token
        return function_token(token.value, identifier) if token is not None else None

    async def _get(self, name: str, identifier: str) -> dict[str, Any] | None:
        try:
            return await self._client.get_app(identifier)
        except MarathonHttpError as exc:
            raise self._translate(exc, name) from exc

    async def _require(self, name: str) -> tuple[str, dict[str, Any]]:
        """(app id, app) of an existing function.

        Raises:
            FunctionNotFound: none by that name (also for names no Marathon app can have).
        """
        validate_name(name, "function name")
        try:
            identifier = app_id(self.group, name)
        except InvalidRequest:
            raise FunctionNotFound(f"No such function: {name}") from None
        app = await self._get(name, identifier)
        if app is None or read_app(app, self.group) is None:
            raise FunctionNotFound(f"No such function: {name}")
        return identifier, app

    async def _change(self, name: str, attempt: Callable[[bool], Awaitable[Change]]) -> Change:
        """Run ``attempt(force)`` until Marathon takes it: a 409 lock is waited out (or forced)."""
        deadline = trio.current_time() + self._lock_wait_s
        pause, longest = LOCK_PAUSE_S
        force = False
        while True:
            try:
                return await attempt(force)
            except MarathonHttpError as exc:
                if not exc.locked:
                    raise self._translate(exc, name) from exc
                if self._force and not force:
                    ids = ",".join(exc.deployments)
                    event(log, logging.INFO, "forcing past a deployment", function=name, deployments=ids)
                    force = True
                    continue
                if trio.current_time() + pause > deadline:
                    raise Conflict(
                        f"function {name}: Marathon deployment {', '.join(exc.deployments) or '?'} still holds its "
                        f"app after {self._lock_wait_s:g}s; try again later, or set marathon_force to override it"
                    ) from exc
                await trio.sleep(pause)
                pause = min(pause * 2, longest)

    def _translate(self, exc: MarathonHttpError, name: str) -> FaasdError:
        status = exc.status
        if status == 404:
            return FunctionNotFound(f"No such function: {name}")
        if status == 409:
            return Conflict(f"function {name}: Marathon answered 409: {exc.describe()}")
        if status in (400, 422):
            return InvalidRequest(f"function {name}: Marathon refused the app: {exc.describe()}")
        if status == 503:
            return BackendUnavailable(f"Marathon at {self._client.url} answered 503: {exc.describe()}")
        return BackendError(describe_http_error(exc, self._client.url))

    async def _settle(self, name: str, identifier: str, change: Change, *, created: bool) -> None:
        """Wait for ``change``'s deployment; undo it when its tasks fail or it takes too long."""
        deadline = trio.current_time() + self._deploy_timeout_s
        pause, longest = SETTLE_POLL_S
        while change.deployment:
            app = await self._get(name, identifier)
            if app is None:
                raise BackendError(f"function {name}: app {identifier} disappeared from Marathon during its deployment")
            running = {str(item.get("id")) for item in app.get("deployments") or [] if isinstance(item, dict)}
            if change.deployment not in running:
                break
            failure = _failed_task(app, change.version)
            if failure:
                undone = await self._undo(name, identifier, change, created=created)
                raise InvalidRequest(f"function {name} did not start on Marathon: {failure}; {undone}")
            if trio.current_time() >= deadline:
                state = read_app(app, self.group, self._discovery.probed)
                progress = (
                    f"{len(state.endpoints)} of {state.instances} replicas ready"
                    + (f"; {state.failure}" if state.failure else "")
                    if state is not None
                    else "no replica ready"
                )
                undone = await self._undo(name, identifier, change, created=created)
                raise BackendTimeout(
                    f"function {name}: Marathon's deployment did not finish within "
                    f"{self._deploy_timeout_s:g}s ({progress}); {undone}"
                )
            await trio.sleep(pause)
            pause = min(pause * 1.5, longest)
        with contextlib.suppress(FaasdError):  # The view knows the function now; a failure is retried.
            await self._discovery.refresh()

    async def _undo(self, name: str, identifier: str, change: Change, *, created: bool) -> str:
        """Take back a failed deployment; returns what was done, for the error message."""
        try:
            if created:
                await self._client.delete_app(identifier)
                self._discovery.forget(name)
                await self._wait_gone(name, identifier, UNDO_WAIT_S)
                return "the app was removed"
            await self._client.cancel_deployment(change.deployment)
            return "Marathon rolls the app back to its previous version"
        except (FaasdError, MarathonHttpError) as exc:
            event(log, logging.WARNING, "cannot undo a failed deployment", function=name, error=str(exc))
            return f"undoing it failed ({exc})"
        finally:
            self._discovery.poke()

    async def _wait_gone(self, name: str, identifier: str, timeout_s: float) -> None:
        """Until ``GET`` answers 404 (the app's removal finished), at most ``timeout_s``."""
        pause, longest = SETTLE_POLL_S
        with trio.move_on_after(timeout_s):
            while await self._get(name, identifier) is not None:
                await trio.sleep(pause)
                pause = min(pause * 1.5, longest)
            return
        raise BackendTimeout(f"function {name}: Marathon did not remove app {identifier} within {timeout_s:g}s")


def _failed_task(app: dict[str, Any], version: str) -> str:
    """Mesos's reason when a task of app version ``version`` failed (``lastTaskFailure``)."""
    last = app.get("lastTaskFailure")
    if not version or not isinstance(last, dict) or str(last.get("version", "")) != version:
        return ""
    state = str(last.get("state", "")).removeprefix("TASK_").lower() or "failed"
    message = " ".join(str(last.get("message", "")).split())[:300]
    return f"a replica {state}: {message}" if message else f"a replica {state}"
