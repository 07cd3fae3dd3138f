"""The emulator as one trio task: state, scheduler, event bus and HTTP server, started and stopped together.

:func:`serve` binds (port 0: any free port), reports its URL through ``task_status``, serves until
``stop`` is set, then stops the way a cluster goes away: event streams end, the HTTP server closes,
every task is killed (SIGTERM, grace, SIGKILL) and the state is saved without them, so that the next
emulator on the same state file starts the apps' tasks anew. A process killed instead (SIGKILL) stops
nothing: its tasks keep running and the next emulator on the state file adopts them (a Marathon leader
failover: Mesos keeps running the tasks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from tests.marathon_emulator.events import EventBus
from tests.marathon_emulator.images import Runtime
from tests.marathon_emulator.routes import Api
from tests.marathon_emulator.scheduler import Scheduler, Settings
from tests.marathon_emulator.state import ClusterState
from tests.marathon_emulator.store import Store
from tests.marathon_emulator.tasks import HOST
from tests.marathon_emulator.web import Auth, Router

__all__ = ["EmulatorConfig", "serve"]

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything an emulator needs; see ``python -m tests.marathon_emulator --help``."""

    runtime: Runtime
    work_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    state_file: Path | None = None
    launch_delay_s: float = 0.0
    auth: Auth = field(default_factory=Auth)
    agent_host: str = HOST
    """The one agent's address: where tasks listen and are reported (a loopback address other than the
    API's shows whether a client calls a task at its ``host``)."""


async def serve(
    config: EmulatorConfig, stop: trio.Event, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the emulator until ``stop`` is set (see the module docstring); ``task_status`` gets its URL.

    Raises:
        ValueError: the state file is not one this emulator wrote.
    """
    store = Store(config.state_file)
    saved = store.load()
    bus = EventBus()
    state = ClusterState(bus)
    state.load(saved)
    settings = Settings(
        runtime=config.runtime,
        work_dir=config.work_dir,
        launch_delay_s=config.launch_delay_s,
        agent_host=config.agent_host,
    )
    scheduler = Scheduler(state, settings, save=store.save)
    router = Router(config.auth)
    api = Api(state, bus, scheduler.save, router)
    http_config = HypercornConfig()
    http_config.bind = [f"{config.host}:{config.port}"]
    http_config.accesslog = None
    http_config.errorlog = logging.getLogger("tests.marathon_emulator.http")
    http_config.graceful_timeout = GRACEFUL_TIMEOUT_S
    http_stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(scheduler.run, saved.get("tasks", [])))
        binds = await nursery.start(
            partial(hypercorn_serve, router, http_config, shutdown_trigger=http_stopped.wait)  # type: ignore[arg-type]
        )
        url = binds[0]
        api.url = url
        router.extra_headers["X-Marathon-Leader"] = url
        task_status.started(url)
        await stop.wait()
        bus.close()
        http_stopped.set()
        await scheduler.stop()
        nursery.cancel_scope.cancel()
