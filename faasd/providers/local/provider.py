"""The ``local`` backend: every replica is a ``faasd watchdog`` process on 127.0.0.1, supervised here.

The embedded default: no container engine, no network beyond loopback. A function is a working
directory plus N replica processes; the daemon's store keeps the desired state and re-deploys after a
restart, so there is nothing to discover when :meth:`LocalProvider.run` starts.

On disk (under the daemon's state dir; in ``uid`` mode under a work root outside it, see
:mod:`faasd.sandbox.files`)::

    functions/<name>/            the function's working directory (the replicas' cwd): the handler
                                 archive unpacked (deploy --handler), plus .secrets/
    functions/<name>/.secrets/   one file per secret, mode 0400 (0440 for the function's own group)
    replicas/<replica id>/       per replica: tmp/ (its TMPDIR) and .lock (the watchdog's lock_file)
    staging/                     working dirs being built, and old ones waiting for their replicas to end

**Sandbox.** Functions are untrusted: each replica runs in the sandbox decided when :meth:`run` starts
(``sandbox = auto | bwrap | uid | none``, docs/sandbox.md; the planning is in :mod:`faasd.sandbox`).
In ``bwrap`` mode a replica sees its working dir read-only at ``/home/app``, its secrets at
``/var/openfaas/secrets``, a private ``/tmp`` and nothing of the daemon; as root each function also has
a uid of its own (``uid`` mode: that alone). The spec's ``limits.memory`` and the labels
``com.faasd.limits.processes``/``com.faasd.limits.open_files`` become the replica's rlimits. The sandbox
wraps the replica once, at its start: calls pay nothing for it.

**Secrets.** An OpenFaaS function reads ``/var/openfaas/secrets/<name>``; a local function reads
``$secret_mount_path/<name>`` (the watchdog passes its environment on to the function): that very path
in ``bwrap`` mode, else ``<functions dir>/<name>/.secrets/<name>``. A relative ``./.secrets/<name>``
works too: the function runs in its working directory.

**A replica** is started with ``self_command().argv + ("watchdog",)``, behind the sandbox's prefix
(``faasd _sandbox SPEC watchdog``, inside bwrap in that mode). Before it is spawned, the
provider binds a listening socket on 127.0.0.1:0 and passes it down (``listen_fd``): there is no port
race, and a connection made before the watchdog is up waits in the kernel's backlog. The provider
keeps its own copy of that socket for the life of the replica's *slot*, so a replica that crashes is
replaced on the same port and connections queued meanwhile are served by its successor. Environment,
later entries winning: a small base taken from the daemon (``PATH HOME LANG LC_ALL TZ USER``) and
``TMPDIR``; the spec's ``envVars`` (``read_timeout``, ``exec_timeout``, ... as in OpenFaaS); ``fprocess``
from ``envProcess``; then the control variables ``listen_fd bind metrics_port=0 lock_file parent_pid
secret_mount_path`` and what :func:`~faasd.runtime.self_command` needs. The daemon's call token
(:mod:`faasd.calltoken`) goes on a pipe, ``call_token_fd``: never in the environment, which the
function could read from ``/proc``.
The command and the watchdog settings are checked at deploy time (with the watchdog's own config
parser), so a typo is a 400, not a replica in a restart loop. ``image``, ``constraints``,
``requests``, ``limits.cpu`` and ``readOnlyRootFilesystem`` are accepted and ignored (the code is
read-only in ``bwrap`` and ``uid`` modes anyway; there is no CPU share without a cgroup).

**Readiness.** A replica is ready when ``GET /_/health`` answers 200; only ready replicas are
published to the :class:`~faasd.registry.EndpointRegistry`. A replica is unpublished *before* it is
stopped, and as soon as it exits.

**Supervision.** Each replica slot is a task in the provider's nursery. A replica that exits on its
own (or is not ready within ``ready_timeout_s``) is logged and replaced after an exponential backoff
(0.1 s doubling to 30 s, reset once a replica ran 10 s). A slot is also the boundary of one function's
failures: any exception while it runs a replica is caught there, never reaching the nursery. While the
current spec's replicas cannot be spawned, or end before they are ready, the function's status is
``failed`` with the reason; a ready replica or a new spec clears it. Updates roll: new replicas start, and each
one that becomes ready retires an old one, so a function that had a ready replica keeps one
throughout (see :func:`plan_replicas`).

**Logs.** Every line a replica writes (watchdog log lines, function stderr) is kept per function in a
ring bounded by bytes (:mod:`faasd.providers.common.logbook`), served by :meth:`LocalProvider.logs`.

Kill policy (style guide §11): SIGTERM to the watchdog (it drains its calls; in bwrap, to the watchdog
inside the sandbox), SIGKILL to its whole session after ``stop_grace_s`` (in bwrap, to the sandbox,
whose PID namespace dies with it); the process is always reaped, and the session is swept after a
replica that did not exit cleanly so no function process outlives it; with a uid per function,
removing a function kills whatever still runs as its uid. Everything runs on the trio thread;
blocking file work (archive extraction, directory removal, /proc scans) goes through
``trio.to_thread``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import itertools
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from secrets import token_hex

import trio

from faasd.calltoken import CallToken
from faasd.errors import BackendUnavailable, FunctionNotFound, InvalidRequest, describe_exception
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.common.logbook import DEFAULT_LOG_BYTES, LineBuffer, LogBook
from faasd.providers.local.archive import extract_archive
from faasd.providers.local.code_check import missing_code
from faasd.providers.local.pip_env import pip_environment
from faasd.providers.local.requirements import install_requirements
from faasd.providers.types import Endpoint, FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry
from faasd.runtime import self_command
from faasd.sandbox import build as sandbox_build
from faasd.sandbox import files as sandbox_files
from faasd.sandbox import host as sandbox_host
from faasd.sandbox.limits import Limits, limits_from_spec
from faasd.sandbox.plan import Launch, ReplicaSandbox, Sandbox, plan_launch
from faasd.sandbox.uids import UidPool
from faasd.watchdog.config import ConfigError, WatchdogConfig

__all__ = [
    "BASE_ENV_KEYS",
    "LocalProvider",
    "LocalStatistics",
    "ReplicaInfo",
    "plan_replicas",
]

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"

_FUNCTION_KEY = "function:"
_REPLICA_KEY = "replica:"
"""Keys of :class:`~faasd.sandbox.uids.UidPool` numbers: a function's (its gid) and a replica's (its uid)."""

BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")
"""Variables a replica inherits from the daemon (when set); nothing else leaks into functions."""

SECRETS_DIR = ".secrets"
"""Name of the secrets directory inside a function's working directory (reserved in archives)."""

