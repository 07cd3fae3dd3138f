"""Start a fork-mode call's process: CPython's own vfork + exec (``_posixsubprocess``), not ``os.posix_spawn``.

Why (measured on the 2-core project machine, Python 3.11, ``bench/watchdog.py`` and docs/watchdog.md
"Performance"): the watchdog spawns on its event loop, and the loop waits while the vfork'd child runs
up to its ``execve``. glibc's ``posix_spawn`` child resets every one of the 64 signals' handlers one
``sigaction`` at a time and checks ``RLIMIT_NOFILE`` once per file action: the call blocked the loop for
~175 us (p50). ``_posixsubprocess.fork_exec`` -- what :mod:`subprocess` runs, also a vfork -- blocks all
signals around the vfork instead; its child dup2s, resets SIGPIPE/SIGXFSZ, reads each signal's handler
(64 ``rt_sigaction`` reads under ``strace -f``: CPython resets any handler Python installed, as the signals
are blocked) but resets only SIGINT and SIGTERM, joins its own process group and execs: ~30-45 us, same
machine, same run. Fork mode spawns on its event loop, which waits that long (docs/watchdog.md says why
not on threads).

The child sees the same thing as with ``posix_spawn``: stdin/stdout/stderr from the fds given, its own
process group, SIGPIPE and SIGXFSZ back to default, the environment given (nothing else of ours: every
fd we hold is close-on-exec). An exec failure comes back through a close-on-exec error pipe, as
:mod:`subprocess` does, and is raised here as the ``OSError`` ``posix_spawn`` would have raised; a NUL
in an argument or a variable raises ``ValueError`` before anything runs.

``fork_exec``'s argument list is private to CPython and has been the same from 3.11 to 3.13; should
another version change it, the ``TypeError`` comes before any process exists, and this module falls back
to ``os.posix_spawn`` for good (:data:`backend` says which one runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # signal's own functions without its enum wrappers (docs/coldstart.md)

_fork_exec: Callable[..., int] | None
try:
    # Typed loosely: the stub's parameter types differ between typeshed releases (cwd and preexec_fn take
    # None at run time, as subprocess passes them).
    from _posixsubprocess import fork_exec as _imported_fork_exec

    _fork_exec = _imported_fork_exec
except ImportError:  # Not CPython on POSIX: posix_spawn only.
    _fork_exec = None

__all__ = ["backend", "prepare", "spawn"]

_SIGDEF = (signal.SIGPIPE, signal.SIGXFSZ)
"""Signals Python ignores that must be back to default in the function (as ``subprocess`` does)."""

backend = "fork_exec" if _fork_exec is not None else "posix_spawn"
"""Which primitive starts processes: ``fork_exec`` (``_posixsubprocess``) or ``posix_spawn`` (fallback)."""

_devnull = -1


def prepare() -> None:
    """Open the one read-only ``/dev/null`` (close-on-exec) every call without a body gets as stdin: once,
    before the first call, so the watchdog's open fds do not change with its calls."""
    global _devnull
    if _devnull < 0:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def spawn(executable: bytes, argv: list[bytes], env: list[bytes], stdin: int, stdout: int, stderr: int) -> int:
    """Start ``executable`` with ``argv`` and ``env`` (``b"NAME=value"`` items) on the fds given (``stdin``
    -1: ``/dev/null``; ``stderr`` may equal ``stdout``), in its own process group; returns its pid.

    Raises:
        OSError: it could not start (fork or exec failed), with the errno ``execve`` gave.
        ValueError: a NUL byte in an argument or a variable.
    """
    global backend
    if stdin < 0:
        prepare()
        stdin = _devnull
    if backend == "fork_exec":
        try:
            return _spawn_fork_exec(executable, argv, env, stdin, stdout, stderr)
        except TypeError:  # Another CPython's fork_exec signature: nothing was started.
            backend = "posix_spawn"
    actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
    environ = dict(item.split(b"=", 1) for item in env)
    return os.posix_spawn(executable, argv, environ, file_actions=actions, setpgroup=0, setsigdef=_SIGDEF)


def _spawn_fork_exec(
    executable: bytes, argv: list[bytes], env: list[bytes], stdin: int, stdout: int, stderr: int
) -> int:
    assert _fork_exec is not None
    # fork_exec returns once its vfork'd child has exec'd (its copy of the write end closed on exec) or has
    # written why it could not and exited, so a report, if any, is in the pipe by then. Non-blocking all the
    # same: a read that found no EOF (another child of this process between its vfork and exec holding a
    # copy) must not block the event loop.
    err_read, err_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        pid = _fork_exec(
            argv,
            (executable,),
            False,  # close_fds: every fd of ours is close-on-exec already
            (),  # pass_fds
            None,  # cwd
            env,
            stdin,
            -1,  # p2cwrite
            -1,  # c2pread
            stdout,
            -1,  # errread
            stderr,
            err_read,
            err_write,
            True,  # restore_signals: SIGPIPE, SIGXFSZ back to default
            False,  # start_new_session
            0,  # process_group: its own
            None,  # gid (None, not -1: any other value makes CPython fork instead of vfork)
            None,  # extra_groups
            None,  # uid
            -1,  # umask
            None,  # preexec_fn
            True,  # allow_vfork
        )
    except BaseException:
        os.close(err_read)
        raise
    finally:
        os.close(err_write)
    try:
        failure = os.read(err_read, 4096)
    except BlockingIOError:  # No EOF yet, no report either (see above).
        failure = b""
    finally:
        os.close(err_read)
    if failure:
        os.waitpid(pid, 0)  # The child _exit'ed after writing why.
        raise _exec_error(failure)
    return pid


def _exec_error(data: bytes) -> OSError:
    """The ``OSError`` for the child's report ``b"OSError:<hex errno>:<where>"`` (as :mod:`subprocess` reads it)."""
    _, _, rest = data.partition(b":")
    hex_errno, _, _ = rest.partition(b":")
    try:
        number = int(hex_errno, 16)
    except ValueError:
        return OSError(f"cannot start process: {data[:200].decode('ascii', 'replace')}")
    return OSError(number, os.strerror(number))
