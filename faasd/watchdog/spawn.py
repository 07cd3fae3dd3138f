"""Start a fork-mode call's process: CPython's own vfork + exec (``_posixsubprocess``), not ``os.posix_spawn``.

Why (measured on the 2-core project machine, Python 3.11, ``bench/watchdog.py`` and docs/watchdog.md
"Performance"): the watchdog spawns on its event loop, and the loop waits while the vfork'd child runs
up to its ``execve``. glibc's ``posix_spawn`` child resets every one of the 64 signals' handlers one
``sigaction`` at a time and checks ``RLIMIT_NOFILE`` once per file action: the call blocked the loop for
~175 us (p50). ``_posixsubprocess.fork_exec`` -- what :mod:`subprocess` runs, also a vfork -- blocks all
signals around the vfork instead; its child dup2s, resets SIGPIPE/SIGXFSZ, reads each signal's handler
(64 ``rt_sigaction`` reads under ``strace -f``: CPython resets any handler Python installed, as the signals
are blocked) but resets only SIGINT and SIGTERM, joins its own process group and execs: ~30-45 us, same
machine, same run. A call alone is spawned on the event loop, which
waits that long; with other calls in flight :class:`SpawnThreads` spawn, and the loop goes on meanwhile.

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
    import asyncio
    import signal
    from queue import SimpleQueue
    from threading import Thread
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

__all__ = ["SpawnDone", "SpawnThreads", "Started", "backend", "finish", "prepare", "spawn", "start"]

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
    return finish(start(executable, argv, env, stdin, stdout, stderr))


Started = tuple[int, int, int]
"""(pid, read end, write end of the exec error pipe) from :func:`start`: the ends are -1 for ``posix_spawn``."""


def start(executable: bytes, argv: list[bytes], env: list[bytes], stdin: int, stdout: int, stderr: int) -> Started:
    """The first half of :func:`spawn`: the process exists (or failed to exec) once this returns; what
    happened is :func:`finish`'s to find out, and its to close the error pipe (on whatever thread).

    Raises: as :func:`spawn` when nothing was started (the error pipe is then closed).
    """
    global backend
    if stdin < 0:
        prepare()
        stdin = _devnull
    if backend == "fork_exec":
        try:
            return _start_fork_exec(executable, argv, env, stdin, stdout, stderr)
        except TypeError:  # Another CPython's fork_exec signature: nothing was started.
            backend = "posix_spawn"
    actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
    environ = dict(item.split(b"=", 1) for item in env)
    pid = os.posix_spawn(executable, argv, environ, file_actions=actions, setpgroup=0, setsigdef=_SIGDEF)
    return pid, -1, -1


def finish(started: Started) -> int:
    """The second half of :func:`spawn`: close the error pipe and return the pid, or raise the ``OSError``
    the exec failed with (the failed child reaped)."""
    pid, err_read, err_write = started
    if err_read < 0:
        return pid
    os.close(err_write)
    try:
        failure = os.read(err_read, 4096)
    except BlockingIOError:  # No EOF yet, no report either: see _start_fork_exec.
        failure = b""
    finally:
        os.close(err_read)
    if failure:
        os.waitpid(pid, 0)  # The child _exit'ed after writing why.
        raise _exec_error(failure)
    return pid


def _start_fork_exec(
    executable: bytes, argv: list[bytes], env: list[bytes], stdin: int, stdout: int, stderr: int
) -> Started:
    assert _fork_exec is not None
    # Non-blocking: fork_exec returns once its vfork'd child has exec'd (the child's copy of the write end
    # closed) or has written why it could not and exited, so a report, if any, is already in the pipe. No
    # EOF yet only means another spawn thread's child, between its own vfork and exec, holds a copy of the
    # write end for a moment: a blocking read would wait for that child, on the event loop (finish).
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
        os.close(err_write)
        raise
    return pid, err_read, err_write


def _exec_error(data: bytes) -> OSError:
    """The ``OSError`` for the child's report ``b"OSError:<hex errno>:<where>"`` (as :mod:`subprocess` reads it)."""
    _, _, rest = data.partition(b":")
    hex_errno, _, _ = rest.partition(b":")
    try:
        number = int(hex_errno, 16)
    except ValueError:
        return OSError(f"cannot start process: {data[:200].decode('ascii', 'replace')}")
    return OSError(number, os.strerror(number))


