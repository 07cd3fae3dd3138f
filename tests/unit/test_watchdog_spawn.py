"""faasd.watchdog.spawn: what a fork-mode function's process sees, and how a start that fails is reported,
with both primitives (``_posixsubprocess.fork_exec``, the default, and the ``os.posix_spawn`` fallback):
the faster one must not change anything a function can observe."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading

import pytest

from faasd.watchdog import spawn as spawn_module
from faasd.watchdog.spawn import SpawnThreads, spawn
from tests.process_tree import proc_table

CAT = os.fsencode(shutil.which("cat") or "/bin/cat")


@pytest.fixture(params=["fork_exec", "posix_spawn"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(spawn_module, "backend", request.param)
    return request.param


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(argv: list[bytes], env: list[bytes], stdin: int = -1) -> tuple[int, bytes, int]:
    """Spawn with stdout and stderr on one pipe; (pid, output, wait status)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn(CAT if argv[0] == b"cat" else argv[0], argv, env, stdin, write_end, write_end)
    finally:
        os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return pid, b"".join(chunks), status


def test_the_child_gets_its_own_group_default_signals_and_only_the_env_given(backend: str) -> None:
    pid, out, status = run([b"cat", b"/proc/self/stat", b"/proc/self/status", b"/proc/self/environ"], [b"A=1"])
    assert os.waitstatus_to_exitcode(status) == 0
    stat, _, rest = out.partition(b"\n")
    fields = stat[stat.rindex(b")") + 2 :].split()
    assert int(fields[2]) == pid  # process group: its own (a kill of the group reaches all it starts)
    sig_ign = next(line for line in rest.splitlines() if line.startswith(b"SigIgn:"))
    # SIGPIPE and SIGXFSZ (which Python ignores) back to default: no standard signal ignored. (glibc's
    # posix_spawn leaves its own internal real-time signals 32 and 33 ignored; fork_exec does not.)
    assert int(sig_ign.split()[1], 16) & 0x7FFFFFFF == 0
    assert rest.endswith(b"A=1\x00")  # /proc/self/environ: exactly what was given


def test_stdin_is_the_fd_given_or_dev_null(backend: str) -> None:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.write(write_end, b"body")
    os.close(write_end)
    try:
        assert run([b"cat"], [], stdin=read_end)[1] == b"body"
    finally:
        os.close(read_end)
    assert run([b"cat"], [])[1] == b""  # /dev/null: EOF at once


def _children() -> set[int]:
    """This process's children now, zombies included. Not ``waitpid(-1)``: the test process is a child
    subreaper (tests/process_tree.py), so another test's orphans may be its children too."""
    me = os.getpid()
    return {pid for pid, info in proc_table().items() if info.ppid == me}


def test_a_missing_executable_raises_enoent_and_leaves_no_fd_nor_zombie(backend: str) -> None:
    before, children_before = fd_count(), _children()
    with pytest.raises(OSError) as caught:
        spawn(b"/nonexistent/function", [b"function"], [], -1, 1, 2)
    assert caught.value.errno == errno.ENOENT
    assert fd_count() == before
    assert _children() <= children_before  # The child that failed to exec was reaped: no new zombie.


def test_an_environment_string_past_the_kernel_limit_raises_e2big(backend: str) -> None:
    with pytest.raises(OSError) as caught:
        spawn(CAT, [b"cat"], [b"BIG=" + b"v" * 200_000], -1, 1, 2)
    assert caught.value.errno == errno.E2BIG


@pytest.mark.parametrize("where", ["argv", "env"])
def test_a_nul_byte_raises_value_error_before_anything_runs(backend: str, where: str) -> None:
    argv, env = ([b"c\x00at"], [b"A=1"]) if where == "argv" else ([b"cat"], [b"A=1\x00x"])
    before = fd_count()
    with pytest.raises(ValueError, match="null"):
        spawn(CAT, argv, env, -1, 1, 2)
    assert fd_count() == before


