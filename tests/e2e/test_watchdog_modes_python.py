"""``mode=python``: pre-started worker processes import the handler once and run ``handle()`` per call
(docs/watchdog.md "Modes", the handler contract and its return-value table). Handlers live in
``fixtures/``; ``py_event_handler.py`` picks its behaviour from the request path.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import assert_duration_header, process_alive, scaled, session_members, wait_for

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EVENT_HANDLER = FIXTURES / "py_event_handler.py"
TEXT = "text/plain; charset=utf-8"


def start_python(start_watchdog, handler: Path = EVENT_HANDLER, **env: str | None):
    """A python-mode watchdog (no fprocess) running ``handler``."""
    env.setdefault("workers", "2")
    return start_watchdog(None, mode="python", handler=str(handler), **env)


def pid_of(watchdog, **kwargs: object) -> dict:
    response = watchdog.request("GET", "/pid", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def import_log_lines(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


# -- the handler contracts -------------------------------------------------------------------------


def test_one_argument_handler_gets_the_body_as_str(start_watchdog):
    watchdog = start_python(start_watchdog, FIXTURES / "py_str_handler.py")
    response = watchdog.request("POST", "/", content="wörld ✓".encode())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == TEXT
    assert response.content.decode() == "hello wörld ✓ (str)"
    assert_duration_header(response.headers.get("X-Duration-Seconds"))
    # Undecodable bytes are replaced, not an error.
    response = watchdog.request("POST", "/", content=b"bad \xff byte")
    assert response.status_code == 200
    assert response.content.decode() == "hello bad \ufffd byte (str)"
    # No body: an empty str.
    assert watchdog.request("GET", "/").text == "hello  (str)"


def test_two_argument_handler_gets_event_and_context(start_watchdog):
    watchdog = start_python(start_watchdog)
    response = watchdog.request(
        "PUT",
        "/echo?a=1&b=two%20words&empty=",
        content=b"body \x00\xff",
        headers={"x-request-id": "req-9", "Content-Type": "application/x-in"},
    )
    assert response.status_code == 201
    assert response.headers["X-Thing"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["method"] == "PUT"
    assert document["path"] == "/echo"
    assert document["query"] == {"a": "1", "b": "two words", "empty": ""}
    assert document["body"].encode("latin-1") == b"body \x00\xff"
    assert document["body_type"] == "bytes"
    assert document["headers"]["X-Request-Id"] == "req-9", "event.headers must use canonical names"
    assert document["headers"]["Content-Type"] == "application/x-in"
    assert document["headers"]["Host"] == f"127.0.0.1:{watchdog.port}"
    assert document["hostname"]
    for method in ("GET", "POST", "PATCH", "DELETE"):
        assert watchdog.request(method, "/echo").json()["method"] == method


def test_event_query_keeps_the_first_value_of_a_repeated_parameter(start_watchdog):
    """``event.query`` is "like the OpenFaaS python3-http template" (Flask's ``request.args``, whose
    ``[name]``/``get(name)`` give the first value) -- and pyworker's own docstring says "dict of first
    values"."""
    watchdog = start_python(start_watchdog)
    document = watchdog.request("GET", "/echo?a=1&a=2&b=x").json()
    assert document["query"] == {"a": "1", "b": "x"}


RETURN_CASES = [
    # (what handle returns, status, body, content type, extra headers)
    ("none", 200, b"", None, {}),
    ("str", 200, "plain text ✓".encode(), TEXT, {}),
    ("dict", 200, {"a": 1, "nested": {"b": [1, 2]}}, "application/json", {}),
    ("list", 200, [1, "two", None], "application/json", {}),
    ("status-str", 202, b"accepted", TEXT, {"X-A": "b"}),
    ("status-bytes", 200, b"\x01\x02", "image/x-test", {}),
    ("status-json", 409, {"conflict": True}, "application/json", {}),
    ("status-html", 200, b"<p>hi</p>", "text/html", {}),
    ("tuple2", 201, b"created", TEXT, {}),
    ("tuple3", 203, {"x": 1}, "application/json", {"X-T": "3"}),
]


@pytest.mark.parametrize(("kind", "status", "body", "content_type", "headers"), RETURN_CASES, ids=lambda v: str(v))
def test_return_values_map_to_answers(start_watchdog, kind, status, body, content_type, headers):
    watchdog = start_python(start_watchdog, workers="1")
    response = watchdog.request("GET", f"/return/{kind}")
    assert response.status_code == status, response.text
    if isinstance(body, bytes):
        assert response.content == body
    else:
        assert json.loads(response.content) == body
    if content_type is not None:
        assert response.headers["Content-Type"] == content_type
    for name, value in headers.items():
        assert response.headers.get(name) == value
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert_duration_header(response.headers.get("X-Duration-Seconds"))


