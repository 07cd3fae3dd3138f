"""How the daemon's parts are put together: one function, used by ``faasd up`` and by in-process tests.

:func:`assemble` builds, from a config, a provider and the stores, everything that serves requests --
:class:`~faasd.service.FunctionService`, the autoscaler, the invoke path, the async queue, the
management app -- wired as the daemon runs them, and returns them unstarted in :class:`Parts`. The
daemon (:mod:`faasd.daemon`) starts them in its nursery, binds the HTTP server and handles signals;
a test can instead drive :attr:`Parts.app` (ASGI) directly, with the in-memory provider, and still
exercise the very wiring ``faasd up`` uses.

Who depends on whom (one way): the gateway's routes call the service and ask the autoscaler to explain
itself (:meth:`~faasd.scaler.loop.Autoscaler.explain`); the autoscaler drives the service; the service
drives the provider. Only this module knows them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faasd.calltoken import CallToken
from faasd.config import DaemonConfig
from faasd.credentials import USERNAME
from faasd.fob.routes import FobRoutes, is_loopback_bind
from faasd.fob.snippets import SnippetService
from faasd.gateway.app import GatewayApp
from faasd.gateway.auth import BasicAuth
from faasd.gateway.invoke import Invoker
from faasd.gateway.lazyapp import LazyApp
from faasd.gateway.metrics import GatewayMetrics
from faasd.gateway.proxy import UpstreamPool
from faasd.gateway.throttle import AuthThrottle
from faasd.providers.base import Provider
from faasd.providers.types import FunctionSpec
from faasd.queue.stage import QueueStage
from faasd.registry import EndpointRegistry
from faasd.scaler.loop import Autoscaler
from faasd.scaler.meter import LoadMeter
from faasd.scaler.settings import ScaleSettings
from faasd.service import FunctionService
from faasd.store import AsyncStore
from faasd.timeouts import FunctionTimeouts
from faasd.ui import UiRoute

if TYPE_CHECKING:
    from faasd.queue.queue import AsyncQueue
    from faasd.queue.route import AsyncRoute
    from faasd.queue.settings import QueueDefaults
    from faasd.queue.store import QueueDb

__all__ = ["Parts", "assemble"]


@dataclass(slots=True)
class Parts:
    """The daemon's parts, wired and not started (see :func:`assemble`)."""

    service: FunctionService
    autoscaler: Autoscaler
    invoker: Invoker
    queue_stage: QueueStage
    """The async queue (:mod:`faasd.queue.stage`): built by :func:`assemble` when it is given a
    ``queue_db``, else by whoever runs the parts (:meth:`QueueStage.run`, the daemon once it serves)."""
    snippets: SnippetService
    """The Flock-of-Birds snippets (:mod:`faasd.fob`): loaded and run by whoever runs the parts."""
    metrics: GatewayMetrics
    pool: UpstreamPool
    """Upstream connections to replicas: closed by whoever runs the parts (``await pool.aclose()``)."""
    app: GatewayApp
    """The ASGI application the HTTP server serves."""
    management: LazyApp
    """The management API inside ``app``, loaded once whoever runs the parts calls ``begin()`` (the daemon,
    when it serves) or a request asks for it."""

    @property
    def queue(self) -> AsyncQueue:
        """The async queue, once built (see :attr:`queue_stage`)."""
        queue = self.queue_stage.queue
        if queue is None:
            raise RuntimeError("the async queue is not built yet")
        return queue


