"""What this machine supports, decided once when the local backend starts (blocking: run in a thread).

``sandbox = auto`` takes the first that works of:

1. ``bwrap`` -- bubblewrap is on ``PATH`` and a test sandbox, built exactly as a replica's is, starts
   the watchdog's entry point under the function uid (as root) and exits 0;
2. ``uid`` -- the daemon is root and a test replica can drop to a function uid and still import faasd:
   the interpreter and faasd must be readable by any user (an interpreter under ``/root`` is not; then
   ``/usr/bin/python3`` of the same version is used instead, else uid mode is not possible);
3. ``none`` -- with a warning: functions run as the daemon's user.

An explicitly requested mode that does not work is an error at start (:class:`SandboxUnavailable`),
never a silent downgrade. Also here: the /proc reads the backend needs (:func:`busy_uids`,
:func:`sandboxed_pid`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import faasd
from faasd.errors import FaasdError
from faasd.procstat import parent_of
from faasd.runtime import SelfCommand
from faasd.sandbox.files import prepare_work_root, reachable_by_others, work_root_for
from faasd.sandbox.limits import Limits
from faasd.sandbox.plan import REQUESTS, ReplicaSandbox, Sandbox, plan_launch
from faasd.sandbox.uids import PROBE_UID

__all__ = [
    "SandboxUnavailable",
    "busy_uids",
    "kill_uid",
    "resolve",
    "sandboxed_pid",
    "signal_sandboxed",
    "start_check",
]

PROBE_TIMEOUT_S = 20.0

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""What a bwrap replica sees of the host besides its own files: programs, libraries, configuration."""

FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")

UNSAFE = (
    "functions run as the daemon's user: they can read its state dir (password, database, every secret) "
    "and each other's files"
)


class SandboxUnavailable(FaasdError):
    """The requested sandbox cannot work on this machine; the message says why and what to do."""


def resolve(requested: str, *, state_dir: str, command: SelfCommand) -> Sandbox:
    """Decide the mode (see the module docstring).

    Raises:
        SandboxUnavailable: an explicit ``bwrap`` or ``uid`` that cannot work here.
    """
    if requested not in REQUESTS:
        raise SandboxUnavailable(f"sandbox={requested!r}: use one of {', '.join(REQUESTS)}")
    root = os.geteuid() == 0
    if requested == "none":
        return Sandbox(mode="none", requested=requested, root=root, reason=f"sandbox=none: {UNSAFE}")
    why_not: list[str] = []
    if requested in ("auto", "bwrap"):
        bwrap = shutil.which("bwrap")
        setsid = shutil.which("setsid")
        problem = "bwrap is not installed (Debian: apt-get install bubblewrap)"
        if bwrap and not setsid:
            problem = "setsid (util-linux) is not installed"
        elif bwrap and setsid:
            sandbox = _bwrap_sandbox(requested, bwrap, root, state_dir, command, (setsid, "--wait"))
            probed = _probe(sandbox, command, state_dir)
            if probed is None:
                return sandbox
            problem = f"bwrap cannot make a sandbox here: {probed}"
        if requested == "bwrap":
            raise SandboxUnavailable(f"sandbox=bwrap: {problem}")
        why_not.append(problem)
    if requested in ("auto", "uid"):
        if root:
            uid_sandbox, problem = _uid_sandbox(requested, state_dir, command, why_not)
            if uid_sandbox is not None:
                probed = _probe(uid_sandbox, command)
                if probed is None:
                    return uid_sandbox
                problem = probed
            if requested == "uid":
                raise SandboxUnavailable(f"sandbox=uid: {problem}")
            why_not.append(f"uid mode: {problem}")
        elif requested == "uid":
            raise SandboxUnavailable("sandbox=uid needs the daemon to run as root (to give functions uids); use bwrap")
        else:
            why_not.append("uid mode needs root")
    reason = f"no sandbox ({'; '.join(why_not)}): {UNSAFE}"
    return Sandbox(mode="none", requested=requested, root=root, reason=reason)


def _bwrap_sandbox(
    requested: str, bwrap: str, root: bool, state_dir: str, command: SelfCommand, shim: tuple[str, ...]
) -> Sandbox:
    system: list[tuple[str, str]] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            system.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            system.append((path, ""))
    binds = [*_interpreter_paths(), _faasd_path(command)]
    resolv = os.path.realpath("/etc/resolv.conf")  # Often a link into /run, which is not there.
    if os.path.isfile(resolv) and not _under(resolv, [path for path, target in system if not target]):
        binds.append(resolv)
    binds = _outermost(binds)
    bound = [path for path, target in system if not target] + binds
    state = os.path.realpath(state_dir)
    hide = (state,) if _under(state, bound) else ()
    how = "as root: each function has its own uid" if root else "user namespace: functions keep the daemon's uid"
    return Sandbox(
        mode="bwrap",
        requested=requested,
        root=root,
        bwrap=bwrap,
        binds=tuple(binds),
        system=tuple(system),
        hide=hide,
        shim=shim,
        reason=f"bubblewrap {bwrap} ({how})",
    )


