"""The Swarm backend's :class:`SwarmProvider`: the operations (the package docstring says what the
backend does; discovery, views, Docker I/O and logs are in the modules beside this one).

Each operation that writes holds the function's lock (:class:`~faasd.namelocks.NameLocks`), builds the
service document (:mod:`.spec`), writes it (:mod:`.services`), and marks the function for a re-read
(:meth:`.discovery.Discovery.mark_dirty`): what runs is always what the swarm says, never what faasd
wrote.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import trio

from faasd.calltoken import CallToken, TokenError
from faasd.errors import BackendUnavailable, Conflict, FaasdError, FunctionNotFound, InvalidRequest
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.base import SecretLookup
from faasd.providers.swarm import logs as swarm_logs
from faasd.providers.swarm.client import DockerClient
from faasd.providers.swarm.discovery import RESYNC_S, Discovery
from faasd.providers.swarm.engines import Engines
from faasd.providers.swarm.handler import (
    LABEL_HANDLER,
    HandlerConfig,
    archive_config_id,
    config_name,
    runs_faasd_watchdog,
)
from faasd.providers.swarm.services import (
    create_service,
    ensure_config,
    ensure_network,
    ensure_secret,
    read_archives,
    remove_unused_handlers,
    remove_unused_secrets,
    scale_service,
    swarm_call_token,
    update_service,
)
from faasd.providers.swarm.site import Site
from faasd.providers.swarm.spec import (
    CALL_TOKEN_CONFIG,
    CALL_TOKEN_LABEL,
    LABEL_OWNER,
    LABEL_SECRET,
    SECRET_OWNER,
    SecretRef,
    call_token_secret_name,
    check_spec,
    parse_docker_time,
    secret_version,
    service_spec,
    spec_from_service,
)
from faasd.providers.swarm.views import Views
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry

__all__ = ["DEFAULT_IMAGE", "SwarmProvider", "SwarmStatistics"]

log = logging.getLogger("faasd.providers.swarm")

DEFAULT_IMAGE = "faasd/watchdog:latest"
"""What a spec without ``image`` runs (``faasd build-base`` makes it): the watchdog and busybox."""


@dataclass(frozen=True, slots=True)
class SwarmStatistics:
    """Counts as of the call."""

    up: bool
    functions: int
    tasks: int
    ready_tasks: int
    events: int
    """Docker events handled since the start."""
    refreshes: int
    resyncs: int


class SwarmProvider:
    """Runs functions as Docker Swarm services (see the package docstring).

    Args:
        registry: where ready tasks are published.
        secrets: the daemon's secret store (name -> value, None when missing); Docker secrets are
            made from it at deploy time.
        docker_host: dockerd's address; empty: ``$DOCKER_HOST``, else the local socket.
        network: the attachable overlay network functions join (created when missing); every
            service attached to it is a function too (:class:`~.spec.FunctionRule`).
        route: ``host-port`` or ``overlay-dns`` (how the daemon reaches tasks), or ``auto``: chosen
            from where the daemon runs when it connects (:mod:`.placement`).
        pull: let Swarm pull images missing on this engine from their registry (off: such a deploy
            is refused, nothing ever reaches a registry).
        default_image: what a spec without ``image`` runs.
        engines: Docker engine addresses of the swarm's other nodes: every deploy copies the image
            to those missing it, and a new task's port there is read from its node's engine
            (:mod:`.engines`).
        stop_grace_s: between SIGTERM and SIGKILL when Swarm stops a task.
        resync_s: period of the full re-read.
        extra_labels: added to every service and Docker secret created (tests mark what they make).
        call_token: mounted into every function as a Docker secret; replicas refuse calls without it.
            On connecting, the value is replaced by the swarm's own when there is one (Docker config
            ``faasd-call-token``), else the swarm's is made from it: every daemon on one swarm, and a
            daemon restarted with a new state dir, calls the functions already running.

    Resource handling:
        Services, secrets and the network live in the swarm, not in this object: cancelling
        :meth:`run` or :meth:`aclose` stops watching and probing and closes the Docker clients, and
        leaves every function running (a restarted daemon finds them again). The event stream's and
        log followers' worker threads end before :meth:`run` (or the log iterator) returns.
    """

    name = "swarm"
    orchestration = "swarm"
    persistent = True

    def __init__(
        self,
        *,
        registry: EndpointRegistry,
        secrets: SecretLookup | None = None,
        docker_host: str = "",
        network: str = "functions",
        route: str = "auto",
        pull: bool = False,
        default_image: str = DEFAULT_IMAGE,
        engines: Sequence[str] = (),
        stop_grace_s: float = 5.0,
        resync_s: float = RESYNC_S,
        extra_labels: Mapping[str, str] | None = None,
        call_token: CallToken | None = None,
    ) -> None:
        self._site = Site(network, route)
        self._client = DockerClient(docker_host)
        self._views = Views(registry)
        self._engines = Engines(engines)
        self._discovery = Discovery(
            self._client,
            self._site,
            self._views,
            resync_s=resync_s,
            on_connect=self._on_connect,
            engines=self._engines.client_for if self._engines else None,
        )
        self._secrets = secrets
        self._pull = pull
        self._default_image = default_image
        self._stop_grace_s = stop_grace_s
        self._extra_labels = dict(extra_labels or {})
        self._call_token = call_token
        self._network_lock = trio.Lock()
        self._locks = NameLocks()
        self._archives: dict[str, bytes] = {}
        """Handler archives by Docker config ID (a config's data never changes): what services report."""
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<SwarmProvider {self._client.where} up={stats.up} route={self._site.route} "
            f"functions={stats.functions} tasks={stats.tasks} ready={stats.ready_tasks}>"
        )

    def statistics(self) -> SwarmStatistics:
        views = self._views.all()
        discovery = self._discovery
        return SwarmStatistics(
            up=discovery.up,
            functions=len(views),
            tasks=sum(len(view.tasks) for view in views),
            ready_tasks=sum(view.ready_count for view in views),
            events=discovery.events,
            refreshes=discovery.refreshes,
            resyncs=discovery.resyncs,
        )

    def health(self) -> tuple[bool, str]:
        if not self._discovery.up:
            return False, self._discovery.reason
        stats = self.statistics()
        return True, (
            f"swarm manager at {self._client.where}: {stats.functions} functions, {stats.ready_tasks} ready replicas"
        )

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the swarm until cancelled (:meth:`.discovery.Discovery.run`); background work of the
        operations (secret cleanup, log readers) runs here too.

        Calls ``task_status.started()`` once the first full view is published, or as soon as dockerd
        turns out to be unreachable (the daemon then starts degraded and this keeps reconnecting).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._discovery.run)
                task_status.started()
        finally:
            self._nursery = None

    async def aclose(self) -> None:
        self._client.close()
        self._engines.close()

    async def _on_connect(self) -> None:
        """On every connection to dockerd: where the daemon runs, and the swarm's call token."""
        await self._site.locate(self._client)
        try:
            await self._adopt_call_token()
        except BackendUnavailable:
            raise
        except FaasdError as exc:  # Deploys retry it; discovery must not wait for it.
            event(log, logging.WARNING, "cannot read the swarm's call token", error=exc.message)

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        check_spec(spec)
        async with self._locks.hold(spec.name), self._settling_handlers(spec.name):
            image, image_user = await self._resolve_image(
                spec.image or self._default_image, archive=bool(spec.handler_archive)
            )
            secrets = await self._docker_secrets(spec.secrets)
            network = await self._ensure_network()
            document = service_spec(
                spec,
                image=image,
                replicas=replicas,
                network=network,
                route=await self._site.current_route(self._client),
                secrets=secrets,
                stop_grace_s=self._stop_grace_s,
                extra_labels=self._extra_labels,
                call_token=await self._call_token_ref(),
                handler=await self._handler_config(spec),
                image_user=image_user,
            )
            existing = await self._inspect(spec.name, must_exist=False)
            if existing is None:
                await self._client.call(f"creating {spec.name}", functools.partial(create_service, document=document))
                event(log, logging.INFO, "service created", function=spec.name, replicas=replicas, image=image[:19])
            else:
                old = spec_from_service(existing)
                await self._client.call(
                    f"updating {spec.name}", functools.partial(update_service, name=spec.name, document=document)
                )
                event(log, logging.INFO, "service replaced", function=spec.name, replicas=replicas, image=image[:19])
                self._collect_secrets(old.secrets)
            self._discovery.mark_dirty(spec.name)
            self._collect_secrets(spec.secrets)

    async def update(self, spec: FunctionSpec) -> None:
        check_spec(spec)
        async with self._locks.hold(spec.name), self._settling_handlers(spec.name):
            existing = await self._inspect(spec.name)
            assert existing is not None
            replicas = ((existing["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
            image, image_user = await self._resolve_image(
                spec.image or self._default_image, archive=bool(spec.handler_archive)
            )
            secrets = await self._docker_secrets(spec.secrets)
            network = await self._ensure_network()
            document = service_spec(
                spec,
                image=image,
                replicas=int(replicas),
                network=network,
                route=await self._site.current_route(self._client),
                secrets=secrets,
                stop_grace_s=self._stop_grace_s,
                extra_labels=self._extra_labels,
                call_token=await self._call_token_ref(),
                handler=await self._handler_config(spec),
                image_user=image_user,
            )
            document["Mode"] = existing["Spec"].get("Mode") or document["Mode"]
            old = spec_from_service(existing)
            await self._client.call(
                f"updating {spec.name}", functools.partial(update_service, name=spec.name, document=document)
            )
            event(log, logging.INFO, "service updated", function=spec.name, image=image[:19])
            self._discovery.mark_dirty(spec.name)
            self._collect_secrets((*old.secrets, *spec.secrets))

    async def remove(self, name: str) -> None:
        validate_name(name, "function name")
        async with self._locks.hold(name):
            existing = await self._inspect(name)
            assert existing is not None
            self._views.drop(name)
            await self._client.call(
                f"removing {name}",
                lambda api: api.remove_service(existing["ID"]),
                not_found=f"No such function: {name}",
            )
            event(log, logging.INFO, "service removed", function=name)
            self._collect_secrets(spec_from_service(existing).secrets)
            await self._collect_handlers(name)

    async def scale(self, name: str, replicas: int) -> None:
        """Set the service's replica count through its raw spec (never ``Service.scale()``)."""
        validate_name(name, "function name")
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        async with self._locks.hold(name):
            await self._client.call(
                f"scaling {name}",
                functools.partial(scale_service, name=name, replicas=replicas, rule=self._site.rule),
                not_found=f"No such function: {name}",
            )
        event(log, logging.DEBUG, "service scaled", function=name, replicas=replicas)
        self._discovery.mark_dirty(name)

    async def list(self) -> list[FunctionStatus]:
        """Every function service, its desired replicas, and the ready ones as faasd probed them.

        Before dockerd was ever reached the answer is empty rather than an error, so a daemon started
        while Docker is down comes up (degraded) and adopts the functions once it is back.
        """
        try:
            services = await self._client.call("listing functions", lambda api: api.services())
        except BackendUnavailable:
            if self._discovery.connected_once:
                raise
            return []
        await self._read_archives(services, prune=True)
        statuses = []
        rule = self._site.rule
        for service in services:
            name = rule.name(service)
            if name is None:
                continue
            try:
                statuses.append(self._status(service))
            except InvalidRequest as exc:
                event(log, logging.DEBUG, "service ignored", service=name, error=exc.message)
        return sorted(statuses, key=lambda status: status.name)

    async def status(self, name: str) -> FunctionStatus:
        validate_name(name, "function name")
        existing = await self._inspect(name)
        assert existing is not None
        await self._read_archives([existing])
        return self._status(existing)

    def _status(self, service: dict[str, Any]) -> FunctionStatus:
        spec = spec_from_service(service, self._archives)
        mode = (service.get("Spec") or {}).get("Mode") or {}
        view = self._views.get(spec.name)
        available = view.ready_count if view is not None else 0
        replicated = mode.get("Replicated")
        replicas = int(replicated.get("Replicas", 0)) if replicated else available
        reason = ""
        if view is not None and not available:
            reason = self._views.not_ready_reason(view, route=self._site.route, network=self._site.network)
        return FunctionStatus(
            spec=spec,
            replicas=replicas,
            available_replicas=available,
            created_at=parse_docker_time(str(service.get("CreatedAt", ""))),
            state="failed" if reason else "deployed",
            reason=reason,
        )

    async def _inspect(self, name: str, *, must_exist: bool = True) -> dict[str, Any] | None:
        """The service named ``name`` if it is a function; None or FunctionNotFound otherwise.

        Raises:
            FunctionNotFound: no such function and ``must_exist``.
            Conflict: a service of that name exists but is not a function (only when not ``must_exist``:
                deploy must not take it over).
        """
        missing = f"No such function: {name}"
        try:
            service: dict[str, Any] = await self._client.call(
                f"inspecting {name}", lambda api: api.inspect_service(name), not_found=missing
            )
        except FunctionNotFound:
            if must_exist:
                raise
            return None
        if (service.get("Spec") or {}).get("Name") != name:
            # inspect also matches an ID or an ID prefix: only the exact name counts.
            if must_exist:
                raise FunctionNotFound(missing)
            return None
        if self._site.rule.name(service) is None:
            if must_exist:
                raise FunctionNotFound(missing)
            raise Conflict(
                f"a Swarm service named {name} exists and is not a function (no com.openfaas.function label, "
                f"not on network {self._site.network}, or this daemon's own service)"
            )
        return service

    async def _resolve_image(self, reference: str, *, archive: bool = False) -> tuple[str, str | None]:
        """The image ID ``reference`` names on this engine (the reference itself when pulling is allowed),
        and the image's ``USER`` ("" for root) when it runs faasd's watchdog, else None (``spec.run_as``).

        ``archive``: the function has a handler archive, which only faasd's watchdog unpacks.

        Raises:
            InvalidRequest: the image is not on this engine and ``pull`` is off; or ``archive`` and
                the image does not start faasd's watchdog.
        """

        def resolve(api: docker.APIClient) -> dict[str, Any] | None:
            try:
                return dict(api.inspect_image(reference))
            except docker.errors.ImageNotFound:
                return None

        image = await self._client.call(f"inspecting image {reference}", resolve)
        if image is not None:
            if archive and not runs_faasd_watchdog(image):
                raise InvalidRequest(
                    f"image {reference} does not start faasd's watchdog (its entrypoint is "
                    f"{(image.get('Config') or {}).get('Entrypoint')}), which is what unpacks a handlerArchive on "
                    "swarm: leave the image out (faasd's base image runs it), or use one built FROM it ('faasd build')"
                )
            if self._engines:
                copied = await self._engines.distribute(self._client, str(image["Id"]), reference)
                if copied:
                    event(log, logging.INFO, "image copied", image=reference, engines=",".join(copied))
            user = str((image.get("Config") or {}).get("User") or "") if runs_faasd_watchdog(image) else None
            return str(image["Id"]), user
        if self._pull:
            return reference, None
        raise InvalidRequest(
            f"image {reference} is not on this Docker engine; build it ('faasd build-base', 'faasd build DIR') "
            "or load it ('docker load'); faasd pulls from registries only with swarm_pull = true"
        )

    async def _ensure_network(self) -> str:
        """The overlay network's ID, creating it (attachable, labelled) when missing."""
        async with self._network_lock:
            network_id = await self._client.call(
                f"preparing network {self._site.network}", functools.partial(ensure_network, name=self._site.network)
            )
        self._site.add_network(network_id)
        return network_id

    async def _handler_config(self, spec: FunctionSpec) -> HandlerConfig | None:
        """The Docker config holding the function's handler archive (made when missing), or None."""
        if not spec.handler_archive:
            return None
        docker_name = config_name(spec.name, spec.handler_archive)
        labels = {LABEL_OWNER: SECRET_OWNER, LABEL_HANDLER: spec.name, **self._extra_labels}
        docker_id = await self._client.call(
            f"storing the handler archive of {spec.name}",
            functools.partial(ensure_config, docker_name=docker_name, value=spec.handler_archive, labels=labels),
        )
        self._archives[docker_id] = spec.handler_archive
        return HandlerConfig(docker_id=docker_id, docker_name=docker_name)

    @contextlib.asynccontextmanager
    async def _settling_handlers(self, name: str) -> AsyncIterator[None]:
        """Around a write of ``name``'s service: its unused handler-archive configs are removed after,
        also when the write failed (the config made for it would be left over otherwise)."""
        try:
            yield
        except FaasdError:
            await self._collect_handlers(name)
            raise
        await self._collect_handlers(name)

    async def _collect_handlers(self, name: str) -> None:
        """Remove the function's handler-archive configs its service no longer uses (nor a rollback
        of it): under the function's lock, so a deploy never finds its config removed under it.
        Failures are logged: a config left over is removed by the next deploy or removal."""
        try:
            removed = await self._client.call(
                f"removing unused handler archives of {name}", functools.partial(remove_unused_handlers, function=name)
            )
        except FaasdError as exc:
            event(log, logging.WARNING, "handler archive cleanup failed", function=name, error=exc.message)
            return
        for config_id in removed:
            self._archives.pop(config_id, None)
        if removed:
            event(log, logging.DEBUG, "unused handler archives removed", function=name, configs=len(removed))

    async def _read_archives(self, services: Sequence[Mapping[str, Any]], *, prune: bool = False) -> None:
        """Have the handler archives of ``services`` in the cache (one listing when any is missing);
        ``prune``: ``services`` are all there are, forget the archives of the others."""
        wanted = set()
        for service in services:
            config_id = archive_config_id(((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec"))
            if config_id is not None:
                wanted.add(config_id)
        missing = wanted - self._archives.keys()
        if missing:
            read = functools.partial(read_archives, config_ids=missing)
            found = await self._client.call("reading handler archives", read)
            self._archives.update(found)
        if prune:
            for config_id in self._archives.keys() - wanted:
                del self._archives[config_id]

    async def _adopt_call_token(self) -> None:
        """Use the swarm's call token (making it from ours when the swarm has none yet)."""
        token = self._call_token
        if token is None:
            return
        labels = {LABEL_OWNER: SECRET_OWNER, CALL_TOKEN_LABEL: "true", **self._extra_labels}
        value = await self._client.call(
            "reading the call token", functools.partial(swarm_call_token, value=token.value, labels=labels)
        )
        if value != token.value:
            try:
                token.set(value)
            except TokenError as exc:
                event(log, logging.ERROR, f"Docker config {CALL_TOKEN_CONFIG} is not a call token", error=str(exc))
                return
            event(log, logging.INFO, "using the swarm's call token", config=CALL_TOKEN_CONFIG)

    async def _call_token_ref(self) -> SecretRef | None:
        """The Docker secret holding the call token for the services deployed now (made when missing;
        the swarm's copy is made again too if someone removed it)."""
        token = self._call_token
        if token is None:
            return None
        await self._adopt_call_token()
        docker_name = call_token_secret_name(token.value)
        labels = {LABEL_OWNER: SECRET_OWNER, CALL_TOKEN_LABEL: "true", **self._extra_labels}
        docker_id = await self._client.call(
            "creating the call token secret",
            functools.partial(ensure_secret, docker_name=docker_name, value=token.value, labels=labels),
        )
        return SecretRef(name="", docker_id=docker_id, docker_name=docker_name)

    async def _docker_secrets(self, names: Sequence[str]) -> builtins.list[SecretRef]:
        """A Docker secret per faasd secret, named after a digest of its value (created when missing).

        Raises:
            InvalidRequest: a secret is not in the daemon's store (the message names it).
        """
        refs = []
        for name in names:
            value = await self._secrets(name) if self._secrets is not None else None
            if value is None:
                raise InvalidRequest(f"secret {name!r} not found; create it first (POST /system/secrets)")
            docker_name = secret_version(name, value)
            labels = {LABEL_OWNER: SECRET_OWNER, LABEL_SECRET: name, **self._extra_labels}
            docker_id = await self._client.call(
                f"creating secret {name}",
                functools.partial(ensure_secret, docker_name=docker_name, value=value, labels=labels),
            )
            refs.append(SecretRef(name=name, docker_id=docker_id, docker_name=docker_name))
        return refs

    def _collect_secrets(self, names: Sequence[str]) -> None:
        """In the background: remove versions of these secrets no service uses any more."""
        if not names or self._nursery is None:
            return

        async def collect() -> None:
            try:
                removed = await self._client.call(
                    "removing unused secrets", functools.partial(remove_unused_secrets, names=set(names))
                )
            except FaasdError as exc:
                event(log, logging.DEBUG, "secret cleanup failed", error=exc.message)
                return
            if removed:
                event(log, logging.DEBUG, "unused secret versions removed", secrets=",".join(removed))

        self._nursery.start_soon(collect)

    # -- logs ---------------------------------------------------------------------------------------

    async def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """Lines of the function's tasks (``docker service logs`` with details), oldest first.

        Without ``follow``: at most ``tail`` (else :data:`~.logs.LOG_LINES_MAX`) lines, merged across
        tasks by time. With ``follow``: the last ``tail`` lines of each task, then new lines as they
        come (:func:`.logs.follow`: closing the iterator ends its reader thread).
        """
        validate_name(request.name, "function name")
        await self._inspect(request.name)
        not_found = f"No such function: {request.name}"
        if not request.follow:
            lines = await self._client.call(
                f"reading logs of {request.name}",
                functools.partial(swarm_logs.read_logs, request=request),
                not_found=not_found,
            )
            for message in lines:
                yield message
            return
        if self._nursery is None:
            raise BackendUnavailable("the swarm backend is not running")
        stream = await self._client.call(
            f"following logs of {request.name}",
            functools.partial(swarm_logs.open_logs, request=request),
            not_found=not_found,
        )
        async with contextlib.aclosing(swarm_logs.follow(stream, request, self._nursery)) as messages:
            async for message in messages:
                yield message
