"""A pooled replica: started, sandboxed and imported before any function needs it, then given one.

The local backend keeps a few of these ready (:mod:`faasd.providers.local.pool`, docs/coldstart.md).
Started as ``faasd _sandbox SPEC _pooled FD``, a pooled replica is already confined by everything that
does not depend on its function: bwrap's namespaces and file system (an empty ``/home/app`` and
``/var/openfaas/secrets``, bound from directories the daemon fills later), the OOM score, the scheduling
group (it holds the lifeline's descriptor, and follows it from its assignment on); its limits are the
loosest any function may have, and -- as root -- it keeps only the capabilities to change user. Then it
imports the watchdog (every mode), tells the daemon ``ready`` on the control socket ``FD`` and waits there.
No function code runs before its assignment.

The assignment is one message (:func:`encode_assignment`): the rest of the replica's sandbox spec (its
uid and gid, its limits, ``no_new_privs``), its working directory, its environment, and -- as
``SCM_RIGHTS`` -- its listening socket and the call token's pipe, whose variables (``listen_fd``,
``call_token_fd``) are renumbered to the descriptors received. The replica applies the spec exactly as a
freshly started one does (:func:`faasd.sandbox.enter.enter`: failure is exit 126), takes the environment
as its own (also for the functions it starts, :func:`faasd.watchdog.fork.assign_environ`) and runs the
watchdog. From then on it is an ordinary replica, but for its readiness: once its watchdog is ready, before
it accepts a connection, it says ``serving`` on the control socket and waits for the daemon's ``go``
(:data:`SERVING`, :data:`GO`), then closes the socket and accepts. The daemon takes ``serving`` for the
readiness probe a cold replica answers (no connection, no request, no poll), and between the two lowers the
replica's CPU weight, raised for its start while only faasd's code runs in it (docs/coldstart.md): nothing
of the function -- no call -- runs before the ``go``. End of file instead of ``go`` (the daemon is stopping
this replica) ends it.

End of file on the control socket (the daemon stopped, or shrank its pool) ends an idle replica: it
never outlives its daemon, even in the ``uid`` and ``none`` modes, which have no lifeline.
Stdlib only, like :mod:`.enter`.
"""

from __future__ import annotations

import json
import os
import socket
import sys

__all__ = ["GO", "POOLED_COMMAND", "READY", "SERVING", "encode_assignment", "main"]

POOLED_COMMAND = "_pooled"
READY = b"ready\n"
"""Idle and imported: the replica may be assigned."""
SERVING = b"serving\n"
"""Assigned and its watchdog ready: the replica waits for :data:`GO` before it accepts a connection."""
GO = b"go\n"
"""The daemon's answer to :data:`SERVING`: accept calls now."""
MAX_ASSIGNMENT_BYTES = 1 << 20
"""An assignment carries a function's environment; the daemon refuses larger ones before sending."""
ENV_FDS = ("listen_fd", "call_token_fd")
"""Environment variables naming descriptors a replica inherits."""
SPEC_FDS = ("mev", "pev", "pprc")
"""Sandbox spec keys naming descriptors (its cgroup's event files and member list, :mod:`faasd.sandbox.cgroups`)."""

_PRELOAD = (
    "faasd.watchdog.main",
    "faasd.watchdog.app",
    "faasd.watchdog.server",
    "faasd.watchdog.metrics",
    "faasd.watchdog.fork",
    "faasd.watchdog.streaming",
    "faasd.watchdog.http",
    "faasd.watchdog.python",
    "faasd.calltoken",
    "ctypes",  # The watchdog's prctl (memory of a replica holding the call token).
    "resource",  # enter()'s limits: a C extension loaded from disk, 0.5 ms on the assignment's path.
)
"""What every mode's watchdog, and :func:`faasd.sandbox.enter.enter` applying an assignment's limits, import
before they serve: imported while the replica waits, so the assignment imports nothing."""

_ALREADY_APPLIED = ("oom", "nice")
"""Spec keys a pooled replica applied at its start (they are the same for every function). Not ``life``:
the lifeline's thread is started with the assignment, after the uid switch (:func:`faasd.sandbox.enter.enter`);
until then the control socket's end of file ends the replica with its daemon."""


async def _readable(sock: socket.socket) -> None:
    """Wait until ``sock`` is readable, on either loop; its reader is removed however this ends (a stop
    signal cancels the wait before the socket is closed)."""
    from faasd.watchdog.loop import running_loop, settle

    loop = running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), settle, ready)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def encode_assignment(spec: str, cwd: str, env: dict[str, str], fds: list[str] | None = None) -> bytes:
    """The daemon's side: the message :func:`main` reads (JSON: small, and parsed by the stdlib). ``fds``
    names what each descriptor sent with it stands for: ``env:<variable>`` or ``spec:<key>``."""
    return json.dumps({"spec": spec, "cwd": cwd, "env": env, "fds": fds or []}).encode()


def main(argv: list[str]) -> int:
    """Wait for an assignment on the control socket ``argv[0]``, then serve it (see the module docstring)."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("faasd _pooled: expected the control socket's descriptor", file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(argv[0]))
    control.set_inheritable(False)
    if "ssl" not in sys.modules:  # As faasd.__main__ does for a watchdog.
        sys.modules["ssl"] = None  # type: ignore[assignment]
    import importlib

    for module in _PRELOAD:
        importlib.import_module(module)
    control.sendall(READY)
    try:
        message, fds, _, _ = socket.recv_fds(control, MAX_ASSIGNMENT_BYTES, len(ENV_FDS) + len(SPEC_FDS))
    except OSError:
        return 0
    if not message:
        control.close()
        for fd in fds:
            os.close(fd)
        return 0  # The daemon is gone, or no longer needs this replica.
    assignment = json.loads(message)
    env: dict[str, str] = assignment["env"]
    values = dict(item.partition("=")[::2] for item in assignment["spec"].split(",") if item)
    for name, fd in zip(assignment["fds"], fds, strict=True):  # Renumbered: the descriptors received.
        kind, _, key = name.partition(":")
        (env if kind == "env" else values)[key] = str(fd)
    from faasd.sandbox.enter import enter

    spec = ",".join(f"{key}={value}" for key, value in values.items() if key not in _ALREADY_APPLIED)
    enter(spec)
    os.chdir(assignment["cwd"])
    for key in [*os.environ]:  # Not os.environ.clear(): its popitem() copies the keys for each one it pops.
        del os.environ[key]
    os.environ.update(env)
    from faasd.watchdog.fork import assign_environ
    from faasd.watchdog.main import main as watchdog_main

    assign_environ(env)

    async def tell_serving() -> bool:
        """Say ``serving`` and wait for ``go`` (see the module docstring); the socket is closed after.
        On whichever loop the watchdog's mode runs (:func:`faasd.watchdog.loop.running_loop`)."""
        with control:
            try:
                control.sendall(SERVING)  # A few bytes into an idle local socket: never blocks.
                control.setblocking(False)
                answer = b""
                while len(answer) < len(GO):
                    await _readable(control)
                    chunk = control.recv(len(GO) - len(answer))
                    if not chunk:
                        break
                    answer += chunk
            except OSError:
                return False
        return answer == GO

    return watchdog_main([], before_accepting=tell_serving)