def _uid_sandbox(
    requested: str, state_dir: str, command: SelfCommand, why_not: list[str]
) -> tuple[Sandbox | None, str]:
    """(sandbox, "") or (None, why uid mode is not possible)."""
    code = _faasd_path(command)
    problem = reachable_by_others(code)
    if problem:
        return None, f"function uids cannot read faasd ({problem}); install it under /usr/local/lib/faasd"
    python, problem = _public_python()
    if not python:
        return None, problem
    work_root = work_root_for(state_dir)
    try:
        prepare_work_root(work_root)
    except OSError as exc:
        return None, f"cannot prepare the functions' directory {work_root}: {exc}"
    reason = "per-function uids (bubblewrap is better: " + ("; ".join(why_not) or "not requested") + ")"
    return Sandbox(mode="uid", requested=requested, root=True, python=python, work_root=work_root, reason=reason), ""


def _public_python() -> tuple[str, str]:
    """An interpreter of this version that any user can run: ours if it is, else a system one."""
    ours = sys.executable
    problem = reachable_by_others(ours) or reachable_by_others(os.path.dirname(os.__file__))
    if problem is None:
        return ours, ""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in FALLBACK_PYTHONS:
        if not os.access(candidate, os.X_OK) or reachable_by_others(candidate):
            continue
        try:
            done = subprocess.run(
                [candidate, "-S", "-c", "import os, sys; print('%d.%d' % sys.version_info[:2], os.__file__)"],
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        found, _, stdlib = done.stdout.strip().partition(" ")
        if done.returncode == 0 and found == version and not reachable_by_others(os.path.dirname(stdlib)):
            return candidate, ""
    return "", (
        f"function uids cannot run this interpreter ({problem}) and there is no readable python{version} in "
        f"{' or '.join(FALLBACK_PYTHONS)}"
    )


_early: dict[tuple[str, str, tuple[str, ...]], tuple[Sandbox, subprocess.Popen[str]]] = {}
"""Checks started by :func:`start_check`, by (request, state dir, command): taken by :func:`resolve`."""


def start_check(requested: str, *, state_dir: str, command: SelfCommand) -> None:
    """Start :func:`resolve`'s bwrap check now, in the background; never raises.

    The check starts a test replica (an interpreter in a sandbox), most of the time the sandbox adds to
    the daemon's start. ``faasd up`` calls this before it imports the daemon, so the test replica runs
    on the other core meanwhile; :func:`resolve` with the same arguments takes its result (and starts
    its own check when there is none, or when what it would check differs). Nothing else changes.
    """
    key = (requested, os.path.realpath(state_dir), command.argv)
    if requested not in ("auto", "bwrap") or key in _early:
        return
    bwrap, setsid = shutil.which("bwrap"), shutil.which("setsid")
    if not (bwrap and setsid):
        return
    sandbox = _bwrap_sandbox(requested, bwrap, os.geteuid() == 0, state_dir, command, (setsid, "--wait"))
    with contextlib.suppress(OSError):
        _early[key] = (sandbox, _start_probe(sandbox, command))


def _probe(sandbox: Sandbox, command: SelfCommand, state_dir: str = "") -> str | None:
    """Start what a replica starts, confined like one, up to the watchdog's entry point; None if it worked."""
    early = _early.pop((sandbox.requested, os.path.realpath(state_dir), command.argv), None) if state_dir else None
    try:
        if early is not None and early[0] == sandbox:
            process = early[1]
        else:
            if early is not None:
                _finish_probe(early[1])  # Checked something else: reap it.
            process = _start_probe(sandbox, command)
    except OSError as exc:
        return exc.strerror or str(exc)
    return _finish_probe(process)


def _start_probe(sandbox: Sandbox, command: SelfCommand) -> subprocess.Popen[str]:
    # /usr stands for a function's directory: any uid can enter it, and bwrap shows it anyway.
    replica = ReplicaSandbox(workdir="/usr", secrets=False, uid=PROBE_UID, limits=Limits())
    if sandbox.mode == "uid":
        replica = replace(replica, scratch=sandbox.work_root)
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    launch = plan_launch(sandbox, replica, command.argv, env, ("watchdog", "--help"))
    return subprocess.Popen(
        launch.argv,
        env=launch.env,
        cwd=launch.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # As a replica: its autogroup nice value must not be the daemon's.
    )


def _finish_probe(process: subprocess.Popen[str]) -> str | None:
    """Wait for a test replica (bounded); None when it printed the watchdog's usage and exited 0."""
    try:
        stdout, stderr = process.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return f"a test replica did not start within {PROBE_TIMEOUT_S:g}s"
    if process.returncode != 0 or "usage: faasd watchdog" not in stdout:
        lines = [line for line in (stderr or stdout).splitlines() if line.strip()]
        return lines[-1] if lines else f"a test replica exited with {process.returncode}"
    return None


def _interpreter_paths() -> list[str]:
    """What the interpreter needs, outside /usr: its prefixes (a venv and the Python it was made from)."""
    prefixes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    paths = {os.path.realpath(prefix) for prefix in prefixes}
    executable = os.path.realpath(sys.executable)
    if not any(_under(executable, [path]) for path in paths):
        paths.add(os.path.dirname(executable))
    return sorted(path for path in paths if not _under(path, ["/usr"]))


def _faasd_path(command: SelfCommand) -> str:
    """The zipapp, or the package directory of a source checkout."""
    return command.zipapp or os.path.dirname(os.path.abspath(faasd.__file__))


def _under(path: str, parents: list[str]) -> bool:
    return any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in parents)


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` without those inside another one (binding the outer one is enough)."""
    ordered = sorted(set(paths))
    return [path for path in ordered if not _under(path, [other for other in ordered if other != path])]


# -- /proc ------------------------------------------------------------------------------------------


def busy_uids() -> set[int]:
    """Real uids of every live process (blocking)."""
    return {uid for uid in map(_uid, _pids()) if uid >= 0}


SANDBOX_DEPTH = 3
"""setsid -> bwrap -> bwrap's init (pid 1 inside) -> the command (pid 2 inside)."""


def sandboxed_pid(outer: int, candidates: list[int] | None = None) -> int | None:
    """The host pid of the command of the sandbox started as ``outer`` (pid 2 of its PID namespace, under
    bwrap's own init), or None when it is not (or no longer) there. Blocking.

    ``candidates``: the processes it can only be one of -- its replica's cgroup's members -- checked one by one.
    Without them every process's parent is read, three levels down: about 90 reads of ``/proc/<pid>/stat`` per
    level with 90 processes, 5 ms of CPU on the project's 2-core VMs for each replica stopped, and ten times that
    on a host running a thousand processes.
    """
    if candidates is not None:
        for pid in candidates:
            if pid != outer and _inner_pid(pid) == 2 and outer in _ancestors(pid, SANDBOX_DEPTH):
                return pid
        return None
    parents = {outer}
    for _ in range(SANDBOX_DEPTH):
        children = {pid for pid in _pids() if parent_of(pid) in parents}
        for pid in children:
            if _inner_pid(pid) == 2:
                return pid
        parents = children
    return None


def signal_sandboxed(outer: int, signum: int, candidates: list[int] | None = None) -> bool:
    """Send ``signum`` to the process the bwrap ``outer`` runs; False when it is not there (blocking).
    ``candidates`` as for :func:`sandboxed_pid`.

    Through a pidfd taken before the process is checked again, so a pid reused in between cannot be hit.
    """
    pid = sandboxed_pid(outer, candidates)
    if pid is None:
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if _inner_pid(pid) != 2 or outer not in _ancestors(pid, SANDBOX_DEPTH):
            return False
        signal.pidfd_send_signal(fd, signum)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is ``uid``; how many (blocking). For a function's uid once its
    replicas are gone: whatever still runs as it is a leftover of that function."""
    killed = 0
    for pid in _pids():
        if _uid(pid) == uid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def _uid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            for line in file:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def _pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _ancestors(pid: int, depth: int) -> list[int]:
    found = []
    for _ in range(depth):
        parent = parent_of(pid)
        if parent is None:
            break
        found.append(pid := parent)
    return found


def _inner_pid(pid: int) -> int:
    """The pid of ``pid`` in its own PID namespace; -1 when it is in this one (or gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            for line in file:
                if line.startswith(b"NSpid:"):
                    fields = line.split()
                    return int(fields[-1]) if len(fields) > 2 else -1
    except (OSError, ValueError, IndexError):
        pass
    return -1
