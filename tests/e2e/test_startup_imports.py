"""What ``faasd up`` and ``faasd watchdog`` import before they answer (docs/coldstart.md), read from
Python's own import profiler (``PYTHONPROFILEIMPORTTIME=1``, the environment form of ``-X importtime``),
whose lines go to the same log as the processes' own: the daemon serves before it imports the
management API's stack, click, YAML, Docker's SDK or prometheus_client, and loads Quart afterwards;
the watchdog never imports ssl, shutil or urllib.parse, whatever its mode, and in fork and streaming modes
serves a call and stops without ever importing asyncio (its own loop, :mod:`faasd.watchdog.loop`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.daemon_fixtures import StartDaemon
from tests.helpers import scaled, wait_for

DAEMON_LATER = (
    "quart",
    "quart_trio",
    "flask",
    "werkzeug",
    "jinja2",
    "hypercorn.asyncio",
    "click",
    "yaml",
    "docker",
    "prometheus_client",
    "http.server",
    "email",
    "urllib.request",
)
"""The gateway's metrics are counted without ``prometheus_client`` (with ``http.server``, ``email`` and
``urllib.request``, which it imports): it renders them on the first scrape."""
WATCHDOG_NEVER = ("_ssl", "shutil", "bz2", "lzma", "urllib.parse", "ipaddress", "trio", "click", "quart")
FORK_NEVER = ("asyncio", "concurrent.futures", "ssl")
"""Fork and streaming modes run on the watchdog's own loop: none of asyncio's imports, from start to exit."""
FORK_NOT_BEFORE_ANSWERING = ("enum", "socket", "signal", "selectors", "re", "shlex", "http")
"""Nor, until a call has been answered, socket.py's and signal.py's enums (the loop uses their C modules),
``re`` (the parser checks byte classes; a plain ``fprocess`` is split without shlex) or ``http``'s status
enum: together about 7 ms of a fork-mode watchdog's exec -> first 200 (docs/coldstart.md)."""


def _imported(log: str, until: str = "") -> set[str]:
    """Modules the profiler reported in ``log`` before the first line containing ``until`` (all: empty)."""
    names = set()
    for line in log.splitlines():
        if until and until in line and not line.startswith("import time:"):
            break
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def test_faasd_up_serves_before_the_management_api_and_loads_it_after(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(PYTHONPROFILEIMPORTTIME="1")
    before = _imported(daemon.logs(), "event=ready")
    assert "trio" in before and "faasd.gateway.invoke" in before, sorted(before)[:20]  # The profiler ran.
    assert not set(DAEMON_LATER) & before, sorted(set(DAEMON_LATER) & before)
    with daemon.client() as client:
        assert client.get("/system/functions").status_code == 200  # Loaded on demand, or already.
    wait_for(lambda: "quart_trio" in _imported(daemon.logs()), 30.0, "the management API to load")
    wait_for(lambda: "prometheus_client.process_collector" in _imported(daemon.logs()), 30.0, "the metrics client")


def test_the_watchdog_imports_neither_ssl_nor_shutil(start_watchdog: Callable[..., Any]) -> None:
    """Fork and streaming modes: their function (``cat``) is no Python, so every line is the watchdog's (a
    warm mode's server or workers would inherit the profiler and report their own imports too). ``ssl``
    itself is listed by the profiler -- asyncio tries it and is refused -- so ``_ssl``, which only a real
    import of ``ssl`` loads, is what is checked."""
    for mode in ("fork", "streaming"):
        watchdog = start_watchdog("cat", mode=mode, PYTHONPROFILEIMPORTTIME="1")
        imported = _imported(watchdog.logs(), "event=ready")
        assert "faasd.watchdog.server" in imported, mode  # The profiler ran.
        assert not set(WATCHDOG_NEVER) & imported, (mode, sorted(set(WATCHDOG_NEVER) & imported))
        assert httpx.post(f"{watchdog.base_url}/", content=b"x", timeout=10).text == "x"
        imported = _imported(watchdog.logs())
        assert not set(FORK_NOT_BEFORE_ANSWERING) & imported, (mode, sorted(set(FORK_NOT_BEFORE_ANSWERING) & imported))
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait_exit(scaled(10)) == 0
        imported = _imported(watchdog.logs())
        assert "event=stopped" in watchdog.logs(), mode
        assert not set(FORK_NEVER) & imported, (mode, sorted(set(FORK_NEVER) & imported))


def test_warm_modes_still_run_on_asyncio(start_watchdog: Callable[..., Any], tmp_path: Path) -> None:
    """The other side of the choice (faasd.watchdog.main._run): python mode serves on asyncio's loop."""
    (tmp_path / "handler.py").write_text("def handle(req):\n    return req\n")
    watchdog = start_watchdog(None, mode="python", handler=str(tmp_path / "handler.py"), PYTHONPROFILEIMPORTTIME="1")
    assert "asyncio" in _imported(watchdog.logs(), "event=ready")
    assert httpx.post(f"{watchdog.base_url}/", content=b"x", timeout=10).text == "x"