def test_bytes_are_sent_as_is_with_the_requests_type(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1")
    response = watchdog.request("POST", "/return/bytes", content=b"x", headers={"Content-Type": "application/x-in"})
    assert response.status_code == 200
    assert response.content == b"\x00\x01raw\xff"
    assert response.headers["Content-Type"] == "application/x-in"
    forced = start_python(start_watchdog, workers="1", content_type="application/x-forced")
    response = forced.request("POST", "/return/bytes", content=b"x", headers={"Content-Type": "application/x-in"})
    assert response.headers["Content-Type"] == "application/x-forced"


def test_the_handler_sees_the_watchdogs_environment(start_watchdog):
    watchdog = start_python(start_watchdog, HANDLER_GREETING="hi there")
    assert watchdog.request("GET", "/env").json().get("HANDLER_GREETING") == "hi there"


# -- errors and logs ---------------------------------------------------------------------------------


def test_an_exception_is_500_with_type_and_message_and_the_traceback_is_logged(start_watchdog):
    watchdog = start_python(start_watchdog)
    response = watchdog.request("GET", "/raise")
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.strip() == "ValueError: bad input 42"
    assert "Traceback" not in response.text
    wait_for(
        lambda: (
            "Traceback (most recent call last)" in watchdog.logs()
            and 'raise ValueError(\\"bad input 42\\")' in watchdog.logs()
        ),
        3.0,
        lambda: f"the handler's traceback is not in the watchdog's log:\n{watchdog.logs()}",
    )
    # The worker survives an exception: same pid, still serving.
    assert watchdog.request("GET", "/return/str").status_code == 200


def test_print_goes_to_the_log_not_the_response(start_watchdog):
    watchdog = start_python(start_watchdog)
    response = watchdog.request("GET", "/print")
    assert response.status_code == 200
    assert response.text == "done"
    wait_for(
        lambda: "printed-by-the-handler-123" in watchdog.logs(),
        3.0,
        lambda: f"print() output is not in the watchdog's log:\n{watchdog.logs()}",
    )


def test_an_import_error_stops_the_watchdog_with_one_line(start_watchdog):
    watchdog = start_python(start_watchdog, FIXTURES / "py_broken_import.py", wait_ready=False)
    code = watchdog.wait_exit(10.0)
    assert code != 0
    lines = [line for line in watchdog.logs().splitlines() if line.startswith("faasd watchdog:")]
    assert len(lines) == 1, watchdog.logs()
    assert "ModuleNotFoundError" in lines[0] and "no_such_module_for_faasd_tests" in lines[0], lines[0]
    assert not session_members(watchdog.pid), "workers outlived the watchdog"


def test_a_handler_that_does_not_import_within_start_timeout_stops_cleanly(start_watchdog):
    watchdog = start_python(start_watchdog, FIXTURES / "py_slow_import.py", wait_ready=False, start_timeout="1s")
    code = watchdog.wait_exit(10.0)
    assert code != 0
    lines = [line for line in watchdog.logs().splitlines() if line.startswith("faasd watchdog:")]
    assert len(lines) == 1 and "1s" in lines[0], watchdog.logs()
    leftovers = session_members(watchdog.pid)
    assert not leftovers, f"the watchdog exited but left its workers running: {leftovers}"


def test_sigterm_while_the_handler_imports_stops_at_once(start_watchdog):
    """A stop signal while the workers still import the handler: the watchdog stops them and exits 0 at
    once, rather than after the import or ``start_timeout``."""
    watchdog = start_python(start_watchdog, FIXTURES / "py_slow_import.py", wait_ready=False, start_timeout="60s")
    wait_for(lambda: len(session_members(watchdog.pid)) >= 3, 10, "the workers to start")
    t0 = time.monotonic()
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait_exit(scaled(10.0)) == 0, watchdog.logs()
    assert time.monotonic() - t0 < scaled(2.0), f"the stop waited for the import:\n{watchdog.logs()}"
    assert not session_members(watchdog.pid), "the watchdog exited but left its workers running"


def test_timeout_is_408_and_a_new_worker_replaces_the_killed_one(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", exec_timeout="1s")
    before = pid_of(watchdog)["pid"]
    t0 = time.monotonic()
    response = watchdog.request("GET", "/sleep?s=10")
    elapsed = time.monotonic() - t0
    assert response.status_code == 408
    assert response.text.strip() == "Killed worker: exceeded exec_timeout of 1s"
    assert 0.9 <= elapsed < scaled(2.5), f"408 after {elapsed:.2f}s for exec_timeout=1s"
    wait_for(lambda: not process_alive(before), 2.0, f"worker {before} survived its timeout")
    after = pid_of(watchdog)
    assert after["pid"] != before
    assert after["calls"] == 1, "the new worker should have served nothing yet"
    assert watchdog.request("GET", "/_/health").status_code == 200


def test_a_crashing_worker_gives_500_then_the_pool_recovers(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1")
    before = pid_of(watchdog)["pid"]
    response = watchdog.request("GET", "/crash")
    assert response.status_code == 500
    assert response.text.startswith("worker crashed during the call: ")
    assert "exit status 3" in response.text
    after = pid_of(watchdog)["pid"]
    assert after != before
    assert watchdog.request("GET", "/return/str").status_code == 200


def test_a_huge_allocation_is_500_and_later_calls_work(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_memory="64m")
    before = pid_of(watchdog)["pid"]
    response = watchdog.request("GET", "/alloc?mb=200")
    assert response.status_code == 500
    assert "memory" in response.text.lower(), response.text
    assert watchdog.request("GET", "/alloc?mb=8").json() == {"allocated": 8 * 1024 * 1024}
    assert pid_of(watchdog)["pid"] != before, "the worker that hit the limit should have been replaced"


def test_a_worker_over_max_memory_after_a_call_is_replaced(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_memory="64m")
    before = pid_of(watchdog)["pid"]
    # Fits the address-space cap (its size at start + 64 MiB) but leaves the worker resident over 64 MiB.
    response = watchdog.request("GET", "/hold?mb=56")
    assert response.status_code == 500, response.text
    assert "max_memory" in response.text and str(64 * 1024 * 1024) in response.text, response.text
    wait_for(lambda: not process_alive(before), 2.0, f"worker {before} over max_memory was not killed")
    after = pid_of(watchdog)
    assert after["pid"] != before
    assert watchdog.request("GET", "/hold?mb=8").status_code == 200


def test_memory_growing_during_a_call_stops_it_at_once(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_memory="64m")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/hold?mb=56&s=10")
    elapsed = time.monotonic() - t0
    assert response.status_code == 500, response.text
    assert "max_memory" in response.text
    assert elapsed < scaled(3.0), f"a worker over max_memory ran on for {elapsed:.2f}s (the handler sleeps 10 s)"
    assert watchdog.request("GET", "/return/str").status_code == 200


# -- the pool ----------------------------------------------------------------------------------------


def _parallel(watchdog, paths: list[str]) -> tuple[float, list[httpx.Response]]:
    """Send each of ``paths`` at once on its own connection; (seconds until all answered, responses)."""
    clients = [httpx.Client(base_url=watchdog.base_url, timeout=10.0) for _ in paths]
    try:
        with ThreadPoolExecutor(len(paths)) as pool:
            t0 = time.monotonic()
            responses = list(pool.map(lambda client, path: client.get(path), clients, paths))
            return time.monotonic() - t0, responses
    finally:
        for client in clients:
            client.close()


def test_workers_run_calls_in_parallel_and_queue_the_rest(start_watchdog, tmp_path: Path):
    import_log = tmp_path / "imports"
    watchdog = start_python(start_watchdog, workers="4", IMPORT_LOG=str(import_log))
    wait_for(lambda: len(import_log_lines(import_log)) == 4, 10.0, "the 4 workers never imported the handler")

    def all_four_idle() -> bool:
        _, responses = _parallel(watchdog, ["/sleep?s=0.2"] * 4)
        return len({r.json()["pid"] for r in responses}) == 4

    wait_for(all_four_idle, 10.0, "4 parallel calls never ran on 4 different workers")

    elapsed, responses = _parallel(watchdog, ["/sleep?s=0.5"] * 4)
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.json()["pid"] for r in responses}) == 4
    assert elapsed < 0.9, f"4 calls of 0.5 s on 4 workers took {elapsed:.2f}s: not in parallel"

    elapsed, responses = _parallel(watchdog, ["/sleep?s=0.5"] * 5)
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert 0.95 <= elapsed < 1.6, f"5 calls of 0.5 s on 4 workers took {elapsed:.2f}s; want ~1 s (one waits)"
    finished = sorted(r.json()["at"] for r in responses)
    assert finished[-1] - finished[0] >= 0.4, "the 5th call did not wait for a free worker"
    assert sorted(import_log_lines(import_log)) == sorted(set(import_log_lines(import_log)))
    assert len(import_log_lines(import_log)) == 4, "a worker imported the handler again"


def test_max_inflight_still_applies(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_inflight="2")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(watchdog.request, "GET", "/sleep?s=1") for _ in range(2)]
        wait_for(
            lambda: watchdog.metrics().get(("http_requests_in_flight", frozenset())) == 2,
            3.0,
            "the two calls never were in flight together",
        )
        t0 = time.monotonic()
        response = watchdog.request("GET", "/return/str")
        assert response.status_code == 429
        assert response.text.strip() == "Concurrent request limit exceeded. Max concurrent requests: 2"
        assert time.monotonic() - t0 < 0.5, "429 must come at once, not after queueing"
        assert [f.result().status_code for f in futures] == [200, 200]
    assert watchdog.request("GET", "/return/str").status_code == 200