def test_spawn_threads_hand_every_result_back_on_the_loop() -> None:
    async def main() -> list[tuple[int, BaseException | None]]:
        loop = asyncio.get_running_loop()
        threads = SpawnThreads(loop, 2)
        results: list[tuple[int, BaseException | None]] = []
        finished = asyncio.Event()

        def done(pid: int, exc: BaseException | None) -> None:
            assert asyncio.get_running_loop() is loop  # called on the loop, not in a spawn thread
            results.append((pid, exc))
            if len(results) == 3:
                finished.set()

        for executable in (CAT, b"/nonexistent/function", CAT):
            threads.submit(executable, [b"cat"], [], (-1, 1, 2), done)
        await asyncio.wait_for(finished.wait(), 10)
        threads.close()
        return results

    results = asyncio.run(main())
    started = [pid for pid, exc in results if exc is None]
    failed = [exc for _, exc in results if exc is not None]
    assert len(started) == 2 and all(pid > 0 for pid in started)
    assert len(failed) == 1 and isinstance(failed[0], OSError) and failed[0].errno == errno.ENOENT
    for pid in started:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.parametrize("started", [0, 1], ids=["no thread", "one of two"])
def test_spawn_threads_the_kernel_refused_are_started_again_later(
    started: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork bomb fills its replica's ``pids.max``, and a thread counts as a process: ``Thread.start``
    raises. That call is answered by the error; a later one must still be spawned, not queued for a
    thread that never ran (seen: a call stuck at pid 0 past its deadline, never answered, a 502 from the
    gateway 3 s later)."""
    real_start = threading.Thread.start
    state = {"starts": 0, "refusing": True}

    def start(thread: threading.Thread) -> None:
        state["starts"] += 1
        if state["refusing"] and state["starts"] > started:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    async def main() -> tuple[BaseException | None, int, BaseException | None]:
        loop = asyncio.get_running_loop()
        threads = SpawnThreads(loop, 2)
        results: asyncio.Queue[tuple[int, BaseException | None]] = asyncio.Queue()

        def done(pid: int, exc: BaseException | None) -> None:
            results.put_nowait((pid, exc))

        refused: BaseException | None = None
        monkeypatch.setattr(threading.Thread, "start", start)
        try:
            threads.submit(CAT, [b"cat"], [], (-1, 1, 2), done)
        except RuntimeError as exc:
            refused = exc
        if refused is None:  # One thread ran: it took the call.
            first, error = await asyncio.wait_for(results.get(), 10)
            assert error is None
            os.waitpid(first, 0)
        state["refusing"] = False
        threads.submit(CAT, [b"cat"], [], (-1, 1, 2), done)  # The kernel allows threads again.
        pid, exc = await asyncio.wait_for(results.get(), 10)
        threads.close()
        return refused, pid, exc

    refused, pid, exc = asyncio.run(main())
    assert (refused is not None) == (started == 0)
    assert exc is None and pid > 0
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.parametrize("outcome", ["started", "failed"])
def test_finish_does_not_wait_for_another_holder_of_the_error_pipe(outcome: str) -> None:
    """finish() runs on the event loop for a spawn thread's start(): meanwhile the other spawn thread's
    vfork'd child, not yet exec'd, holds a copy of every fd, this start's error pipe included. finish()
    must not wait for it (a blocking read would), and must still see a failure the child reported."""
    executable = CAT if outcome == "started" else b"/nonexistent/function"
    pid, err_read, err_write = spawn_module.start(executable, [b"cat"], [], -1, 1, 2)
    if spawn_module.backend != "fork_exec":
        pytest.skip("posix_spawn has no error pipe")
    other_holder = os.dup(err_write)  # as the other thread's child has it until its exec
    results: list[int | BaseException] = []

    def finish() -> None:
        try:
            results.append(spawn_module.finish((pid, err_read, err_write)))
        except OSError as exc:
            results.append(exc)

    thread = threading.Thread(target=finish)
    thread.start()
    thread.join(2)
    waited = not results
    os.close(other_holder)  # ends a read that blocked, so the test never hangs
    thread.join(5)
    assert not waited, "finish() waited for the other holder of the error pipe's write end"
    if outcome == "started":
        assert results == [pid]
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        assert isinstance(results[0], OSError) and results[0].errno == errno.ENOENT
