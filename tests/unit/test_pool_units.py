"""The replica pool's pure parts: the hard-link copy of a function's directory (what a pooled replica
sees at /home/app) and the assignment message; and the management API loaded after the gateway serves
(faasd.gateway.lazyapp)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from faasd.gateway.lazyapp import LazyApp
from faasd.providers.local.pool import Member, PoolError, _passed_fds, link_files, link_tree
from faasd.sandbox.pooled import encode_assignment


def _tree(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / ".secrets").mkdir(mode=0o700)
    (root / "handler.py").write_text("def handle(req):\n    return req\n")
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / ".secrets" / "key").write_text("s3cret")
    os.chmod(root / ".secrets" / "key", 0o400)
    os.chmod(root / "pkg", 0o750)
    (root / "link").symlink_to("handler.py")


def test_link_tree_gives_the_same_files_and_nothing_else(tmp_path: Path) -> None:
    source, target = tmp_path / "function", tmp_path / "pooled"
    source.mkdir(mode=0o750)
    _tree(source)
    (target / ".secrets").mkdir(parents=True, mode=0o700)
    (tmp_path / "other-function-file").write_text("not yours")
    link_tree(str(source), str(target))
    for relative in ("handler.py", "pkg/mod.py", ".secrets/key"):
        assert os.stat(source / relative).st_ino == os.stat(target / relative).st_ino  # Same inode: same owner/mode.
    assert os.readlink(target / "link") == "handler.py"
    assert stat.S_IMODE(os.stat(target / "pkg").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o750
    listed = sorted(str(path.relative_to(target)) for path in target.rglob("*"))
    assert listed == [".secrets", ".secrets/key", "handler.py", "link", "pkg", "pkg/mod.py"]


def test_link_tree_refuses_what_it_cannot_link(tmp_path: Path) -> None:
    source, target = tmp_path / "function", tmp_path / "pooled"
    source.mkdir()
    target.mkdir()
    os.mkfifo(source / "fifo")
    with pytest.raises(OSError):
        link_tree(str(source), str(target))


def test_files_a_pooled_replica_cannot_be_given_are_a_pool_error(tmp_path: Path) -> None:
    """What makes the supervisor start a cold replica instead: the cause is in the message."""
    source, target = tmp_path / "function", tmp_path / "pooled"
    source.mkdir()
    target.mkdir()
    (source / "handler.py").write_text("x = 1\n")
    os.mkfifo(source / "fifo")
    member = Member("pool-1", None, None, -1, str(target))  # type: ignore[arg-type]  # Only app_dir is read.
    with pytest.raises(PoolError, match=r"cannot link the function's files: .*fifo"):
        link_files(member, str(source))
    link_files(Member("pool-2", None, None, -1, ""), str(source))  # type: ignore[arg-type]  # No app dir: nothing to do.


def test_an_assignment_is_json_the_pooled_replica_reads() -> None:
    message = encode_assignment(
        "uid=5,gid=5,nofile=64,pev=9", "/home/app", {"fprocess": "cat", "listen_fd": "7"}, ["env:listen_fd", "spec:pev"]
    )
    assert json.loads(message) == {
        "spec": "uid=5,gid=5,nofile=64,pev=9",
        "cwd": "/home/app",
        "env": {"fprocess": "cat", "listen_fd": "7"},
        "fds": ["env:listen_fd", "spec:pev"],
    }


def test_an_assignment_sends_the_descriptors_a_cold_replica_inherits() -> None:
    spec = "mev=11,mmax=134217728,pev=12,plim=128,uid=5,gid=5,nofile=64,oom=1000,life=4"
    passed = _passed_fds(spec, {"listen_fd": "7", "call_token_fd": "8", "PATH": "/usr/bin"})
    assert passed == [("env:listen_fd", 7), ("env:call_token_fd", 8), ("spec:mev", 11), ("spec:pev", 12)]


async def _hello(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"managed"})  # type: ignore[operator]


async def _call(app: LazyApp) -> list[dict]:  # type: ignore[type-arg]
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": "/system/info"}, receive, send)
    return sent


@contextlib.asynccontextmanager
async def _lifespan_started(app: LazyApp) -> AsyncIterator[tuple[Any, Any]]:
    """``app``'s lifespan running in a nursery, its ``startup`` sent and answered ``startup.complete``:
    yields (the channel to send it lifespan events, the channel of what it sent back)."""
    to_app, app_events = trio.open_memory_channel[dict](4)  # type: ignore[type-arg]
    from_app, app_sent = trio.open_memory_channel[dict](4)  # type: ignore[type-arg]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan"}, app_events.receive, from_app.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await app_sent.receive())["type"] == "lifespan.startup.complete"
        yield to_app, app_sent


async def test_lazy_app_answers_startup_at_once_and_requests_wait_for_the_load() -> None:
    built = trio.Event()

    def build() -> object:
        built.set()
        return _hello

    app = LazyApp("json", build)
    async with _lifespan_started(app) as (to_app, app_sent):  # Its startup answered before anything loads.
        answer = await _call(app)  # Waits for the load, then served by the built app.
        assert built.is_set() and app.loaded
        assert answer[1]["body"] == b"managed"
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await app_sent.receive())["type"] == "lifespan.shutdown.complete"


async def test_lazy_app_without_a_lifespan_loads_on_the_first_request() -> None:
    app = LazyApp("json", lambda: _hello)
    assert not app.loaded
    answer = await _call(app)
    assert answer[0]["status"] == 200 and app.loaded


async def test_lazy_app_that_cannot_load_answers_503_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> object:
        raise RuntimeError("no quart here")

    app = LazyApp("json", broken)
    answer = await _call(app)
    assert answer[0]["status"] == 503
    assert "no quart here" in caplog.text


async def test_lazy_app_under_a_lifespan_loads_only_once_begun() -> None:
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        return _hello

    app = LazyApp("json", build)
    async with _lifespan_started(app) as (to_app, app_sent):  # Its startup answered before anything loads.
        await trio.sleep(0.05)
        assert not builds and not app.loaded  # The daemon's start is not shared with the import.
        app.begin()
        with trio.fail_after(10):
            while not app.loaded:
                await trio.sleep(0.01)
        assert builds == [1]
        assert (await _call(app))[1]["body"] == b"managed"
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await app_sent.receive())["type"] == "lifespan.shutdown.complete"


async def test_lazy_app_never_begun_shuts_down_at_once() -> None:
    app = LazyApp("json", lambda: _hello)
    async with _lifespan_started(app) as (to_app, app_sent):
        await to_app.send({"type": "lifespan.shutdown"})
        with trio.fail_after(5):
            assert (await app_sent.receive())["type"] == "lifespan.shutdown.complete"
    assert not app.loaded


async def test_lazy_app_still_importing_shuts_down_without_waiting_for_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon stopped while its management API still imports: the import is left to its worker thread (it
    cannot be interrupted; the process is about to exit) and the shutdown goes on. Before, it waited for the
    import: a stop right after ``faasd up`` took the import's time, 0.3-0.5 s, instead of 10-30 ms."""
    (tmp_path / "slow_management_api.py").write_text("import time\n\ntime.sleep(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = LazyApp("slow_management_api", lambda: _hello)
    async with _lifespan_started(app) as (to_app, app_sent):
        app.begin()
        await trio.sleep(0.2)  # The import is under way in its thread.
        started = trio.current_time()
        await to_app.send({"type": "lifespan.shutdown"})
        with trio.fail_after(10):
            assert (await app_sent.receive())["type"] == "lifespan.shutdown.complete"
        assert trio.current_time() - started < 1.0, "the shutdown waited for the import"
    assert not app.loaded