def test_the_module_is_imported_once_per_worker(start_watchdog, tmp_path: Path):
    import_log = tmp_path / "imports"
    watchdog = start_python(start_watchdog, workers="2", IMPORT_LOG=str(import_log))
    wait_for(lambda: len(import_log_lines(import_log)) == 2, 10.0, "the 2 workers never imported the handler")
    seen: dict[int, list[int]] = {}
    with watchdog.client() as client:
        for _ in range(20):
            document = client.get("/pid").json()
            assert document["imported_by"] == document["pid"]
            seen.setdefault(document["pid"], []).append(document["calls"])
    assert set(seen) <= set(import_log_lines(import_log))
    for pid, calls in seen.items():
        assert calls == sorted(calls) and len(set(calls)) == len(calls), f"worker {pid} restarted its count: {calls}"
    assert sum(len(calls) for calls in seen.values()) == 20
    assert max(max(calls) for calls in seen.values()) > 1, "no worker served two calls with the module kept"
    assert len(import_log_lines(import_log)) == 2, "the handler was imported again"


def test_packages_dir_and_the_handlers_dir_are_importable(start_watchdog, tmp_path: Path):
    function_dir = tmp_path / "fn"
    (function_dir / ".packages" / "fancylib").mkdir(parents=True)
    (function_dir / ".packages" / "fancylib" / "__init__.py").write_text("VERSION = 'fancy-1.0'\n")
    (function_dir / "helper_beside.py").write_text("def shout(text):\n    return text.upper()\n")
    (function_dir / "handler.py").write_text(
        "import fancylib\nfrom helper_beside import shout\n\n\n"
        "def handle(req):\n    return shout(req) + ' ' + fancylib.VERSION + ' ' + fancylib.__file__\n"
    )
    watchdog = start_python(start_watchdog, function_dir / "handler.py", workers="1")
    response = watchdog.request("POST", "/", content=b"hi")
    assert response.status_code == 200, response.text
    shouted, version, origin = response.text.split(" ")
    assert (shouted, version) == ("HI", "fancy-1.0")
    assert origin == str(function_dir / ".packages" / "fancylib" / "__init__.py")


