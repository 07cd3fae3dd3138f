"""``faasd up``: the daemon. One ``trio.run``, one root nursery, every long-lived part a task in it.

Tasks (children of the root nursery):

* ``signals`` -- SIGTERM/SIGINT set the shutdown event; a second one cuts the drain short;
* ``provider`` -- the backend's discovery/supervision loop (:meth:`Provider.run`);
* ``gateway`` -- :class:`~faasd.gateway.HttpServer` serving :class:`~faasd.gateway.GatewayApp`, stopping on
  the shutdown event;
* ``scaler`` -- the autoscaler: every second, per function, load -> :func:`faasd.scaler.decide.decide` -> scale;
* ``queue`` -- the async queue (:mod:`faasd.queue`): opened, imported and loaded once the gateway serves
  (:mod:`faasd.queue.stage`; async calls wait for it), then its writer, dispatcher and one task per call
  running;
* ``restore`` -- stored functions applied again, each in its own task (local); for Swarm/Marathon,
  ``backend sync`` instead: keeps the store in step with what the backend runs;
* ``snippets`` -- the Flock-of-Birds snippets (:mod:`faasd.fob`): loaded before the gateway serves, then
  what a crash left half done is settled in the background.

Start order: state dir, credentials and the call token (replicas take calls only from this gateway,
:mod:`faasd.calltoken`), store, backend (Swarm/Marathon: started and read; local: only its stand-in,
:mod:`faasd.providers.deferred`), stored functions *loaded* (known, ``restoring``; for Swarm/Marathon,
read from the backend -- later if it is down), their replica counts kept for one stable window (the
autoscaler has no load samples yet), the gateway binds, the autoscaler starts, then ``ready`` is
logged and told to systemd (``READY=1``: ``/healthz`` answers by then) -- and only then, in the
background, are the local backend started, the async queue (``queue.db`` and its stored calls) and
the management API loaded and the functions restored: a slow ``pip install`` or an invalid stored spec
never delays or stops the start, calls to a function still restoring are held as at zero replicas,
and async calls, deploys and management requests that come first wait for their part
(docs/coldstart.md). Shutdown order: the gateway stops
accepting and drains in-flight calls, and the queue starts no new async call; both are bounded by
``shutdown_timeout`` from the signal; the queue's writes are committed; then the provider, the queue's
calls still running and any restore are cancelled (the local backend stops its replicas, a ``pip`` is
stopped), then the stores close. Exit status 0.

The parts themselves are wired in :func:`faasd.assembly.assemble` (shared with the in-process tests);
this module opens what they need, starts them in order and handles signals.

Error handling: a state dir or database that cannot be used, a port that cannot be bound, is one
error line naming the file (or the reason) and exit status 1 -- see :func:`main_up`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from faasd import __version__, sdnotify
from faasd.assembly import assemble
from faasd.calltoken import CallToken, TokenError
from faasd.calltoken import load_or_create as load_or_create_call_token
from faasd.config import DaemonConfig
from faasd.credentials import load_or_create_password
from faasd.errors import FaasdError, StateError
from faasd.gateway import (
    GatewayApp,
    HttpServer,
    ServerLimits,
    fit_connections,
)
from faasd.gateway.edgerun import run_edge
from faasd.gateway.fastpath import FastInvokeRoute
from faasd.logs import event
from faasd.providers import load_provider
from faasd.providers.base import Provider, SecretLookup
from faasd.providers.deferred import DeferredProvider
from faasd.providers.types import FunctionSpec
from faasd.registry import EndpointRegistry
from faasd.scaler.loop import Autoscaler
from faasd.service import FunctionService
from faasd.store import AsyncStore, Store

__all__ = ["DaemonInfo", "run"]

log = logging.getLogger("faasd.daemon")

SECOND_STAGE_WAIT_S = 0.1
"""After the ready line, how long the second stage (local backend, async queue, management API, metrics
client, restore) waits for the gateway's first answer before it starts anyway: its imports run in worker
threads and hold the interpreter's lock much of the time, and a first ``/healthz`` or call answered
meanwhile would wait for it. A request that needs a part starts that part at once."""

PROVIDER_SYNC_S = 3.0
"""How often the store is brought in step with a persistent backend (discovery of hand-made functions)."""


@dataclass(slots=True)
class DaemonInfo:
    """What a started daemon tells its starter (tests, ``faasd up -f``): where it listens."""

    url: str
    password_file: str | None
    state_dir: str
    started_at: float = field(default_factory=time.time)


async def run(
    config: DaemonConfig,
    *,
    env: Mapping[str, str] | None = None,
    deploy: Sequence[FunctionSpec] = (),
    task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or cancellation); see the module docstring.

    Args:
        deploy: functions to deploy once up (``faasd up -f stack.yml``).
    """
    env = os.environ if env is None else env
    started = time.monotonic()
    _prepare_state_dir(config.state_dir)
    password, password_file = load_or_create_password(config.state_dir, env)
    call_token = _load_call_token(config.state_dir)
    store = AsyncStore(await trio.to_thread.run_sync(Store.open, os.path.join(config.state_dir, "faasd.db")))
    registry = EndpointRegistry()
    provider = _provider(config, registry, store.get_secret, call_token)
    parts = assemble(
        config,
        provider=provider,
        registry=registry,
        store=store,
        queue_db=None,  # Opened once the gateway serves (faasd.queue.stage).
        call_token=call_token,
        password=password,
        password_file=password_file,
    )
    service, autoscaler, queue, app, pool = parts.service, parts.autoscaler, parts.queue_stage, parts.app, parts.pool
    snippets = parts.snippets
    persistent = bool(getattr(provider, "persistent", False))
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, shutdown, nursery.cancel_scope)
            await nursery.start(provider.run)
            await service.load()
            await snippets.load()
            _hold_stored_counts(service, autoscaler)
            gateway_done = trio.Event()
            answered = trio.Event()
            binds = await nursery.start(_serve_gateway, app, config, shutdown, gateway_done, answered)
            await nursery.start(autoscaler.run)
            url = binds[0] if binds else f"http://{config.bind}:{config.port}"
            info = DaemonInfo(url=url, password_file=password_file, state_dir=config.state_dir)
            event(
                log,
                logging.INFO,
                "ready",
                version=__version__,
                url=url,
                provider=provider.name,
                state_dir=config.state_dir,
                password_file=password_file or "$FAASD_PASSWORD",
                functions=len(service.names()),
                startup_ms=round((time.monotonic() - started) * 1000),
            )
            sdnotify.notify(f"READY=1\nSTATUS=serving on {url}", env)
            task_status.started(info)
            port = int(url.rsplit(":", 1)[1]) if binds else config.port
            await nursery.start(queue.run, os.path.join(config.state_dir, "queue.db"), shutdown, port)
            second_stage = [queue.begin, parts.management.begin]  # faasd.queue.stage, faasd.gateway.lazyapp
            if isinstance(provider, DeferredProvider):
                second_stage.append(provider.begin)  # faasd.providers.deferred
            second_stage.append(partial(nursery.start_soon, trio.to_thread.run_sync, parts.metrics.load_client))
            second_stage.append(partial(nursery.start_soon, _restore, service, persistent))
            nursery.start_soon(_second_stage, answered, second_stage)
            await nursery.start(snippets.run)
            for spec in deploy:
                try:
                    await service.deploy(spec)
                except FaasdError as exc:
                    event(log, logging.ERROR, "cannot deploy from stack", function=spec.name, error=exc.message)
            await gateway_done.wait()
            await queue.drain(config.shutdown_timeout_s)
            event(log, logging.INFO, "gateway stopped; stopping replicas")
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await pool.aclose()
            await provider.aclose()
            await store.aclose()
            await queue.aclose()
    event(log, logging.INFO, "stopped")


