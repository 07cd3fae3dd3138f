"""The scheduler: turns the state's apps and deployments into real processes, and back into task states.

One trio task loops every :attr:`Settings.tick_s` (or when woken by a change) and, per app:

* **keeps the instance count** -- launches tasks while fewer than ``instances`` are alive, kills the
  surplus (tasks of an older configuration first, then by ``killSelection``) -- so a task that ends or
  is killed is replaced, after the launch backoff (``backoffSeconds`` growing by ``backoffFactor`` up to
  ``maxLaunchDelaySeconds``, reset by a configuration change) when it failed, finished or was killed
  for failing health checks;
* **replaces tasks of an older configuration** while a restart deployment runs, as a rolling upgrade
  bounded by ``upgradeStrategy`` (`Application Deployments
  <https://mesosphere.github.io/marathon/docs/deployments.html>`_): never fewer than
  ``ceil(instances * minimumHealthCapacity)`` healthy tasks, never more than ``instances * (1 +
  maximumOverCapacity)`` tasks; old tasks that stay after a forced cancel are left alone, as Marathon
  leaves them until the next deployment;
* **stops the tasks of a deleted app**, then forgets it (``app_terminated_event``);
* **finishes deployments** whose target is reached: exactly ``instances`` tasks of the target
  configuration, all ``TASK_RUNNING`` and healthy (every health check alive) and none being killed; a
  delete is done when the last task is gone.

Each task is supervised by a trio task: ``TASK_STAGING`` for :attr:`Settings.launch_delay_s` (the time
Mesos takes to get an offer and start a container; it makes deployments take time), fetch, spawn
(:mod:`.images`, :mod:`.processes`), ``TASK_RUNNING`` with its health checks probed (:mod:`.health`),
then ``TASK_FINISHED`` / ``TASK_FAILED`` when the process ends, or ``TASK_KILLING`` -> ``TASK_KILLED``
when killed. Every change publishes ``status_update_event`` and ``instance_changed_event``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.marathon_emulator.appdef import ceil_fraction, host_port_requests
from tests.marathon_emulator.clock import iso_now
from tests.marathon_emulator.deployments import Deployment
from tests.marathon_emulator.fetcher import FetchError, fetch_all
from tests.marathon_emulator.health import check_loop
from tests.marathon_emulator.images import Runtime, command_for, free_port
from tests.marathon_emulator.processes import DEFAULT_KILL_GRACE_S, TaskProcess, kill_session, sessions_under
from tests.marathon_emulator.state import AppRecord, ClusterState
from tests.marathon_emulator.tasks import AGENT_ID, HOST, Task, task_env

__all__ = ["Scheduler", "Settings"]

log = logging.getLogger(__name__)

_CONDITIONS = {
    "TASK_STAGING": "Staging",
    "TASK_RUNNING": "Running",
    "TASK_KILLING": "Killing",
    "TASK_KILLED": "Killed",
    "TASK_FAILED": "Failed",
    "TASK_FINISHED": "Finished",
}
STOP_SLACK_S = 5.0
"""How much longer than the longest kill grace period stopping every task may take."""


@dataclass(frozen=True)
class Settings:
    """How the emulated cluster behaves."""

    runtime: Runtime
    work_dir: Path
    """Sandboxes go to ``<work_dir>/sandboxes/<task id>``."""
    launch_delay_s: float = 0.0
    """How long a task stays ``TASK_STAGING`` before its process starts."""
    tick_s: float = 0.05
    task_path: str = "/usr/local/bin:/usr/bin:/bin"
    """``PATH`` of every task."""
    agent_host: str = HOST
    """The agent's address: tasks listen there and are reported there (``host``, ``$HOST``)."""