def test_the_default_handler_is_handler_py_in_the_working_directory(start_watchdog, tmp_path: Path):
    (tmp_path / "handler.py").write_text("def handle(req):\n    return 'default:' + req\n")
    watchdog = start_watchdog(None, mode="python", workers="1")  # cwd is tmp_path
    assert watchdog.request("POST", "/", content=b"x").text == "default:x"


def test_sigterm_drains_an_in_flight_call(start_watchdog):
    watchdog = start_python(start_watchdog, workers="2")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(watchdog.request, "GET", "/sleep?s=1")
        wait_for(
            lambda: watchdog.metrics().get(("http_requests_in_flight", frozenset())) == 1,
            3.0,
            "the call never went in flight",
        )
        watchdog.send_signal(signal.SIGTERM)
        wait_for(lambda: not watchdog.lock_path.exists(), 3.0, "the lock file was not removed on SIGTERM")
        response = future.result(timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["slept"] == 1.0
    assert watchdog.wait_exit(5.0) == 0
    assert not session_members(watchdog.pid), "workers outlived the watchdog"


KILLS_ITS_OWN_CHILD = """import os, signal, subprocess


def handle(event, context):
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    child.kill()
    os.kill(os.getpid(), signal.SIGCHLD)  # As if the child's own SIGCHLD came first, before the wait.
    return f"{child.wait()} {child.pid}"
"""


def test_a_child_the_handler_killed_itself_keeps_its_exit_status(start_watchdog, tmp_path: Path):
    """A worker reaps the children the process-limit sweep killed (faasd/watchdog/pyreap.py: outside its
    process group, SIGKILLed) -- never during a call: a handler that killed its own such child gets its
    status from its own wait (-9), not 0 from a child reaped under it; and the worker reaps nothing it
    must not after the call either (the handler waited)."""
    handler = tmp_path / "handler.py"
    handler.write_text(KILLS_ITS_OWN_CHILD)
    watchdog = start_python(start_watchdog, handler, workers="1")
    for _ in range(3):
        response = watchdog.request("GET", "/")
        assert response.status_code == 200, response.text
        status, pid = response.text.split()
        assert status == "-9", response.text
        assert not process_alive(int(pid))