LISTEN_BACKLOG = 1024
"""Backlog of each replica's listening socket: calls made during a (re)start wait there."""

READY_POLL_S = 0.015
"""Pause between two health probes that got an answer other than 200 (the watchdog is starting)."""

HEALTH_REQUEST = b"GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

RESTART_BACKOFF_INITIAL_S = 0.1
RESTART_BACKOFF_MAX_S = 30.0
RESTART_BACKOFF_RESET_S = 10.0
"""A replica that ran at least this long restarts its slot's backoff from the initial delay."""

UNPUBLISH_GRACE_S = 0.05
"""Between unpublishing a replica and sending it SIGTERM: a router that picked the endpoint just
before it was unpublished still connects while the replica accepts (a zero-failure rolling update)."""

LOG_DRAIN_S = 1.0
"""After a replica exits, how long its last output may take to arrive (a leftover grandchild can hold
the pipe open for ever)."""

PIPE_READ_BYTES = 64 * 1024

SecretLookup = Callable[[str], Awaitable[bytes | None]]
"""The daemon's secret store: name -> value, None when there is no such secret."""


# -- snapshots --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as it is now (for ``describe``, tests and debugging)."""

    replica: str
    pid: int | None
    """None while the slot waits to restart its replica."""
    port: int
    ready: bool
    generation: int
    """Which deploy/update of the function it runs (1 for the first deploy)."""


@dataclass(frozen=True, slots=True)
class LocalStatistics:
    """Counts across every function, as of the call."""

    functions: int
    replicas: int
    ready_replicas: int
    restarts: int
    """Replicas replaced after exiting on their own (or not becoming ready), since the start."""


# -- bookkeeping ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Generation:
    """One deploy/update of a function: what its replicas run."""

    number: int
    spec: FunctionSpec
    fprocess: str
    limits: Limits = field(default_factory=Limits)


@dataclass(eq=False, slots=True)
class _Replica:
    """One process of a slot."""

    id: str
    pid: int
    started_at: float
    was_ready: bool = False
    trouble: str = ""
    """Why it is being killed before it was ready (the readiness timeout)."""


@dataclass(eq=False, slots=True)
class _Slot:
    """A place for one replica: its listening socket, its supervisor task, its current process."""

    seq: int
    generation: _Generation
    listener: socket.socket
    port: int
    replica: _Replica | None = None
    ready: bool = False
    stopping: bool = False
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def published(self) -> bool:
        return self.ready and not self.stopping and self.replica is not None


@dataclass(eq=False, slots=True)
class _Function:
    name: str
    generation: _Generation
    desired: int
    created_at: datetime
    workdir: str
    logbook: LogBook
    slots: list[_Slot] = field(default_factory=list)
    retired: list[tuple[int, str]] = field(default_factory=list)
    """(generation, old working dir): the dir served the generations before that one."""
    removed: bool = False
    failure: str = ""
    """Why the current generation cannot run (its replicas cannot start, or exit before ready); cleared
    when one of its replicas becomes ready, or by a new generation."""
    gid: int | None = None
    """Its own number when the sandbox gives out uids (faasd.sandbox.uids): the gid its files are shared
    with and its replicas run with (each with a uid of its own), and the uid its build step runs as."""


def plan_replicas(slots: Sequence[_Slot], current: _Generation, desired: int) -> tuple[int, list[_Slot]]:
    """Decide how to move a function's slots toward ``desired`` replicas of ``current``. Pure.

    Rules:

    * slots of the current generation: start the missing ones; stop the excess, not-ready ones first,
      then the newest;
    * slots of older generations (an update in progress): keep ready ones only while the current
      generation has fewer than ``desired`` ready replicas; stop not-ready ones at once. So an update
      never lowers the number of ready replicas, and never reaches zero if there was one.

    Returns:
        (slots to start, slots to stop). Slots already stopping are left out.
    """
    live = [slot for slot in slots if not slot.stopping]
    new = [slot for slot in live if slot.generation is current]
    old = [slot for slot in live if slot.generation is not current]

    def order(candidates: list[_Slot]) -> list[_Slot]:
        return sorted(candidates, key=lambda slot: (slot.ready, -slot.seq))  # not ready first, then newest

    stop: list[_Slot] = []
    start = max(0, desired - len(new))
    if len(new) > desired:
        stop.extend(order(new)[: len(new) - desired])
    ready_new = sum(1 for slot in new if slot.ready and slot not in stop)
    keep = max(0, desired - ready_new)
    old_ready = [slot for slot in order(old) if slot.ready]
    stop.extend(slot for slot in old if not slot.ready)
    stop.extend(old_ready[: max(0, len(old_ready) - keep)])
    return start, stop


# -- the provider -----------------------------------------------------------------------------------