class Scheduler:
    """Runs the tasks of a :class:`~.state.ClusterState` (see the module docstring).

    Resource handling: every task process is supervised in the nursery of :meth:`run`; :meth:`stop` kills
    them all (SIGTERM, grace, SIGKILL) and waits for them before :meth:`run` may be cancelled. Cancelling
    :meth:`run` without :meth:`stop` leaves the processes running: that is what a killed emulator does,
    and a restarted one adopts them.
    """

    def __init__(
        self, state: ClusterState, settings: Settings, save: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.state = state
        self.settings = settings
        self._save = save
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        state.wake = self.wake

    def __repr__(self) -> str:
        tasks = sum(len(record.tasks) for record in self.state.apps.values())
        return f"<Scheduler apps={len(self.state.apps)} tasks={tasks} stopping={self._stopping}>"

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------------

    async def run(
        self,
        saved_tasks: Sequence[dict[str, Any]] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Adopt ``saved_tasks`` (from a previous run), then schedule until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for saved in saved_tasks:
                self._adopt(saved)
            self._kill_unknown()
            task_status.started()
            while True:
                self._tick()
                with trio.move_on_after(self.settings.tick_s):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _tick(self) -> None:
        if not self._stopping:
            for record in list(self.state.apps.values()):
                self._converge(record)
            for deployment in list(self.state.deployments.values()):
                if self._reached(deployment):
                    self.state.finish(deployment)
        self.save()

    def save(self) -> None:
        if self._save is not None and self.state.dirty:
            self._save(self.snapshot())
            self.state.dirty = False

    def snapshot(self) -> dict[str, Any]:
        tasks = [task.to_state() for record in self.state.apps.values() for task in record.tasks.values()]
        return {**self.state.to_state(), "tasks": tasks}

    async def stop(self) -> None:
        """Kill every task and wait for them (the emulated cluster goes away with the emulator)."""
        self._stopping = True
        graces = [DEFAULT_KILL_GRACE_S]
        for record in self.state.apps.values():
            for task in record.tasks.values():
                graces.append(float(task.app.get("taskKillGracePeriodSeconds") or DEFAULT_KILL_GRACE_S))
                self.state.request_kill(task, "the emulator is stopping", on_request=True)
        with trio.move_on_after(max(graces) + STOP_SLACK_S):
            while any(record.tasks for record in self.state.apps.values()):
                await trio.sleep(self.settings.tick_s)
        self.state.dirty = True
        self.save()

    # -- converging ----------------------------------------------------------------------------------

    def _converge(self, record: AppRecord) -> None:
        live = [task for task in record.tasks.values() if not task.killing]
        app = record.app
        if app is None:
            for task in live:
                self.state.request_kill(task, "app deleted", on_request=True)
            if not record.tasks:
                del self.state.apps[record.app_id]
                self.state.bus.publish("app_terminated_event", appId=record.app_id)
                self.state.dirty = True
            return
        config = app["versionInfo"]["lastConfigChangeAt"]
        current = [task for task in live if task.config_version == config]
        old = [task for task in live if task.config_version != config]
        restarting = any(d.kind == "restart" for d in self.state.deployments_of(record.app_id))
        if old and restarting:
            self._roll(record, app, current, old)
            return
        surplus = len(live) - app["instances"]
        if surplus > 0:
            for task in self._kill_order(app, old + current)[:surplus]:
                self.state.request_kill(task, "scaled down", on_request=True)
        elif surplus < 0:
            self._launch(record, -surplus)

    @staticmethod
    def _kill_order(app: dict[str, Any], tasks: list[Task]) -> list[Task]:
        """Old configuration first, then not yet running, then by ``killSelection``."""
        config = app["versionInfo"]["lastConfigChangeAt"]
        youngest_first = app.get("killSelection", "YOUNGEST_FIRST") == "YOUNGEST_FIRST"
        by_age = sorted(tasks, key=lambda task: task.staged_at, reverse=youngest_first)
        return sorted(by_age, key=lambda task: (task.config_version == config, task.running))

    def _roll(self, record: AppRecord, app: dict[str, Any], current: list[Task], old: list[Task]) -> None:
        instances = app["instances"]
        strategy = app["upgradeStrategy"]
        min_healthy = ceil_fraction(instances, strategy["minimumHealthCapacity"])
        max_total = instances + math.floor(round(instances * strategy["maximumOverCapacity"], 9))
        healthy = sum(task.healthy for task in current + old)
        killed = 0
        for task in sorted(old, key=lambda task: task.healthy):
            if not task.healthy or healthy - 1 >= min_healthy:
                healthy -= task.healthy
                killed += 1
                self.state.request_kill(task, "replaced by a new version", on_request=True)
        for task in self._kill_order(app, current)[: max(0, len(current) - instances)]:
            self.state.request_kill(task, "scaled down", on_request=True)
        need = instances - len(current)
        room = max_total - (len(old) - killed) - len(current)
        if need > 0 and room <= 0 and killed == 0 and all(task.healthy for task in current):
            stuck = sorted(old, key=lambda task: task.staged_at)[0]  # No room and no slack: one must go.
            self.state.request_kill(stuck, "replaced by a new version", on_request=True)
        self._launch(record, min(need, room))

    def _ports_in_use(self) -> set[int]:
        return {port for record in self.state.apps.values() for task in record.tasks.values() for port in task.ports}

    def _launch(self, record: AppRecord, count: int) -> None:
        if count <= 0 or trio.current_time() < record.launch_after or record.app is None:
            return
        assert self._nursery is not None
        used = self._ports_in_use()
        requests = host_port_requests(record.app)
        for _ in range(count):
            ports = []
            for requested in requests:
                if requested:
                    if requested in used:
                        return  # No offer has that port free: the instance waits, as on Mesos.
                    ports.append(requested)
                else:
                    port = free_port()
                    while port in used or port in ports:
                        port = free_port()
                    ports.append(port)
            used.update(ports)
            task = Task(record.app_id, record.app, ports, iso_now(), host=self.settings.agent_host)
            record.tasks[task.id] = task
            self._publish_status(task)
            self._nursery.start_soon(self._supervise, record, task, False)
        self.state.dirty = True

    def _reached(self, deployment: Deployment) -> bool:
        record = self.state.apps.get(deployment.app_id)
        if deployment.kind == "none":
            return True
        if deployment.kind == "stop":
            return record is None
        if record is None or record.app is None:
            return False
        config = record.app["versionInfo"]["lastConfigChangeAt"]
        tasks = list(record.tasks.values())
        return len(tasks) == record.app["instances"] and all(
            not task.killing and task.healthy and task.config_version == config for task in tasks
        )

    # -- one task ------------------------------------------------------------------------------------

    def _publish_status(self, task: Task, message: str = "") -> None:
        bus = self.state.bus
        bus.publish("status_update_event", **task.status_event_fields(message))
        bus.publish(
            "instance_changed_event",
            instanceId=task.instance_id,
            condition=_CONDITIONS.get(task.state, "Unknown"),
            runSpecId=task.app_id,
            agentId=AGENT_ID,
            host=task.host,
            runSpecVersion=task.version,
        )

    async def _unless_killed(self, task: Task, seconds: float | None, work: Callable[[], Any] | None = None) -> Any:
        """Sleep ``seconds`` or run ``work()``, cut short when a kill is requested."""
        result = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await task.kill_requested.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            if seconds is not None:
                await trio.sleep(seconds)
            if work is not None:
                result = await work()
            nursery.cancel_scope.cancel()
        return result

    async def _start(self, task: Task) -> tuple[str, str] | None:
        """Stage, fetch and spawn ``task``; returns its final (state, message) if it never ran."""
        await self._unless_killed(task, self.settings.launch_delay_s)
        if task.killing:
            return "TASK_KILLED", task.kill_reason
        sandbox = self.settings.work_dir / "sandboxes" / task.id
        sandbox.mkdir(parents=True, exist_ok=True)
        task.sandbox = sandbox

        async def fetch() -> str | None:
            try:
                await fetch_all(task.app.get("fetch", []), sandbox)
            except FetchError as exc:
                return str(exc)
            return None

        failed = await self._unless_killed(task, None, fetch)
        if failed is not None:
            return "TASK_FAILED", f"Failed to fetch all URIs for container '{task.uuid}': {failed}"
        if task.killing:
            return "TASK_KILLED", task.kill_reason
        argv, env = command_for(task.app, task_env(task, self.settings.task_path), task.ports, self.settings.runtime)
        try:
            task.process = await TaskProcess.spawn(argv, env, sandbox)
        except OSError as exc:
            return "TASK_FAILED", f"Failed to launch container '{task.uuid}': {exc}"
        task.state, task.started_at = "TASK_RUNNING", iso_now()
        self._publish_status(task)
        self.state.dirty = True
        self.save()  # At once: a crash now must leave the process known to the next emulator.
        self.wake()
        return None

    async def _supervise(self, record: AppRecord, task: Task, adopted: bool) -> None:
        try:
            ended = None if adopted else await self._start(task)
            if ended is None:
                ended = await self._watch(task)
        except Exception as exc:  # A bug here must not take the emulator, and every other task, down.
            log.exception("supervising task %s failed", task.id)
            if task.process is not None:
                task.process.kill()
            ended = "TASK_FAILED", f"emulator error: {exc!r}"
        self._finish(record, task, *ended)

    async def _watch(self, task: Task) -> tuple[str, str]:
        """Probe the health checks and honour a kill until the process ends; returns its final state."""
        assert task.process is not None
        env = task_env(task, self.settings.task_path)
        async with trio.open_nursery() as nursery:
            for index in range(len(task.health)):
                nursery.start_soon(check_loop, task, index, env, self._on_health)
            nursery.start_soon(self._killer, task)
            exit = await task.process.wait()
            nursery.cancel_scope.cancel()
        if task.killing:
            return "TASK_KILLED", task.kill_reason
        return ("TASK_FINISHED" if exit.success else "TASK_FAILED"), exit.message

    async def _killer(self, task: Task) -> None:
        assert task.process is not None
        await task.kill_requested.wait()
        task.state = "TASK_KILLING"
        self._publish_status(task, task.kill_reason)
        task.process.terminate(group=(task.app.get("container") or {}).get("type") != "DOCKER")
        await trio.sleep(float(task.app.get("taskKillGracePeriodSeconds") or DEFAULT_KILL_GRACE_S))
        task.process.kill()

    def _finish(self, record: AppRecord, task: Task, state: str, message: str) -> None:
        task.state = state
        record.tasks.pop(task.id, None)
        self._publish_status(task, message)
        if not task.wipe_backoff:
            if state != "TASK_FINISHED":
                self.state.task_failed(record, task, message)
            if record.app is not None:
                record.launch_after = trio.current_time() + record.backoff_s
                factor = float(record.app["backoffFactor"])
                record.backoff_s = min(record.backoff_s * factor, float(record.app["maxLaunchDelaySeconds"]))
        self.state.dirty = True
        self.wake()

    def _on_health(self, task: Task, index: int, previous: dict[str, Any] | None, kill: bool) -> None:
        bus = self.state.bus
        result = task.health[index]
        assert result is not None
        check = task.app["healthChecks"][index]
        if previous is None or previous["alive"] != result["alive"]:
            bus.publish(
                "health_status_changed_event",
                appId=task.app_id,
                instanceId=task.instance_id,
                taskId=task.id,
                version=task.version,
                alive=result["alive"],
            )
            bus.publish(
                "instance_health_changed_event",
                instanceId=task.instance_id,
                runSpecId=task.app_id,
                runSpecVersion=task.version,
                healthy=task.healthy,
            )
        if not result["alive"]:
            bus.publish(
                "failed_health_check_event",
                appId=task.app_id,
                taskId=task.id,
                instanceId=task.instance_id,
                healthCheck=check,
            )
        if kill and not task.killing:
            reason = result.get("lastFailureCause", "")
            bus.publish(
                "unhealthy_instance_kill_event",
                appId=task.app_id,
                taskId=task.id,
                instanceId=task.instance_id,
                version=task.version,
                reason=reason,
                host=task.host,
                slaveId=AGENT_ID,
            )
            self.state.request_kill(task, f"unhealthy: {reason}", on_request=False)
        self.wake()

    # -- adoption ------------------------------------------------------------------------------------

    def _kill_unknown(self) -> None:
        """Kill task processes in our sandboxes that no saved task names -- spawned just before a crash,
        before the state was written -- as Marathon kills the unknown tasks Mesos reports."""
        known = {task.process.pid for r in self.state.apps.values() for task in r.tasks.values() if task.process}
        for session in sessions_under(self.settings.work_dir / "sandboxes") - known:
            log.info("killing unknown task session %d", session)
            kill_session(session)

    def _adopt(self, saved: dict[str, Any]) -> None:
        """Take back a task that outlived the previous emulator: it still runs (same pid and start
        time) and its app still exists -- else it is killed (an unknown task) or forgotten (gone)."""
        assert self._nursery is not None
        record = self.state.apps.get(saved["appId"])
        process = None
        if saved.get("pid") is not None and saved.get("startTicks") is not None:
            process = TaskProcess.adopt(int(saved["pid"]), int(saved["startTicks"]))
        if process is None:
            log.info("task of %s did not survive the restart", saved["appId"])
            return
        if record is None:
            log.info("killing task pid %d of unknown app %s", process.pid, saved["appId"])
            process.kill()
            return
        task = Task(saved["appId"], saved["app"], list(saved["ports"]), saved["stagedAt"], uuid=saved["uuid"])
        task.host = saved.get("host", HOST)  # Where its process listens, whatever this emulator's agent is.
        task.state, task.started_at, task.process = "TASK_RUNNING", saved.get("startedAt"), process
        task.sandbox = Path(saved["sandbox"]) if saved.get("sandbox") else None
        record.tasks[task.id] = task
        self._nursery.start_soon(self._supervise, record, task, True)
