"""The test suite's own safety net, tested: leftover processes are found (orphans included), load
helpers count every outcome, an exception in a thread fails the test, and every test has a timeout."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SLOW_TIMEOUT_S
from tests.daemon_fixtures import StartDaemon
from tests.fault_load import ProcessLoad
from tests.helpers import Load, free_port, in_thread, scaled
from tests.process_tree import Orphans, subreaper

DAEMONIZE = "sh -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & echo started'"
"""A function that leaves a process behind in a session of its own (what a careless handler does)."""
ESCAPE_CGROUPS = "sh -c " + shlex.quote(
    "sh -c 'for procs in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do"
    " echo $$ > $procs; done 2>/dev/null; exec setsid sleep 300 </dev/null >/dev/null 2>&1' & echo started"
)
"""The same, from a function that first leaves its replica's control groups (every hierarchy's root
``cgroup.procs``): a replica's cgroup is removed with everything in it when the replica ends, so only a
process outside it can outlive the daemon. Possible here only because ``sandbox = none`` runs functions
as the daemon's user -- root in CI."""


def test_an_orphan_in_its_own_session_is_found_and_removed() -> None:
    with subreaper():
        orphans = Orphans.snapshot()
        subprocess.run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 &"], check=True, timeout=10)
        left = orphans.wait_gone(0.5)
        assert [what for _, what in left if what.endswith("sleep 300")], left
        orphans.kill()
        assert orphans.alive() == []


def test_the_daemon_fixture_sees_what_a_function_left_behind(start_daemon: StartDaemon) -> None:
    """The old check looked at the replicas only; a daemonized grandchild is found too. Unsandboxed, and
    out of its cgroup: a sandbox, or a replica's cgroup, ends every process in it
    (tests/e2e/test_sandbox.py, tests/e2e/test_cgroups.py), so nothing could be left to find."""
    daemon = start_daemon(args=("--sandbox", "none"))
    orphans = Orphans.snapshot()  # The fixture's own snapshot is older: this one proves the same thing.
    daemon.deploy("careless", ESCAPE_CGROUPS if os.geteuid() == 0 else DAEMONIZE)
    with daemon.client() as client:
        assert client.post("/function/careless").text == "started\n"
    assert daemon.stop() == 0
    left = orphans.wait_gone(scaled(2))
    assert [what for _, what in left if what.endswith("sleep 300")], left
    orphans.kill()  # Or the fixture would fail this test: the very check under test.


def test_load_counts_every_outcome_exceptions_included() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Load(lambda: httpx.Client(base_url=url, timeout=1), lambda c: c.get("/"), workers=2, max_calls=5) as load:
        deadline = time.monotonic() + scaled(10)
        while load.calls < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert (load.calls, load.ok, load.failed) == (10, 0, 10), load.summary()
    assert load.outcomes == {"ConnectError": 10} and "ConnectError" in load.failures[0]


def test_process_load_counts_every_outcome_exceptions_included() -> None:
    """The same as :class:`Load`'s, from its own process; it stops on its own after ``max_calls``."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with ProcessLoad(url, "/", workers=2, max_calls=5, timeout=1) as load:
        load.wait(timeout=10)
        assert load.done()
    assert (load.calls, load.ok, load.failed) == (10, 0, 10), load.summary()
    assert load.outcomes == {"ConnectError": 10} and "ConnectError" in load.failures[0]


def test_process_load_records_answers_and_stops_when_told(start_daemon: StartDaemon) -> None:
    """Answers are judged by ``ok`` and kept in ``responses``; leaving the block stops the child."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with ProcessLoad(daemon.url, "/function/echo", body=b"hi", pause=0.01, ok=lambda a: a.text == "hi") as load:
        load.wait_ok(3)
    assert load.done()  # Ended by the block, long before its 120 s.
    assert load.failed == 0 and load.calls >= 3 and set(load.responses) == {(200, "hi")}, load.summary()


def test_in_thread_hands_the_exception_to_the_reader() -> None:
    def boom() -> None:
        raise ConnectionResetError("reset by peer")

    with pytest.raises(ConnectionResetError):
        in_thread(boom).result(timeout=scaled(5))


def test_every_test_has_a_timeout(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("timeout") is not None:
        pytest.skip("--timeout given on the command line: it replaces the configured default")
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args[0] == scaled(120.0)
    assert SLOW_TIMEOUT_S > 120


def test_a_thread_exception_and_a_hang_fail_their_tests(tmp_path: Path) -> None:
    """Run pytest on two small tests with this repository's settings: both must fail, not pass or hang."""
    root = Path(__file__).resolve().parent.parent.parent
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import threading, time
            import pytest

            def test_thread_dies():
                thread = threading.Thread(target=lambda: 1 / 0)
                thread.start()
                thread.join()

            @pytest.mark.timeout(1)
            def test_hangs():
                time.sleep(60)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(root / "pyproject.toml"), "--rootdir", str(tmp_path), str(sample)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        cwd=tmp_path,
    )  # fmt: skip
    assert "2 failed" in result.stdout, result.stdout[-3000:]
    assert "PytestUnhandledThreadExceptionWarning" in result.stdout
    assert "Timeout" in result.stdout