class LocalProvider:
    """Runs functions as local ``faasd watchdog`` processes (see the module docstring).

    Args:
        state_dir: the daemon's state directory (``functions/``, ``replicas/``, ``staging/`` go there).
        registry: where ready replicas are published.
        secrets: the daemon's secret store (name -> value, None when missing). Without one, a spec that
            names a secret is refused.
        ready_timeout_s: longest a replica may take to answer its health check before it is killed
            and replaced.
        stop_grace_s: between SIGTERM and SIGKILL when a replica is stopped.
        log_bytes: log kept per function for :meth:`logs` (see :mod:`faasd.providers.common.logbook`).
        call_token: replicas refuse calls without it (:mod:`faasd.calltoken`); each gets it on a pipe
            (``call_token_fd``), never in its environment.
        sandbox: ``auto``, ``bwrap``, ``uid`` or ``none`` (docs/sandbox.md); decided when :meth:`run`
            starts, which raises :class:`~faasd.sandbox.host.SandboxUnavailable` for an explicit mode
            this machine cannot provide.

    Resource handling:
        Every replica belongs to a task in the nursery opened by :meth:`run`; when that is cancelled
        (daemon shutdown) or :meth:`aclose` is called, every replica is unpublished, stopped (SIGTERM,
        SIGKILL after ``stop_grace_s``) and reaped before ``run`` returns. Replicas also watch the
        daemon's pid (``parent_pid``) and stop by themselves if it dies without cleaning up.
    """

    name = "local"
    orchestration = "local"
    persistent = False

    def __init__(
        self,
        *,
        state_dir: str,
        registry: EndpointRegistry,
        secrets: SecretLookup | None = None,
        ready_timeout_s: float = 30.0,
        stop_grace_s: float = 10.0,
        log_bytes: int = DEFAULT_LOG_BYTES,
        call_token: CallToken | None = None,
        sandbox: str = "none",
    ) -> None:
        self._state_dir = os.path.abspath(state_dir)
        self._call_token = call_token
        self._functions_dir = os.path.join(self._state_dir, "functions")
        self._replicas_dir = os.path.join(self._state_dir, "replicas")
        self._staging_dir = os.path.join(self._state_dir, "staging")
        self._registry = registry
        self._secrets = secrets
        self._ready_timeout_s = ready_timeout_s
        self._stop_grace_s = stop_grace_s
        self._log_bytes = log_bytes
        self._command = self_command()
        self._base_env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
        self._sandbox_request = sandbox
        self._sandbox: Sandbox | None = None
        self._uids = UidPool()
        self._busy_uids: set[int] = set()
        """Uids live processes ran as when last looked (at each new function): never handed out."""
        self._lifeline: tuple[int, int] | None = None
        """(read, write) ends of a pipe only this process writes to: bwrap replicas die when it closes."""
        self._functions: dict[str, _Function] = {}
        self._locks = NameLocks()
        self._replica_ids: set[str] = set()
        self._seq = itertools.count()
        self._restarts = 0
        self._nursery: trio.Nursery | None = None
        self._run_scope: trio.CancelScope | None = None
        self._finished: trio.Event | None = None

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<LocalProvider state_dir={self._state_dir!r} running={self._nursery is not None} "
            f"functions={stats.functions} replicas={stats.replicas} ready={stats.ready_replicas}>"
        )

    def statistics(self) -> LocalStatistics:
        slots = [slot for function in self._functions.values() for slot in function.slots]
        return LocalStatistics(
            functions=len(self._functions),
            replicas=sum(1 for slot in slots if not slot.stopping),
            ready_replicas=sum(1 for slot in slots if slot.published),
            restarts=self._restarts,
        )

    def health(self) -> tuple[bool, str]:
        return True, "local processes"

    def sandbox_info(self) -> dict[str, object]:
        """How replicas are sandboxed (``/system/info``); ``mode`` is ``pending`` until :meth:`run` starts."""
        if self._sandbox is None:
            return {"mode": "pending", "requested": self._sandbox_request, "isolated": False}
        return self._sandbox.describe()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every replica until cancelled (or :meth:`aclose`); ready at once.

        Leftovers of a previous daemon (replica scratch dirs, half-built working dirs) are removed
        first: their processes ended with it.
        """
        if self._finished is not None:
            raise RuntimeError("LocalProvider.run can only be called once")
        self._finished = finished = trio.Event()
        try:
            self._sandbox = sandbox = await trio.to_thread.run_sync(
                functools.partial(
                    sandbox_host.resolve, self._sandbox_request, state_dir=self._state_dir, command=self._command
                )
            )
            fell_back = sandbox.requested == "auto" and sandbox.mode != "bwrap"
            level = logging.WARNING if fell_back or not sandbox.isolated else logging.INFO
            event(log, level, "sandbox", mode=sandbox.mode, requested=sandbox.requested, reason=sandbox.reason)
            if sandbox.mode == "bwrap":
                self._lifeline = os.pipe()  # Both ends close-on-exec; the read end is passed to each replica.
            await trio.to_thread.run_sync(self._prepare_state_dirs)
            with trio.CancelScope() as self._run_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    event(log, logging.INFO, "local provider running", state_dir=self._state_dir)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            event(log, logging.INFO, "local provider stopped", functions=len(self._functions))
            for function in self._functions.values():
                self._registry.forget(function.name)
                function.logbook.close()
            if self._lifeline is not None:  # Every replica is reaped by now.
                for end in self._lifeline:
                    os.close(end)
                self._lifeline = None
            finished.set()

    async def aclose(self) -> None:
        """Stop every replica and wait until they are reaped (a no-op once :meth:`run` has returned)."""
        if self._run_scope is not None and self._finished is not None and not self._finished.is_set():
            self._run_scope.cancel()
            await self._finished.wait()

    def _prepare_state_dirs(self) -> None:
        if self._sandbox is not None and self._sandbox.work_root:  # uid mode: outside the state dir.
            root = self._sandbox.work_root  # Emptied and laid out by sandbox.files.prepare_work_root.
            self._functions_dir, self._staging_dir, self._replicas_dir = (
                os.path.join(root, name) for name in sandbox_files.WORK_DIRS
            )
            return
        os.makedirs(self._functions_dir, mode=0o700, exist_ok=True)
        os.chmod(self._functions_dir, 0o700)
        for scratch in (self._replicas_dir, self._staging_dir):
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch, mode=0o700, exist_ok=True)

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise BackendUnavailable("the local provider is not running (the daemon is starting or stopping)")
        return self._nursery

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        """Create the function, or replace it (rolling, like :meth:`update`) with ``replicas`` replicas.

        Returns once the replicas are starting, not when they are ready (watch :meth:`status` or the
        registry).

        Raises:
            InvalidRequest: no ``envProcess`` (nor ``fprocess`` env var), a command not found, a bad
                watchdog setting in ``envVars``, a missing secret, an unsafe or corrupt handler archive,
                or ``replicas`` < 0. Nothing changes then.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        self._require_running()
        async with self._locks.hold(spec.name):
            await self._apply(spec, replicas)

    async def update(self, spec: FunctionSpec) -> None:
        """Replace the function's spec, rolling its replicas; the replica count is kept.

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest: as :meth:`deploy`.
        """
        self._require_running()
        async with self._locks.hold(spec.name):
            function = self._get(spec.name)
            await self._apply(spec, function.desired)

    async def remove(self, name: str) -> None:
        """Unpublish the function, stop its replicas, wait for them, delete its working directory.

        Raises:
            FunctionNotFound: no such function.
        """
        async with self._locks.hold(name):
            function = self._get(name)
            del self._functions[name]
            function.removed = True
            self._registry.forget(name)
            for slot in function.slots:
                self._stop_slot(slot)
            # Shielded: the replicas are stopping anyway; finish so the directories can go.
            with trio.CancelScope(shield=True):
                for slot in list(function.slots):
                    await slot.done.wait()
                function.logbook.close()
                for path in [function.workdir, *(path for _, path in function.retired)]:
                    await _remove_tree(path)
                if function.gid is not None:  # Whatever still runs as its number is its own leftover.
                    await trio.to_thread.run_sync(sandbox_host.kill_uid, function.gid)
                    self._uids.release(_FUNCTION_KEY + name)
        event(log, logging.INFO, "function removed", function=name)

    async def scale(self, name: str, replicas: int) -> None:
        """Start or stop replicas to have ``replicas`` (0 allowed); stops not-ready then newest first.

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest: ``replicas`` < 0.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        async with self._locks.hold(name):
            function = self._get(name)
            function.desired = replicas
            self._reconcile(function)

    async def list(self) -> list[FunctionStatus]:
        return [self._status(function) for _, function in sorted(self._functions.items())]

    async def status(self, name: str) -> FunctionStatus:
        """``replicas`` is the desired count; ``available_replicas`` counts ready replicas of the
        current spec (during an update, old replicas still serving are not counted). The spec is the
        deployed one without its handler archive (unpacked on disk, not kept in memory).

        Raises:
            FunctionNotFound: no such function.
        """
        return self._status(self._get(name))

    def replicas(self, name: str) -> builtins.list[ReplicaInfo]:
        """Snapshot of a function's replicas, oldest first.

        Raises:
            FunctionNotFound: no such function.
        """
        function = self._get(name)
        return [
            ReplicaInfo(
                replica=slot.replica.id if slot.replica else "",
                pid=slot.replica.pid if slot.replica else None,
                port=slot.port,
                ready=slot.published,
                generation=slot.generation.number,
            )
            for slot in function.slots
            if not slot.stopping
        ]

    async def logs(self, request: LogRequest) -> AsyncIterator[LogMessage]:
        """Kept lines (filtered by ``instance``, ``since``, then ``tail``), then with ``follow`` new
        lines as they come, until the consumer stops iterating or the function is removed.

        Raises:
            FunctionNotFound: no such function (when iteration starts).

        Resource handling:
            A follower's queue is bounded (``FOLLOW_BUFFER_LINES``); when it is full, lines are
            dropped and a ``[faasd] N log lines dropped`` line takes their place. The queue is
            released when the iterator is closed (``aclose`` or garbage collection).
        """
        book = self._get(request.name).logbook
        kept = book.select(request)
        follower = book.follow(request.instance) if request.follow else None
        try:
            for message in kept:
                yield message
            if follower is not None:
                async for message in follower.receive:
                    yield message
        finally:
            if follower is not None:
                book.unfollow(follower)

    # -- applying a spec ----------------------------------------------------------------------------

    async def _apply(self, spec: FunctionSpec, replicas: int) -> None:
        """Validate and build the new working dir, swap it in, start the new generation (lock held)."""
        fprocess, values = await self._validate(spec)
        limits = limits_from_spec(spec)
        staging = os.path.join(self._staging_dir, f"{spec.name}.{token_hex(4)}")
        try:
            gid = await self._function_gid(spec.name)
            await trio.to_thread.run_sync(self._build_workdir, staging, spec)
            # Cancellable: a daemon stopping does not wait for pip. In the function's sandbox, as the function.
            await install_requirements(staging, self._build_sandbox(staging, gid))
            await trio.to_thread.run_sync(self._write_secrets, staging, values)
            await trio.to_thread.run_sync(self._check_workdir, staging, spec, fprocess, gid)
            with trio.CancelScope(shield=True):  # Once swapped, the bookkeeping below must follow.
                retired = await trio.to_thread.run_sync(self._install, spec.name, staging)
        except BaseException:
            if spec.name not in self._functions:
                self._uids.release(_FUNCTION_KEY + spec.name)
            with trio.CancelScope(shield=True):
                await _remove_tree(staging)
            raise
        workdir = os.path.join(self._functions_dir, spec.name)
        spec = replace(spec, handler_archive=b"")  # Unpacked on disk now; no need to keep it in memory.
        function = self._functions.get(spec.name)
        if function is None:
            function = _Function(
                name=spec.name,
                generation=_Generation(1, spec, fprocess, limits),
                desired=replicas,
                created_at=datetime.now(UTC),
                workdir=workdir,
                logbook=LogBook(spec.name, self._log_bytes),
                gid=gid,
            )
            self._functions[spec.name] = function
        else:
            function.generation = _Generation(function.generation.number + 1, spec, fprocess, limits)
            function.desired = replicas
            function.failure = ""
        if retired is not None:
            function.retired.append((function.generation.number, retired))
        event(
            log,
            logging.INFO,
            "function deployed",
            function=spec.name,
            generation=function.generation.number,
            replicas=replicas,
        )
        self._reconcile(function)

    async def _validate(self, spec: FunctionSpec) -> tuple[str, dict[str, bytes]]:
        """(fprocess, secret values) for ``spec``, or InvalidRequest before anything is touched."""
        fprocess = spec.env_process or spec.env_vars.get("fprocess", "")
        python_mode = spec.env_vars.get("mode", "").strip() == "python"
        if not fprocess.strip() and not python_mode:
            raise InvalidRequest(
                "envProcess is required on the local backend: the command the watchdog runs for each request "
                "(an image cannot be run here; Python functions can use envVars mode=python instead)"
            )
        if fprocess.strip():
            try:
                argv = shlex.split(fprocess)
            except ValueError as exc:
                raise InvalidRequest(f"envProcess {fprocess!r} cannot be split like a shell would: {exc}") from None
            if not argv:
                raise InvalidRequest("envProcess is empty")
        if len(set(spec.secrets)) != len(spec.secrets):
            raise InvalidRequest("secrets: a secret is listed twice")
        values: dict[str, bytes] = {}
        for secret in spec.secrets:
            validate_name(secret, "secret")
            value = await self._secrets(secret) if self._secrets is not None else None
            if value is None:
                raise InvalidRequest(f"secret {secret!r} does not exist: create it before deploying")
            values[secret] = value
        return fprocess, values

    async def _function_gid(self, name: str) -> int | None:
        """The function's own number when the sandbox gives out uids (a new one on its first deploy)."""
        if self._sandbox is None or not self._sandbox.per_function_uid:
            return None
        gid = self._uids.get(_FUNCTION_KEY + name)
        if gid is None:
            self._busy_uids = await trio.to_thread.run_sync(sandbox_host.busy_uids)
            gid = self._uids.acquire(_FUNCTION_KEY + name, self._busy_uids)
        return gid

    def _build_workdir(self, path: str, spec: FunctionSpec) -> None:
        """Fill a fresh working dir with the handler archive (blocking: runs in a thread);
        ``requirements.txt`` is installed next, by :func:`install_requirements`, then the secrets are
        written and :meth:`_check_workdir` runs.

        Raises:
            InvalidRequest: unsafe or corrupt archive.
        """
        os.mkdir(path, 0o700)  # Opened up to the function's group (if any) once complete.
        if spec.handler_archive:
            extracted = extract_archive(spec.handler_archive, path, reserved=(SECRETS_DIR,))
            event(
                log,
                logging.DEBUG,
                "handler archive unpacked",
                function=spec.name,
                files=extracted.files,
                bytes=extracted.bytes,
            )

    def _write_secrets(self, path: str, secrets: dict[str, bytes]) -> None:
        """``.secrets/<name>`` files, 0400 (blocking). After the build, which may write in ``path`` but must
        not see the secrets, and never through a link it may have left there.

        Raises:
            InvalidRequest: the build created ``.secrets`` itself.
        """
        secrets_dir = os.path.join(path, SECRETS_DIR)
        try:
            os.mkdir(secrets_dir, 0o700)
        except FileExistsError:
            raise InvalidRequest(f"requirements.txt: the install created {SECRETS_DIR}, which is reserved") from None
        for name, value in secrets.items():
            fd = os.open(
                os.path.join(secrets_dir, name),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o400,
            )
            with os.fdopen(fd, "wb") as file:
                file.write(value)

    def _check_workdir(self, path: str, spec: FunctionSpec, fprocess: str, gid: int | None = None) -> None:
        """Would the replica start: does its command exist, would the watchdog accept the env (blocking).

        With ``gid``, the dir then becomes ``root:<gid>``, readable by the function and nobody else.

        Raises:
            InvalidRequest: command not found, the code it runs missing (:mod:`.code_check`), bad watchdog
                setting.
        """
        env = self._replica_env(_Generation(0, spec, fprocess), path, os.path.join(path, ".replica"), listen_fd=3)
        argv = shlex.split(fprocess) if fprocess.strip() else []
        missing = missing_code(argv, spec.env_vars, path, uploaded=bool(spec.handler_archive))
        if missing is not None:  # faas-cli deploys lang/handler functions without their code.
            raise InvalidRequest(missing)
        if argv:
            program = argv[0]
            if "/" in program:
                candidate = os.path.join(path, program)
                executable = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
            else:
                executable = shutil.which(program, path=env.get("PATH", os.defpath))
            if executable is None:
                raise InvalidRequest(
                    f"envProcess: {program!r} is not found or not executable "
                    f"({'in the function directory' if '/' in program else 'on PATH'})"
                )
            env["fprocess"] = shlex.join([os.path.abspath(executable), *argv[1:]])
        env["handler"] = os.path.join(path, env.get("handler") or "handler.py")  # Relative to the function dir.
        try:
            WatchdogConfig.from_env(env)
        except ConfigError as exc:
            raise InvalidRequest(f"envVars: {exc}") from None
        if gid is not None:
            sandbox_files.share_with_group(path, gid)

    def _build_sandbox(self, path: str, gid: int | None) -> sandbox_build.Build | None:
        """Where :func:`install_requirements` runs pip for the function built in ``path``: its sandbox
        (:mod:`faasd.sandbox.build`), or None without one (as the daemon)."""
        if self._sandbox is None or not self._sandbox.isolated:
            return None
        env = {**pip_environment(os.environ), **self._command.env}
        return sandbox_build.Build(self._sandbox, workdir=path, uid=gid, faasd=self._command.argv, env=env)

    def _install(self, name: str, staging: str) -> str | None:
        """Swap the new working dir in; the old one (if any) moves to staging, its path returned.

        Replicas of the old generation keep running in it (a process's cwd follows the inode).
        """
        target = os.path.join(self._functions_dir, name)
        retired = None
        if os.path.lexists(target):
            retired = os.path.join(self._staging_dir, f"{name}.{token_hex(4)}.retired")
            os.rename(target, retired)
        os.rename(staging, target)
        return retired

    def _replica_env(self, generation: _Generation, workdir: str, replica_dir: str, listen_fd: int) -> dict[str, str]:
        env = dict(self._base_env)
        env["TMPDIR"] = os.path.join(replica_dir, "tmp")
        env.update(generation.spec.env_vars)
        if generation.fprocess:
            env["fprocess"] = generation.fprocess
        env.update(
            listen_fd=str(listen_fd),
            bind=LOCALHOST,
            metrics_port="0",
            lock_file=os.path.join(replica_dir, ".lock"),
            parent_pid=str(os.getpid()),
            secret_mount_path=os.path.join(workdir, SECRETS_DIR),
        )
        env.update(self._command.env)
        return env

    # -- driving slots ------------------------------------------------------------------------------

    def _get(self, name: str) -> _Function:
        function = self._functions.get(name)
        if function is None:
            raise FunctionNotFound(f"No such function: {name}")
        return function

    def _status(self, function: _Function) -> FunctionStatus:
        current = function.generation
        return FunctionStatus(
            spec=current.spec,
            replicas=function.desired,
            available_replicas=sum(1 for slot in function.slots if slot.published and slot.generation is current),
            created_at=function.created_at,
            state="failed" if function.failure else "deployed",
            reason=function.failure,
        )

    def _reconcile(self, function: _Function) -> None:
        """Apply :func:`plan_replicas` to ``function`` (sync: called from operations and readiness)."""
        if function.removed or self._nursery is None:
            return
        start, stop = plan_replicas(function.slots, function.generation, function.desired)
        for slot in stop:
            self._stop_slot(slot)
        for _ in range(start):
            if not self._start_slot(function):
                break
        self._publish(function)
        self._collect_retired(function)

    def _start_slot(self, function: _Function) -> bool:
        assert self._nursery is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((LOCALHOST, 0))
            listener.listen(LISTEN_BACKLOG)
        except OSError as exc:
            listener.close()
            event(log, logging.ERROR, "cannot bind a replica port", function=function.name, error=exc.strerror)
            return False
        slot = _Slot(
            seq=next(self._seq),
            generation=function.generation,
            listener=listener,
            port=listener.getsockname()[1],
        )
        function.slots.append(slot)
        self._nursery.start_soon(self._supervise, function, slot, name=f"replica slot {function.name}:{slot.port}")
        return True

    def _stop_slot(self, slot: _Slot) -> None:
        """Mark ``slot`` stopping (it leaves the next publish) and wake its supervisor."""
        if not slot.stopping:
            slot.stopping = True
            slot.stop.set()

    def _publish(self, function: _Function) -> None:
        if function.removed:
            return
        self._registry.publish(
            function.name,
            [
                Endpoint(LOCALHOST, slot.port, slot.replica.id)
                for slot in function.slots
                if slot.replica and slot.published
            ],
        )

    def _collect_retired(self, function: _Function) -> None:
        """Delete old working dirs no replica runs in any more."""
        if not function.retired or self._nursery is None:
            return
        oldest = min((slot.generation.number for slot in function.slots), default=function.generation.number)
        for entry in [entry for entry in function.retired if entry[0] <= oldest]:
            function.retired.remove(entry)
            self._nursery.start_soon(_remove_tree, entry[1])

    # -- one slot -----------------------------------------------------------------------------------

    async def _supervise(self, function: _Function, slot: _Slot) -> None:
        """Keep one replica running in ``slot`` until it is stopped (or its generation is replaced).

        Error handling:
            A replica that exits, cannot be spawned or is not ready in time is replaced after the
            backoff; a replica of an older generation is not replaced (the update is retiring it).
            Any exception while running one replica is contained here, the boundary of a function's
            own tasks: it is logged with its traceback, the function is marked failed with the
            reason (see :meth:`status`), and the slot retries after the backoff -- the daemon and the
            other functions never see it.
        """
        backoff = RESTART_BACKOFF_INITIAL_S
        try:
            while not slot.stopping:
                started = trio.current_time()
                try:
                    replica_id, returncode, trouble = await self._run_replica(function, slot)
                except Exception as exc:  # A per-function task boundary (see the docstring).
                    trouble = f"replica supervisor error: {describe_exception(exc)}"
                    log.error("function=%s %s", function.name, trouble, exc_info=exc)
                    replica_id, returncode = "", None
                if trouble and not slot.stopping:
                    self._mark_failed(function, slot, trouble)
                fields = {"function": function.name, "replica": replica_id, **_exit_fields(returncode)}
                if slot.stopping or function.removed:
                    event(log, logging.INFO, "replica stopped", **fields)
                    break
                if slot.generation is not function.generation:
                    event(log, logging.INFO, "replica of a replaced spec exited; not restarted", **fields)
                    break
                if trio.current_time() - started >= RESTART_BACKOFF_RESET_S:
                    backoff = RESTART_BACKOFF_INITIAL_S
                self._restarts += 1
                event(log, logging.WARNING, "replica exited; restarting", **fields, restart_in_s=backoff)
                with trio.move_on_after(backoff):
                    await slot.stop.wait()
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
        finally:
            slot.listener.close()
            if slot in function.slots:
                function.slots.remove(slot)
            slot.done.set()
            self._publish(function)
            self._collect_retired(function)

    async def _run_replica(self, function: _Function, slot: _Slot) -> tuple[str, int | None, str]:
        """Spawn one replica in ``slot``; once it has ended and is reaped, return (its id, exit status,
        trouble).

        The status is None when it could not be spawned, negative when a signal killed it. ``trouble``
        is empty when the replica was ready at some point, else why it never was (one line).
        """
        replica_id = self._new_replica_id(function.name)
        replica_dir = os.path.join(self._replicas_dir, replica_id)
        uid = self._replica_uid(function, replica_id)
        scratch = self._scratch_dir(function, replica_id)
        env = self._replica_env(slot.generation, function.workdir, replica_dir, slot.listener.fileno())
        read_fd = token_fd = -1
        try:
            os.makedirs(os.path.join(replica_dir, "tmp"), mode=0o700)
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            pass_fds = [slot.listener.fileno()]
            try:
                if self._call_token is not None:
                    token_fd = _token_pipe(self._call_token.value)
                    env.pop("call_token_file", None)  # Ours, not one the spec's envVars may name.
                    env["call_token_fd"] = str(token_fd)
                    pass_fds.append(token_fd)
                launch = await self._launch(function, slot.generation, replica_id, uid, scratch, env)
                process = await trio.lowlevel.open_process(
                    list(launch.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=write_fd,
                    env=launch.env,
                    cwd=launch.cwd,
                    pass_fds=(*pass_fds, *launch.pass_fds),
                    start_new_session=True,
                )
            finally:
                os.close(write_fd)
                if token_fd >= 0:
                    os.close(token_fd)
        except OSError as exc:
            if read_fd >= 0:
                os.close(read_fd)
            await self._forget_replica(replica_id, replica_dir, scratch, uid)
            event(
                log,
                logging.ERROR,
                "cannot start replica",
                function=function.name,
                replica=replica_id,
                error=exc.strerror or str(exc),
            )
            return replica_id, None, f"cannot start replica: {exc.strerror or exc}"
        except BaseException:
            if read_fd >= 0:
                os.close(read_fd)
            with trio.CancelScope(shield=True):
                await self._forget_replica(replica_id, replica_dir, scratch, uid)
            raise
        replica = slot.replica = _Replica(replica_id, process.pid, trio.current_time())
        event(log, logging.DEBUG, "replica started", function=function.name, replica=replica_id, pid=process.pid)
        stream = trio.lowlevel.FdStream(read_fd)
        try:
            async with trio.open_nursery() as nursery:
                pumped = trio.Event()
                nursery.start_soon(self._pump_logs, function, replica_id, stream, pumped)
                nursery.start_soon(self._become_ready, function, slot, replica, process)
                nursery.start_soon(self._stop_when_asked, function, slot, replica, process)
                await process.wait()
                self._unpublish_slot(function, slot)
                with trio.move_on_after(LOG_DRAIN_S):
                    await pumped.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                self._unpublish_slot(function, slot)
                if process.returncode is None:  # Cancelled: the provider is shutting down.
                    await self._terminate(function, replica, process)
                stream.close()
                if process.returncode != 0:
                    await trio.to_thread.run_sync(_kill_session, process.pid)
                await self._forget_replica(replica_id, replica_dir, scratch, uid)
        if replica.was_ready:
            return replica_id, process.returncode, ""
        trouble = replica.trouble or f"replica {_exit_text(process.returncode)} before it was ready"
        return replica_id, process.returncode, trouble

    def _mark_failed(self, function: _Function, slot: _Slot, reason: str) -> None:
        """Record why the current generation cannot run (a retiring generation's trouble is not news)."""
        if slot.generation is function.generation and not function.removed:
            if function.failure != reason:
                event(log, logging.WARNING, "function failing", function=function.name, reason=reason)
            function.failure = reason

    def _replica_uid(self, function: _Function, replica_id: str) -> int | None:
        """The replica's own uid, when the sandbox gives out uids: its processes are counted (the process
        limit) and cleaned up (uid mode) on their own."""
        if function.gid is None:
            return None
        return self._uids.acquire(_REPLICA_KEY + replica_id, self._busy_uids)

    def _scratch_dir(self, function: _Function, replica_id: str) -> str:
        """uid mode: the replica's private TMPDIR/HOME outside the state dir (made by :meth:`_launch`)."""
        sandbox = self._sandbox
        if sandbox is None or sandbox.mode != "uid" or function.gid is None:
            return ""
        return os.path.join(self._replicas_dir, f"{replica_id}.home")

    async def _launch(
        self,
        function: _Function,
        generation: _Generation,
        replica_id: str,
        uid: int | None,
        scratch: str,
        env: dict[str, str],
    ) -> Launch:
        """The replica's command line, environment and directory in this daemon's sandbox."""
        assert self._sandbox is not None
        if scratch and uid is not None:
            root, name = os.path.split(scratch)
            await trio.to_thread.run_sync(sandbox_files.make_scratch, root, name, uid, function.gid)
        replica = ReplicaSandbox(
            workdir=function.workdir,
            secrets=True,
            uid=uid,
            gid=function.gid,
            limits=generation.limits,
            scratch=scratch,
            name=replica_id,
            lifeline=self._lifeline[0] if self._lifeline is not None else None,
        )
        return plan_launch(self._sandbox, replica, self._command.argv, env)

    async def _forget_replica(self, replica_id: str, replica_dir: str, scratch: str, uid: int | None) -> None:
        """After a replica ended (or could not start): its files, and its uid -- in uid mode with whatever
        still ran as it (a process that left its session), since no PID namespace ended it."""
        self._replica_ids.discard(replica_id)
        await _remove_tree(replica_dir)
        if scratch:
            await _remove_tree(scratch)
        if uid is not None:
            if self._sandbox is not None and self._sandbox.mode == "uid":
                await trio.to_thread.run_sync(sandbox_host.kill_uid, uid)
            self._uids.release(_REPLICA_KEY + replica_id)

    def _unpublish_slot(self, function: _Function, slot: _Slot) -> None:
        slot.ready = False
        slot.replica = None
        self._publish(function)

    async def _become_ready(self, function: _Function, slot: _Slot, replica: _Replica, process: trio.Process) -> None:
        with trio.move_on_after(self._ready_timeout_s) as deadline:
            await _wait_healthy(slot.port)
        if deadline.cancelled_caught:
            event(
                log,
                logging.WARNING,
                "replica not ready in time; killing it",
                function=function.name,
                replica=replica.id,
                ready_timeout_s=self._ready_timeout_s,
            )
            replica.trouble = f"replica not ready within {self._ready_timeout_s:g}s"
            process.kill()  # Its session is swept once it is reaped (non-zero status).
            return
        if slot.stopping or slot.replica is not replica:
            return
        slot.ready = replica.was_ready = True
        if slot.generation is function.generation:
            function.failure = ""
        event(
            log,
            logging.INFO,
            "replica ready",
            function=function.name,
            replica=replica.id,
            port=slot.port,
            startup_ms=round((trio.current_time() - replica.started_at) * 1000, 1),
        )
        self._reconcile(function)
        self._publish(function)

    async def _stop_when_asked(
        self, function: _Function, slot: _Slot, replica: _Replica, process: trio.Process
    ) -> None:
        await slot.stop.wait()
        self._unpublish_slot(function, slot)
        await trio.sleep(UNPUBLISH_GRACE_S)
        slot.listener.close()  # Only the replica holds the socket now: it closes when the replica stops accepting.
        await self._terminate(function, replica, process)

    async def _terminate(self, function: _Function, replica: _Replica, process: trio.Process) -> None:
        """SIGTERM, then SIGKILL to the whole session after ``stop_grace_s``; returns once reaped.

        In bwrap mode the SIGTERM goes to the watchdog inside (bwrap does not pass signals on); the
        SIGKILL to bwrap, whose PID namespace dies with it.
        """
        inside = self._sandbox is not None and self._sandbox.mode == "bwrap"
        signal_inside = functools.partial(sandbox_host.signal_sandboxed, process.pid, signal.SIGTERM)
        if not (inside and await trio.to_thread.run_sync(signal_inside)):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self._stop_grace_s):
            await process.wait()
            return
        event(
            log,
            logging.WARNING,
            "replica did not stop in time; killing it",
            function=function.name,
            replica=replica.id,
            stop_grace_s=self._stop_grace_s,
        )
        await trio.to_thread.run_sync(_kill_session, process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def _pump_logs(
        self, function: _Function, replica_id: str, stream: trio.lowlevel.FdStream, done: trio.Event
    ) -> None:
        """Read the replica's stdout+stderr into the function's log book, line by line (capped)."""
        book = function.logbook
        lines = LineBuffer()
        try:
            while True:
                try:
                    data = await stream.receive_some(PIPE_READ_BYTES)
                except (trio.ClosedResourceError, OSError):
                    break
                if not data:
                    break
                for line in lines.feed(data):
                    book.append(replica_id, line)
            for line in lines.flush():
                book.append(replica_id, line)
        finally:
            done.set()

    def _new_replica_id(self, name: str) -> str:
        while True:
            replica_id = f"{name}-{token_hex(3)}"
            if replica_id not in self._replica_ids:
                self._replica_ids.add(replica_id)
                return replica_id


# -- helpers ----------------------------------------------------------------------------------------


def _token_pipe(token: bytes) -> int:
    """A pipe holding ``token`` (written whole: far below PIPE_BUF), its write end closed; the read end
    is for the replica, which reads it once and closes it."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(write_end, token)
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


async def _wait_healthy(port: int) -> None:
    """Return once ``GET /_/health`` on ``port`` answers 200.

    A probe made before the watchdog accepts waits in the listening socket's backlog and is answered
    the moment it does: readiness is seen without polling delay. Other answers (503 while starting)
    are retried every ``READY_POLL_S``. The caller bounds the wait.
    """
    while not await _health_ok(port):
        await trio.sleep(READY_POLL_S)


async def _health_ok(port: int) -> bool:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    head = b""
    with sock:
        try:
            await sock.connect((LOCALHOST, port))
            stream = trio.SocketStream(sock)
            await stream.send_all(HEALTH_REQUEST)
            while b"\r\n" not in head and len(head) < 256:
                chunk = await stream.receive_some(256)
                if not chunk:
                    break
                head += chunk
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            # trio's streams report a reset as BrokenResourceError, not OSError: a replica being
            # replaced closes its listener while this probe reads (two updates in a row).
            return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def _exit_text(returncode: int | None) -> str:
    """How a replica ended, for a status reason: ``exited with code 1``, ``was killed by SIGKILL``."""
    fields = _exit_fields(returncode)
    if "signal" in fields:
        return f"was killed by {fields['signal']}"
    return f"exited with code {returncode}"


def _exit_fields(returncode: int | None) -> dict[str, object]:
    """Log fields for how a replica ended: ``exit_code``, or ``signal``, or ``not_started``."""
    if returncode is None:
        return {"not_started": True}
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"exit_code": returncode}


async def _remove_tree(path: str) -> None:
    await trio.to_thread.run_sync(functools.partial(shutil.rmtree, path, ignore_errors=True))


def _kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (a replica's watchdog and its calls); how many.

    Blocking (reads /proc): run through ``trio.to_thread``. The kernel does not reuse a pid while it
    still names a session, so this cannot hit an unrelated process.
    """
    killed = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split(b" ")
        # fields: state ppid pgrp session ...
        if len(fields) < 4 or int(fields[3]) != sid:
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
    return killed