def assemble(
    config: DaemonConfig,
    *,
    provider: Provider,
    registry: EndpointRegistry,
    store: AsyncStore,
    queue_db: QueueDb | None,
    call_token: CallToken | None,
    password: str,
    password_file: str | None = None,
    started_at: float | None = None,
) -> Parts:
    """Wire the parts for ``config`` around ``provider`` (which publishes to ``registry``).

    Nothing is started: the caller starts ``provider.run``, loads the service and the queue, and runs
    ``autoscaler.run`` and ``queue.run`` (:func:`faasd.daemon.run` says in which order, and why). With
    ``queue_db`` None the queue is not built here: :meth:`QueueStage.run` opens, builds and runs it later.
    """
    service_ref: list[FunctionService] = []
    timeouts = FunctionTimeouts(
        config.upstream_timeout_s, config.max_upstream_timeout_s, lambda name: service_ref[0].spec(name)
    )
    metrics = GatewayMetrics(ready_replicas=lambda: {name: len(registry.get(name)) for name in service_ref[0].names()})
    registry.calls_started = metrics.started_count

    def removed(name: str) -> None:
        metrics.forget(name)
        snippets.function_removed(name)

    service = FunctionService(
        store,
        provider,
        registry,
        invocations=metrics.invocation_count,
        on_removed=removed,
        check=lambda spec: _check_spec(spec, timeouts, config),
    )
    service_ref.append(service)
    snippets = SnippetService(
        store,
        service,
        registry,
        timeout_s=config.snippet_timeout_s,
        ready_timeout_s=config.ready_timeout_s,
        persistent=bool(getattr(provider, "persistent", False)),
    )
    pool = UpstreamPool()
    registry.upstream = pool
    meter = LoadMeter()
    autoscaler = Autoscaler(service, registry, meter, on_tick=metrics.autoscaler_tick)
    metrics.desired_replicas = autoscaler.desired_replicas
    invoker = Invoker(
        exists=service.exists,
        registry=registry,
        metrics=metrics,
        pool=pool,
        upstream_timeout_s=config.upstream_timeout_s,
        ready_timeout_s=config.ready_timeout_s,
        max_body_bytes=config.max_body_bytes,
        max_json_bytes=config.max_json_bytes,
        meter=meter,
        wake=autoscaler.wake,
        failure=service.failure,
        call_token=call_token,
        timeouts=timeouts,
    )

    def build_queue(db: QueueDb) -> tuple[AsyncQueue, AsyncRoute]:
        from faasd.queue.queue import AsyncQueue, QueueLimits
        from faasd.queue.route import AsyncRoute

        queue = AsyncQueue(
            db,
            invoker,
            spec=lambda name: stored.spec if (stored := service.stored(name)) is not None else None,
            defaults=_queue_defaults(config),
            limits=QueueLimits(
                per_function=config.async_queue_size,
                total=config.async_queue_total,
                stored_bytes=config.async_max_stored_bytes,
                body_bytes=config.max_body_bytes,
            ),
            attempt_timeout_s=lambda name: config.ready_timeout_s + timeouts.for_call(name),
            on_event=metrics.async_event,
            callback_hosts=config.async_callback_hosts,
        )
        return queue, AsyncRoute(queue, invoker, exists=service.exists)

    queue_stage = QueueStage(build_queue)
    if queue_db is not None:
        queue_stage.install(queue_db)
        queue_stage.gate.open()
    autoscaler.queued = queue_stage.waiting_load
    metrics.async_queue = lambda: {
        name: (line.queued, line.running, line.oldest_s) for name, line in queue_stage.stats().items()
    }
    auth = BasicAuth(USERNAME, password)
    throttle = AuthThrottle()  # One count of failed logins for /system/* and /api/*.
    started = time.time() if started_at is None else started_at

    def build_management() -> Any:
        from faasd.gateway.routes_system import create_management_app

        return create_management_app(
            service=service,
            auth=auth,
            throttle=throttle,
            provider_name=provider.name,
            orchestration=provider.orchestration,
            max_body_bytes=config.max_body_bytes,
            max_json_bytes=config.max_json_bytes,
            health=provider.health,
            started_at=started,
            password_file=password_file,
            autoscaler=autoscaler,
            sandbox=getattr(provider, "sandbox_info", None),
            async_queue=metrics.async_queue,
        )

    # Quart loads once the gateway serves (faasd.gateway.lazyapp): calls do not wait for it.
    management = LazyApp("faasd.gateway.routes_system", build_management)
    api = FobRoutes(
        snippets=snippets,
        invoker=invoker,
        auth=auth,
        throttle=throttle,
        open_gen=is_loopback_bind(config.bind),
        max_snippet_bytes=config.max_snippet_bytes,
    )
    app = GatewayApp(
        invoker=invoker,
        management=management,
        metrics=metrics,
        health=provider.health,
        async_route=queue_stage,
        api_route=api,
        ui_route=UiRoute(),
    )
    return Parts(
        service=service,
        autoscaler=autoscaler,
        invoker=invoker,
        queue_stage=queue_stage,
        snippets=snippets,
        metrics=metrics,
        pool=pool,
        app=app,
        management=management,
    )


def _check_spec(spec: FunctionSpec, timeouts: FunctionTimeouts, config: DaemonConfig) -> None:
    """A deploy's checks beyond the spec's own (a 400 naming the key): its scaling labels (a malformed
    one is an error now, not a surprise at the autoscaler's next tick), its timeouts, its async queue
    labels (whether or not the queue is loaded yet: :mod:`faasd.queue.stage`)."""
    from faasd.queue.settings import QueueSettings

    ScaleSettings.from_labels(spec.labels)
    timeouts.check(spec)
    QueueSettings.for_function(spec.labels, spec.annotations, _queue_defaults(config))


def _queue_defaults(config: DaemonConfig) -> QueueDefaults:
    from faasd.queue.settings import QueueDefaults

    return QueueDefaults(
        concurrency=config.async_concurrency,
        attempts=config.async_attempts,
        retry_wait_s=config.async_retry_wait_s,
        retry_max_wait_s=config.async_retry_max_wait_s,
        callback_attempts=config.async_callback_attempts,
        callback_timeout_s=config.async_callback_timeout_s,
    )
