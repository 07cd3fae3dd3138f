"""faasd.watchdog.spawn: what a fork-mode function's process sees, and how a start that fails is reported,
with both primitives (``_posixsubprocess.fork_exec``, the default, and the ``os.posix_spawn`` fallback):
the faster one must not change anything a function can observe."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from faasd.watchdog import spawn as spawn_module
from faasd.watchdog.spawn import spawn
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
