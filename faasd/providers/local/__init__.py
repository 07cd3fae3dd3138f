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
a uid of its own (``uid`` mode: that alone). The spec's ``limits.cpu``, ``limits.memory`` and the labels
``com.faasd.limits.processes``/``com.faasd.limits.open_files`` become the replica's limits: rlimits, and
where the daemon may use control groups a cgroup of its own per replica (:mod:`faasd.sandbox.cgroups`,
made before the replica starts and removed, with whatever still runs in it, when it ends). The sandbox
wraps the replica once, at its start: calls pay nothing for it.

**Secrets.** An OpenFaaS function reads ``/var/openfaas/secrets/<name>``; a local function reads
``$secret_mount_path/<name>`` (the watchdog passes its environment on to the function): that very path
in ``bwrap`` mode, else ``<functions dir>/<name>/.secrets/<name>``. A relative ``./.secrets/<name>``
works too: the function runs in its working directory.

**A replica** is started with ``self_command().argv + ("watchdog",)``, behind the sandbox's prefix
(``faasd _sandbox SPEC watchdog``, inside bwrap in that mode, after a shell that joins its cgroup).
Before it is spawned, the provider binds a listening socket on 127.0.0.1:0 and passes it down
(``listen_fd``): there is no port race, and a connection made before the watchdog is up waits in the
kernel's backlog. The provider keeps its own copy of that socket for the life of the replica's *slot*,
so a replica that crashes is replaced on the same port and connections queued meanwhile are served by
its successor. Environment, later entries winning: a small base taken from the daemon (``PATH HOME LANG
LC_ALL TZ USER``) and ``TMPDIR``; the spec's ``envVars`` (``read_timeout``, ``exec_timeout``, ... as in
OpenFaaS); ``fprocess`` from ``envProcess``; then the control variables ``listen_fd bind metrics_port=0
lock_file parent_pid secret_mount_path`` and what :func:`~faasd.runtime.self_command` needs. The
daemon's call token (:mod:`faasd.calltoken`) goes on a pipe, ``call_token_fd``: never in the
environment, which the function could read from ``/proc``.
The command and the watchdog settings are checked at deploy time (with the watchdog's own config
parser), so a typo is a 400, not a replica in a restart loop. ``image``, ``constraints``,
``requests`` and ``readOnlyRootFilesystem`` are accepted and ignored (the code is read-only in
``bwrap`` and ``uid`` modes anyway); ``limits.cpu`` without a cgroup too.

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
throughout (see :func:`faasd.providers.common.rollout.plan_replicas`).

**Logs.** Every line a replica writes (watchdog log lines, function stderr) is kept per function in a
ring bounded by bytes (:mod:`faasd.providers.common.logbook`), served by :meth:`LocalProvider.logs`.

Kill policy (style guide §11): SIGTERM to the watchdog (it drains its calls; in bwrap, to the watchdog
inside the sandbox), SIGKILL to its whole session after ``stop_grace_s`` (in bwrap, to the sandbox,
whose PID namespace dies with it); the process is always reaped, and the session is swept after a
replica that did not exit cleanly so no function process outlives it; with a uid per function,
removing a function kills whatever still runs as its uid. Everything runs on the trio thread;
blocking file work (archive extraction, directory removal, /proc scans) goes through
``trio.to_thread``.

Modules: :mod:`.provider` (the :class:`LocalProvider`: operations, lifecycle), :mod:`.state` (what it
knows: functions, generations, slots), :mod:`.workdir` (spec checks, building
and swapping working dirs, a replica's environment), :mod:`.supervisor` (slots: spawn, readiness,
restarts, stop, output), :mod:`.pool` (replicas started before they are needed, given to a slot at a
cold start: docs/coldstart.md), :mod:`.process` (OS chores), and the build helpers :mod:`.code_check`,
:mod:`.requirements`, :mod:`.pip_env` (handler archives are unpacked by the shared :mod:`faasd.archive`).
"""

from __future__ import annotations

from faasd.providers.local.provider import LocalProvider
from faasd.providers.local.state import LocalStatistics, ReplicaInfo
from faasd.providers.local.workdir import BASE_ENV_KEYS

__all__ = ["BASE_ENV_KEYS", "LocalProvider", "LocalStatistics", "ReplicaInfo"]
