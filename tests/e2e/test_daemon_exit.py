"""How ``faasd up`` ends after SIGTERM: its own shutdown, then out, without the interpreter's teardown.

The daemon closes everything it holds itself (the gateway drains, replicas stop, the store and the queue
close, the last log line is written). What Python would do after that -- run ``atexit`` handlers, then
destroy every module and object the daemon imported -- took 80-130 ms of a 150-190 ms stop on a 2-vCPU
VM, with nothing left to close, and ``systemctl stop``/``restart`` waited for it. The daemon now leaves
with ``os._exit`` once its streams are flushed (faasd/upargs.py). The marker of that is an ``atexit``
handler that no longer runs; the test also checks that nothing the teardown used to do was needed: the
last log line is out and a new daemon on the same state dir finds the function.
"""

from __future__ import annotations

from pathlib import Path

from tests.daemon_fixtures import StartDaemon


def test_a_stopped_daemon_leaves_without_the_interpreters_teardown(start_daemon: StartDaemon, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "teardown-ran"
    # Imported by the daemon's interpreter at start (it runs with site; replicas run with -S and do not).
    (site / "sitecustomize.py").write_text(f"import atexit\natexit.register(open, {str(marker)!r}, 'w')\n")
    daemon = start_daemon(PYTHONPATH=str(site))
    daemon.deploy("echo", "cat")
    with daemon.client() as client:
        assert client.post("/function/echo", content=b"hello").text == "hello"

    assert daemon.stop() == 0
    assert "event=stopped" in daemon.logs().splitlines()[-1]  # The last line is out: the streams were flushed.
    assert not marker.exists(), "the interpreter's teardown ran (atexit handlers) after the daemon stopped"

    again = start_daemon(state_dir=daemon.state_dir)
    again.wait_available("echo", 1)
    with again.client() as client:
        assert client.post("/function/echo", content=b"again").text == "again"