def _provider(
    config: DaemonConfig, registry: EndpointRegistry, secrets: SecretLookup, call_token: CallToken
) -> Provider:
    """The backend: the local one with ``sandbox = auto`` is built and started once the gateway serves
    (its calls wait for it: :mod:`faasd.providers.deferred`); with a sandbox mode asked for by name, now,
    so that a mode that does not work here stops the daemon before its ready line; Swarm and Marathon
    now, since the daemon reads their deployments before it serves."""
    build = partial(
        load_provider, config.provider, config=config, registry=registry, secrets=secrets, call_token=call_token
    )
    if config.provider != "local" or config.sandbox != "auto":
        return build()
    return DeferredProvider(
        name="local",
        orchestration="local",
        persistent=False,
        module="faasd.providers.local",
        build=build,
        pending_info={"mode": "pending", "requested": config.sandbox, "isolated": False},
    )


async def _serve_gateway(
    app: GatewayApp,
    config: DaemonConfig,
    shutdown: trio.Event,
    done: trio.Event,
    answered: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    limits = ServerLimits(
        header_timeout_s=config.header_timeout_s,
        read_timeout_s=config.read_timeout_s,
        keep_alive_timeout_s=config.keep_alive_timeout_s,
        write_timeout_s=config.write_timeout_s,
        max_connections=fit_connections(config.max_connections),
        max_header_bytes=config.max_header_bytes,
    )
    server = HttpServer(
        app,
        bind=[f"{config.bind}:{config.port}"],
        limits=limits,
        graceful_timeout_s=config.shutdown_timeout_s,
        fast_route=FastInvokeRoute(app.invoker),
        answered=answered,
    )
    try:
        async with trio.open_nursery() as edge_nursery:
            if config.invoke_edge:
                edge_nursery.start_soon(run_edge, server, app.invoker, config.shutdown_timeout_s, shutdown, answered)
            with trio.CancelScope() as serving:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_end_when_drained, server, config, shutdown, serving)
                    await server.serve(shutdown_trigger=shutdown.wait, task_status=task_status)
                    nursery.cancel_scope.cancel()
            if not server.serving.is_set():
                edge_nursery.cancel_scope.cancel()
    finally:
        done.set()


async def _second_stage(answered: trio.Event, begin: Sequence[Callable[[], object]]) -> None:
    """Start the second stage once the gateway answered its first request, or after
    :data:`SECOND_STAGE_WAIT_S` (see there)."""
    with trio.move_on_after(SECOND_STAGE_WAIT_S):
        await answered.wait()
    for start in begin:
        start()