SpawnDone = Callable[[int, BaseException | None], None]
"""Called on the event loop with (pid, None) once the process exists, or (0, the error) when it could not start."""


class SpawnThreads:
    """A few threads that run :func:`spawn` off the event loop, owned by fork mode's runner.

    Why: ``fork_exec`` lets other threads run while its vfork'd child execs (the child gives up the GIL
    just before ``execve``), but the thread that called it waits until the exec is done -- on a busy
    machine the child may first wait its turn for a CPU. Run on the event loop, that wait is the
    loop's; here it is a spawn thread's, and the loop answers other calls meanwhile, while two
    spawns can proceed on two cores (as the Go watchdog's goroutines do).

    Structure: the threads start with the first :meth:`submit` (a watchdog that never has two calls at
    once never starts them, and its start-up imports nothing more: ``_queue``, not ``queue``, which
    costs ~1.6 ms to import), and :meth:`close` (the runner's ``aclose``) stops and joins them; a job is
    one spawn, its result handed back with ``call_soon_threadsafe``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self._loop = loop
        self._count = count
        self._jobs: SimpleQueue[tuple[tuple[bytes, list[bytes], list[bytes], int, int, int], SpawnDone] | None]
        self._jobs = None  # type: ignore[assignment]  # created with the threads
        self._threads: list[Thread] = []

    def submit(
        self, executable: bytes, argv: list[bytes], env: list[bytes], fds: tuple[int, int, int], done: SpawnDone
    ) -> None:
        """Spawn in a thread; ``done`` is called on the loop. The fds must stay open until then.

        Raises:
            RuntimeError: no spawn thread runs, and the kernel refused to start one (the call answers by it).
        """
        if len(self._threads) < self._count:
            self._start_threads()
        self._jobs.put(((executable, argv, env, *fds), done))

    def _start_threads(self) -> None:
        """Start the threads not running yet. The kernel may refuse one: a thread counts against the
        replica's ``pids.max``, which a fork bomb fills. With one running, spawns go on and the next
        :meth:`submit` tries again; with none, the caller gets the error -- a job queued then would wait
        for a thread that never ran (it did: a call stuck unspawned past its deadline, never answered)."""
        import threading  # Here: a watchdog that never has two calls at once does without it.

        if self._jobs is None:
            from _queue import SimpleQueue  # queue.SimpleQueue itself, without queue's imports

            self._jobs = SimpleQueue()
        while len(self._threads) < self._count:
            thread = threading.Thread(target=self._work, name=f"spawn-{len(self._threads)}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread"
                if not self._threads:
                    raise
                return
            self._threads.append(thread)

    def _work(self) -> None:
        jobs = self._jobs
        call_soon = self._loop.call_soon_threadsafe
        finished = self._finished
        while (job := jobs.get()) is not None:
            args, done = job
            try:
                started = start(*args)
            except Exception as exc:  # Handed to the call, which answers by it.
                call_soon(done, 0, exc)
            else:
                call_soon(finished, started, done)

    @staticmethod
    def _finished(started: Started, done: SpawnDone) -> None:
        """On the loop: the error pipe's three syscalls are the loop's, not the spawn thread's -- each one a
        thread makes gives up the GIL and must win it back from the loop (on a busy machine, a wait for
        a CPU as well: at c16 the loop's own ``recv`` and ``send`` then measured ~0.3 ms each)."""
        try:
            pid = finish(started)
        except Exception as exc:
            done(0, exc)
        else:
            done(pid, None)

    def close(self) -> None:
        """Let the threads finish the spawns queued, then join them (a spawn takes milliseconds)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