async def _end_when_drained(
    server: HttpServer, config: DaemonConfig, shutdown: trio.Event, serving: trio.CancelScope
) -> None:
    """After the shutdown signal, stop the HTTP server as soon as no request is in flight.

    Why: the server's graceful shutdown closes idle connections at once but lets every request that
    has begun run for up to ``shutdown_timeout`` -- also one whose client stalls in the middle of its
    body, or trickles it (hypercorn 0.18's own TCP layer, used before, even held idle keep-alive
    connections: 30 s after all calls had finished). Calls in flight still get up to
    ``shutdown_timeout`` to finish, except those waiting for their client's request body: a slow
    upload is the client's to retry.
    """
    await shutdown.wait()
    with trio.move_on_after(config.shutdown_timeout_s):
        while server.working():
            await trio.sleep(0.01)
    serving.cancel()


async def _watch_signals(shutdown: trio.Event, root: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                event(log, logging.INFO, "shutting down", signal=signal.Signals(signum).name)
                sdnotify.notify("STOPPING=1")
                shutdown.set()
            else:
                event(log, logging.WARNING, "second signal: stopping now", signal=signal.Signals(signum).name)
                root.cancel()


def _hold_stored_counts(service: FunctionService, autoscaler: Autoscaler) -> None:
    """Keep each known function's stored replica count as a floor for one stable window.

    Why: a started daemon has no load samples yet; deciding from that empty window scaled every
    function down to its minimum at the first tick, undoing the counts just restored (a manual scale,
    or a scale-up for load). This is rule 7 of :mod:`faasd.scaler.decide` applied to the restored counts.
    """
    for name in service.names():
        stored = service.stored(name)
        if stored is not None:
            autoscaler.manual_scale(name, stored.replicas)


async def _restore(service: FunctionService, persistent: bool) -> None:
    """Restore the stored functions (each in its own task: see :meth:`FunctionService.restore`); then,
    for a backend that keeps deployments itself, follow it."""
    started = time.monotonic()
    await service.restore()
    event(
        log,
        logging.INFO,
        "functions restored",
        functions=len(service.names()),
        failed=sum(1 for name in service.names() if service.failure(name)),
        restore_ms=round((time.monotonic() - started) * 1000),
    )
    if persistent:
        await _follow_provider(service)


async def _follow_provider(service: FunctionService) -> None:
    """For backends that keep deployments themselves: keep the store in step with them (functions
    created or deleted behind faasd's back), every few seconds."""
    while True:
        await trio.sleep(PROVIDER_SYNC_S)
        try:
            await service.sync_from_provider()
        except FaasdError as exc:
            event(log, logging.WARNING, "cannot read the backend", error=exc.message)


def _prepare_state_dir(path: str) -> None:
    """Create the state dir (0700) if needed, and check this user can write in it.

    Raises:
        StateError: it is not a directory, cannot be created, or is not writable; naming it.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise StateError(f"state dir {path} exists and is not a directory") from None
    except OSError as exc:
        raise StateError(f"state dir {exc.filename or path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"state dir {path} is not writable by this user (uid {os.geteuid()})")
    try:
        os.chmod(path, 0o700)  # Whatever the umask or an older faasd left: it holds every secret.
    except OSError as exc:
        raise StateError(f"state dir {path}: cannot make it private: {exc.strerror or exc}") from None


def _load_call_token(state_dir: str) -> CallToken:
    """The daemon's call token (:mod:`faasd.calltoken`), made on first start.

    Raises:
        StateError: the token file cannot be used (readable by others, not a token, unreadable), naming it.
    """
    try:
        return CallToken(load_or_create_call_token(state_dir))
    except TokenError as exc:
        raise StateError(str(exc)) from None
    except OSError as exc:
        raise StateError(_error_line(exc)) from None


def main_up(config: DaemonConfig, deploy: Sequence[FunctionSpec] = ()) -> int:
    """Run the daemon in this process; the exit status (1 with one line when it cannot start).

    Error handling: a :class:`~faasd.errors.FaasdError` (e.g. a :class:`~faasd.errors.StateError`) or
    an ``OSError`` (a port taken, a file that cannot be written: its name is given) that stops the
    daemon is logged as one ``cannot run`` line; anything else is a bug and keeps its traceback.
    """
    from faasd import logs

    logs.configure(config.log_level)
    os.umask(0o077)  # Whatever the daemon creates is its own; replicas are given what they need explicitly.
    try:
        trio.run(partial(run, config, deploy=deploy))
    except (OSError, FaasdError, BaseExceptionGroup) as exc:
        error = _only_error(exc)
        if error is None:
            raise
        event(log, logging.ERROR, "cannot run", error=_error_line(error))
        return 1
    return 0


def _only_error(exc: BaseException) -> OSError | FaasdError | None:
    """The OSError or FaasdError behind ``exc`` when that is all there is, else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, (OSError, FaasdError)) else None


def _error_line(error: OSError | FaasdError) -> str:
    if isinstance(error, FaasdError):
        return error.message
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason
