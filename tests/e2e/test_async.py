"""Async invocations end to end: ``POST /async-function/*`` on a real daemon, a real function, and a real
callback receiver in the test (``callback_server``, tests/daemon_fixtures.py).

The function ``py`` (python mode, one worker, so its counters are one process's) answers by path:
``/echo`` what it got, ``/status?code=N`` that status, ``/flaky?key=K&code=N&times=T`` N for its first T
calls with that key and then 200, ``/sleep?s=S`` after S seconds, ``/raise`` an exception (500).
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import re
import signal
import socket
import tarfile
import threading
import time
import uuid

import httpx
import pytest

from tests.daemon_fixtures import CallbackServer, Daemon, MakeCli, StartDaemon
from tests.helpers import scaled, wait_for

HANDLER = b"""
import json, time
COUNTS = {}

def handle(event, context):
    if event.path == "/echo":
        body = {"method": event.method, "path": event.path, "query": event.query,
                "headers": event.headers, "body": event.body.decode("latin-1")}
        return {"statusCode": 200, "body": body, "headers": {"X-Thing": "thing-1"}}
    if event.path == "/status":
        return {"statusCode": int(event.query["code"]), "body": "status " + event.query["code"]}
    if event.path == "/flaky":
        key = event.query["key"]
        COUNTS[key] = COUNTS.get(key, 0) + 1
        if COUNTS[key] <= int(event.query["times"]):
            return {"statusCode": int(event.query["code"]), "body": "busy %d" % COUNTS[key]}
        return "ok after %d" % COUNTS[key]
    if event.path == "/sleep":
        time.sleep(float(event.query["s"]))
        return "slept"
    if event.path == "/raise":
        raise ValueError("bad input 42")
    return ("unknown path " + event.path, 404)
"""
FAST_RETRIES = {"FAASD_ASYNC_RETRY_WAIT": "0.2s", "FAASD_ASYNC_RETRY_MAX_WAIT": "1s"}


def _archive(files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(raw.getvalue()).decode()


def deploy_py(daemon: Daemon, name: str = "py", **annotations: str) -> None:
    daemon.deploy(
        name,
        "",
        envVars={"mode": "python", "handler": "handler.py", "workers": "1"},
        handlerArchive=_archive({"handler.py": HANDLER}),
        annotations=annotations,
    )


def post_async(daemon: Daemon, target: str, body: bytes = b"", **headers: str) -> httpx.Response:
    with daemon.client(auth=False) as client:
        return client.post(
            target, content=body, headers={key.replace("_", "-"): value for key, value in headers.items()}
        )


def invocations(daemon: Daemon, function: str, code: int) -> float:
    return daemon.metric("gateway_function_invocation_total", function_name=function, code=str(code)) or 0.0


def test_an_accepted_call_is_delivered_with_openfaas_headers(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    daemon = start_daemon()
    deploy_py(daemon)
    accepted = post_async(
        daemon,
        "/async-function/py/echo?a=1&b=two",
        b"hello async",
        X_Callback_Url=f"{callback_server.url}/done?k=v",
        X_Call_Id="my-call-1",
        X_Custom="custom value",
    )
    assert (accepted.status_code, accepted.content) == (202, b"")
    assert accepted.headers["x-call-id"] == "my-call-1" and accepted.headers["x-start-time"].isdigit()
    # No X-Call-Id from the caller: one is made; the OpenFaaS namespace suffix names the same function.
    second = post_async(daemon, "/async-function/py.openfaas-fn/echo", b"second", X_Callback_Url=callback_server.url)
    assert second.status_code == 202
    made = second.headers["x-call-id"]
    assert uuid.UUID(made)

    callback_server.wait_delivered({"my-call-1", made}, 15)
    [first] = callback_server.calls("my-call-1")
    assert first.path == "/done?k=v" and first.answered == 200
    assert first.headers["x-function-status"] == "200" and first.headers["x-function-name"] == "py"
    assert re.fullmatch(r"\d+\.\d{6}", first.headers["x-duration-seconds"])
    assert 0 < float(first.headers["x-duration-seconds"]) < scaled(10)
    assert first.headers["x-thing"] == "thing-1"  # the function's own answer headers are passed on
    assert first.headers["content-type"].startswith("application/json")
    seen = json.loads(first.body)
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/echo", "hello async")
    assert seen["query"] == {"a": "1", "b": "two"}
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert headers["x-custom"] == "custom value" and headers["x-call-id"] == "my-call-1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    [other] = callback_server.calls(made)
    assert json.loads(other.body)["body"] == "second"

    assert invocations(daemon, "py", 200) == 2  # counted like any call through the gateway
    assert daemon.metric("faasd_async_calls_total", function_name="py", outcome="accepted") == 2
    delivered = "both callbacks to be counted"
    wait_for(
        lambda: daemon.metric("faasd_async_calls_total", function_name="py", outcome="delivered") == 2, 5, delivered
    )
    # Without a callback the call still runs; its answer goes nowhere.
    assert post_async(daemon, "/async-function/py/echo", b"x").status_code == 202
    wait_for(lambda: invocations(daemon, "py", 200) == 3, 10, "the call without a callback to run")
    done = "the call without a callback to be counted"
    wait_for(lambda: daemon.metric("faasd_async_calls_total", function_name="py", outcome="done") == 1, 5, done)


def test_function_errors_are_called_back_not_retried(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    daemon = start_daemon(**FAST_RETRIES)
    deploy_py(daemon)
    failed = post_async(daemon, "/async-function/py/status?code=500", X_Callback_Url=callback_server.url)
    raised = post_async(daemon, "/async-function/py/raise", X_Callback_Url=callback_server.url)
    ids = {failed.headers["x-call-id"], raised.headers["x-call-id"]}
    callback_server.wait_delivered(ids, 15)
    [status] = callback_server.calls(failed.headers["x-call-id"])
    assert (status.headers["x-function-status"], status.body) == ("500", b"status 500")
    [exception] = callback_server.calls(raised.headers["x-call-id"])
    assert exception.headers["x-function-status"] == "500" and b"bad input 42" in exception.body
    time.sleep(1.0)  # Longer than two retry waits: a retry (none is due) would have happened by now.
    assert invocations(daemon, "py", 500) == 2
    assert (daemon.metric("faasd_async_retries_total", function_name="py", kind="function") or 0) == 0
    # A function that does not exist is a 404 at once: nothing is queued for it.
    missing = post_async(daemon, "/async-function/nope", X_Callback_Url=callback_server.url)
    assert missing.status_code == 404 and missing.text == "Function not found: nope\n"


def test_429_502_and_503_are_retried_then_given_up_after_the_attempts(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    daemon = start_daemon(**FAST_RETRIES)
    deploy_py(daemon)
    deploy_py(daemon, "py3", **{"com.openfaas.retry.attempts": "3"})
    ids = {}
    for code in (429, 502, 503):
        answer = post_async(
            daemon, f"/async-function/py/flaky?key=k{code}&code={code}&times=2", X_Callback_Url=callback_server.url
        )
        ids[code] = answer.headers["x-call-id"]
    always = post_async(daemon, "/async-function/py3/status?code=503", X_Callback_Url=callback_server.url)
    callback_server.wait_delivered({*ids.values(), always.headers["x-call-id"]}, 30)
    for code, call_id in ids.items():
        [callback] = callback_server.calls(call_id)
        assert (callback.headers["x-function-status"], callback.body) == ("200", b"ok after 3"), code
        assert invocations(daemon, "py", code) == 2, code
    assert daemon.metric("faasd_async_retries_total", function_name="py", kind="function") == 6
    [gave_up] = callback_server.calls(always.headers["x-call-id"])  # the last answer, after 3 invocations
    assert (gave_up.headers["x-function-status"], gave_up.body) == ("503", b"status 503")
    assert invocations(daemon, "py3", 503) == 3
    assert "async call retried" in daemon.logs()


def test_a_failing_callback_is_retried_with_backoff_then_given_up(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    daemon = start_daemon(FAASD_ASYNC_CALLBACK_ATTEMPTS="4", **FAST_RETRIES)
    deploy_py(daemon)
    callback_server.fail_first(3, 500)
    answer = post_async(daemon, "/async-function/py/echo", b"keep me", X_Callback_Url=callback_server.url)
    call_id = answer.headers["x-call-id"]
    callback_server.wait_delivered({call_id}, 20)
    attempts = callback_server.calls(call_id)
    assert [attempt.answered for attempt in attempts] == [500, 500, 500, 200]
    assert {attempt.body for attempt in attempts} == {attempts[0].body} and json.loads(attempts[0].body)[
        "body"
    ] == "keep me"
    assert {attempt.headers["x-function-status"] for attempt in attempts} == {"200"}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    for retry, gap in enumerate(gaps, start=1):  # 0.2 s doubling, capped at 1 s, jittered down to half
        assert gap >= min(0.2 * 2 ** (retry - 1), 1.0) / 2 - 0.02, gaps
    assert invocations(daemon, "py", 200) == 1  # the answer was kept: the function ran once
    assert daemon.metric("faasd_async_retries_total", function_name="py", kind="callback") == 3

    # Nothing listens there: 4 attempts, then given up (logged, counted), and the queue is empty again.
    closed = CallbackServer()
    closed.close()
    lost = post_async(daemon, "/async-function/py/echo", X_Callback_Url=f"{closed.url}/gone")
    assert lost.status_code == 202
    wait_for(
        lambda: daemon.metric("faasd_async_calls_total", function_name="py", outcome="given_up") == 1,
        20,
        "the callback to be given up",
    )
    assert daemon.metric("faasd_async_retries_total", function_name="py", kind="callback") == 3 + 3
    assert "callback given up" in daemon.logs()
    assert daemon.metric("faasd_async_queue_depth", function_name="py") in (None, 0.0)


def test_invalid_callback_urls_are_400(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    deploy_py(daemon)
    port = daemon.url.rsplit(":", 1)[1]
    cases = {
        "ftp://127.0.0.1/x": "http:// or https://",
        "http://": "no host",
        "http://admin:secret@127.0.0.1:9/": "credentials",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://2852039166/": "link-local",
        "http://[fe80::1]:9000/": "link-local",
        "http://0.0.0.0:9000/": "unspecified",
        f"http://127.0.0.1:{port}/system/functions": "this gateway",
        f"http://localhost:{port}/async-function/py": "this gateway",
        "http://127.0.0.1:9/" + "p" * 2100: "longer than 2048",
        "http://127.0.0.1:9/a b": "visible ASCII",
        # Not loopback, and async_callback_hosts lists nothing: no server-side request forgery by default.
        "http://10.1.2.3:9000/": "not allowed",
        "http://192.168.0.10/": "not allowed",
        "https://hooks.example.com/done": "not allowed",
    }
    for url, reason in cases.items():
        answer = post_async(daemon, "/async-function/py/echo", X_Callback_Url=url)
        assert answer.status_code == 400, (url, answer.text)
        assert reason in answer.text and answer.text.count("\n") == 1, (url, answer.text)
    twice = httpx.post(
        f"{daemon.url}/async-function/py/echo",
        headers=[("X-Callback-Url", "http://127.0.0.1:9/"), ("X-Callback-Url", "http://127.0.0.1:10/")],
    )
    assert twice.status_code == 400 and "more than once" in twice.text
    # Calling back a function of this gateway is allowed (chaining functions).
    chained = post_async(daemon, "/async-function/py/echo", X_Callback_Url=f"http://127.0.0.1:{port}/function/py/echo")
    assert chained.status_code == 202
    assert daemon.metric("faasd_async_calls_total", function_name="py", outcome="accepted") == 1


def test_async_callback_hosts_lists_where_else_callbacks_may_go(start_daemon: StartDaemon) -> None:
    """Accepted, not sent: the one worker slot of ``slow`` is taken by a call that sleeps past the test,
    so no callback leaves this host (the daemon is killed first)."""
    daemon = start_daemon(
        FAASD_ASYNC_CALLBACK_HOSTS="hooks.example.com, *.corp.example, 10.0.0.0/8", FAASD_SHUTDOWN_TIMEOUT="1s"
    )
    deploy_py(daemon, "slow", **{"com.openfaas.queue.max_inflight": "1"})
    assert post_async(daemon, "/async-function/slow/sleep?s=120").status_code == 202
    wait_for(lambda: daemon.metric("faasd_async_queue_running", function_name="slow") == 1, 10, "slow to run")
    for url in [
        "https://hooks.example.com/done",
        "http://a.corp.example/x",
        "http://10.9.8.7:9000/",
        "http://[::1]:9/",
    ]:
        answer = post_async(daemon, "/async-function/slow/sleep?s=0", X_Callback_Url=url)
        assert answer.status_code == 202, (url, answer.text)
    for url in ["http://www.hooks.example.com/", "http://corp.example/", "http://192.168.0.10/"]:
        answer = post_async(daemon, "/async-function/slow/sleep?s=0", X_Callback_Url=url)
        assert answer.status_code == 400 and "async_callback_hosts" in answer.text, (url, answer.text)
    link_local = post_async(daemon, "/async-function/slow/sleep?s=0", X_Callback_Url="http://169.254.169.254/")
    assert link_local.status_code == 400 and "link-local" in link_local.text  # whatever the list says
    assert daemon.metric("faasd_async_queue_depth", function_name="slow") == 5
    assert daemon.metric("faasd_async_queue_running", function_name="slow") == 1
    # SIGKILL: no callback may ever start, and the replica would take its 10 s stop grace to give up the
    # sleeping call (graceful stops with work queued are the full-queue test's).
    daemon.stop(signal.SIGKILL)


def test_a_hanging_function_times_out_is_retried_and_its_502_called_back(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    daemon = start_daemon(FAASD_UPSTREAM_TIMEOUT="1s", FAASD_SHUTDOWN_TIMEOUT="1s", **FAST_RETRIES)
    deploy_py(daemon, "hangs", **{"com.openfaas.retry.attempts": "2"})
    started = time.monotonic()
    # 4 s: longer than the gateway waits (1 s), short enough that the replica is idle again soon after.
    answer = post_async(daemon, "/async-function/hangs/sleep?s=4", X_Callback_Url=callback_server.url)
    call_id = answer.headers["x-call-id"]
    callback_server.wait_delivered({call_id}, scaled(20))
    [callback] = callback_server.calls(call_id)
    assert callback.headers["x-function-status"] == "502", callback
    assert b"did not answer within 1s" in callback.body, callback.body
    assert 1.0 <= float(callback.headers["x-duration-seconds"]) < scaled(5)  # the last attempt's own time
    assert time.monotonic() - started >= 2.0  # two attempts of 1 s each
    assert invocations(daemon, "hangs", 502) == 2
    assert daemon.metric("faasd_async_retries_total", function_name="hangs", kind="function") == 1


def test_a_callback_receiver_that_never_answers_costs_a_bounded_time(start_daemon: StartDaemon) -> None:
    """The receiver accepts connections and reads, but never answers: each attempt ends at
    async_callback_timeout, and after async_callback_attempts the call is given up."""
    daemon = start_daemon(FAASD_ASYNC_CALLBACK_TIMEOUT="1s", FAASD_ASYNC_CALLBACK_ATTEMPTS="2", **FAST_RETRIES)
    deploy_py(daemon)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(0.2)
        held: list[socket.socket] = []
        port = silent.getsockname()[1]
        started = time.monotonic()
        answer = post_async(daemon, "/async-function/py/echo", b"x", X_Callback_Url=f"http://127.0.0.1:{port}/")
        assert answer.status_code == 202

        def given_up() -> bool:
            with contextlib.suppress(TimeoutError):
                held.append(silent.accept()[0])
            return daemon.metric("faasd_async_calls_total", function_name="py", outcome="given_up") == 1

        wait_for(given_up, scaled(15), "the callback to be given up")
        elapsed = time.monotonic() - started
        requests = []
        for connection in held:  # the daemon sent its POST, then closed the connection: none is left open
            with connection:
                connection.settimeout(scaled(5))
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
                requests.append(data)
    assert len(held) == 2, held  # one connection per attempt
    assert all(request.startswith(b"POST / HTTP/1.1\r\n") for request in requests), requests
    assert 2.0 <= elapsed < scaled(8), elapsed
    assert "no answer within 1s" in daemon.logs()
    assert daemon.metric("faasd_async_queue_depth", function_name="py") in (None, 0.0)


def test_full_queues_are_429_per_function_and_503_in_all_and_show_in_metrics_and_status(
    start_daemon: StartDaemon, faasd_cli: MakeCli
) -> None:
    daemon = start_daemon(FAASD_ASYNC_QUEUE_SIZE="3", FAASD_ASYNC_QUEUE_TOTAL="5", FAASD_SHUTDOWN_TIMEOUT="1s")
    deploy_py(daemon, "slow", **{"com.openfaas.queue.max_inflight": "1"})
    deploy_py(daemon, "slow2", **{"com.openfaas.queue.max_inflight": "1"})
    for _ in range(3):
        assert post_async(daemon, "/async-function/slow/sleep?s=30").status_code == 202
    full = post_async(daemon, "/async-function/slow/sleep?s=30")
    assert full.status_code == 429 and "async queue of function slow is full" in full.text
    for _ in range(2):
        assert post_async(daemon, "/async-function/slow2/sleep?s=30").status_code == 202
    total = post_async(daemon, "/async-function/slow2/sleep?s=30")
    assert total.status_code == 503 and "async queue is full (5 calls" in total.text

    wait_for(lambda: daemon.metric("faasd_async_queue_running", function_name="slow") == 1, 10, "slow to run")
    assert daemon.metric("faasd_async_queue_depth", function_name="slow") == 3
    assert daemon.metric("faasd_async_queue_depth", function_name="slow2") == 2
    time.sleep(1.1)
    assert (daemon.metric("faasd_async_queue_oldest_seconds", function_name="slow") or 0) >= 1.0
    with daemon.client() as client:
        info = client.get("/system/info").json()["faasd"]["async"]
        scaling = client.get("/system/scaling/slow").json()
    assert (info["queued"], info["functions"]["slow"]["queued"], info["functions"]["slow2"]["queued"]) == (5, 3, 2)
    assert info["oldestSeconds"] >= 1.0
    assert scaling["load"]["queued"] == 0  # its one worker slot is busy: the backlog adds no replica
    cli = faasd_cli(daemon)
    status = cli.run("status").ok().fields()
    assert re.fullmatch(r"5 calls \(2 running\), oldest \d+s", status["Async queue"]), status
    one = cli.run("status", "slow").ok().fields()
    assert re.fullmatch(r"3 calls \(1 running\), oldest \d+s", one["Async queue"]), one

    # A graceful stop with work queued keeps it all, the two calls cut short included (at-least-once).
    assert daemon.stop() == 0
    restarted = start_daemon(state_dir=daemon.state_dir, FAASD_SHUTDOWN_TIMEOUT="1s")
    wait_for(lambda: "async_calls=5" in restarted.logs(), 10, "the queue's load (after the ready line)")
    assert restarted.metric("faasd_async_queue_depth", function_name="slow") == 3
    assert restarted.metric("faasd_async_queue_depth", function_name="slow2") == 2
    restarted.stop(signal.SIGKILL)  # Not another 10 s stop grace for the replicas' sleeping calls.


def test_cli_invoke_async(start_daemon: StartDaemon, faasd_cli: MakeCli, callback_server: CallbackServer) -> None:
    daemon = start_daemon()
    deploy_py(daemon)
    cli = faasd_cli(daemon)
    result = cli.run(
        "invoke", "py", "--async", "--callback-url", f"{callback_server.url}/cli", "--path", "echo", stdin=b"from cli"
    ).ok()
    call_id = result.out.strip()
    assert uuid.UUID(call_id) and "submitted asynchronously" in result.err
    callback_server.wait_delivered({call_id}, 15)
    [callback] = callback_server.calls(call_id)
    assert callback.path == "/cli" and json.loads(callback.body)["body"] == "from cli"
    as_json = cli.run("invoke", "py", "--async", "--json", stdin=b"x").ok().json()
    assert as_json["status"] == 202 and uuid.UUID(as_json["callId"])
    line = cli.run("invoke", "py", "--async", "--callback-url", "ftp://nowhere/").error_line()
    assert "400" in line and "http:// or https://" in line
    assert "--callback-url needs --async" in cli.run("invoke", "py", "--callback-url", callback_server.url).err


@pytest.mark.slow
def test_kill_9_loses_no_accepted_call(start_daemon: StartDaemon, callback_server: CallbackServer) -> None:
    """Clients keep sending async calls (each with its own X-Call-Id) while the daemon is killed with
    SIGKILL; after a restart on the same state dir every call that was answered 202 is delivered. The
    contract is at-least-once: calls in flight at the kill may be delivered twice (counted, bounded)."""
    concurrency = 2
    env = {"FAASD_ASYNC_CONCURRENCY": str(concurrency), **FAST_RETRIES}
    daemon = start_daemon(**env)
    deploy_py(daemon)
    accepted: set[str] = set()
    unanswered: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=daemon.url, timeout=5) as http:
            for sent in range(10_000):
                if stop.is_set():
                    return
                call_id = f"c{number}-{sent}"
                try:
                    answer = http.post(
                        "/async-function/py/sleep?s=0.05",
                        content=call_id.encode(),
                        headers={"X-Call-Id": call_id, "X-Callback-Url": callback_server.url},
                    )
                except httpx.HTTPError:
                    with lock:
                        unanswered.add(call_id)
                    return  # The daemon is gone.
                with lock:
                    (accepted if answer.status_code == 202 else unanswered).add(call_id)

    threads = [threading.Thread(target=client, args=(n,), name=f"async-client-{n}") for n in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(accepted) >= 60 and len(callback_server.delivered()) >= 5, 30, "calls accepted and running")
    daemon.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)
    delivered_before = dict(callback_server.delivered())
    assert accepted - delivered_before.keys(), "every call finished before the kill: nothing was queued"

    restarted = start_daemon(state_dir=daemon.state_dir, **env)
    wait_for(lambda: re.search(r"async_calls=[1-9]", restarted.logs()), 10, lambda: restarted.logs()[-2000:])
    delivered = callback_server.wait_delivered(accepted, 60)
    duplicates = {call_id: count for call_id, count in delivered.items() if count > 1}
    print(
        f"accepted {len(accepted)}, queued at the kill {len(accepted - delivered_before.keys())}, "
        f"delivered twice {len(duplicates)}, unanswered {len(unanswered)} (delivered anyway: "
        f"{len(unanswered & delivered.keys())})"
    )
    # At-least-once: a call is delivered twice only when the kill came while its invocation or callback
    # was under way, or right after its callback and before its row was deleted -- at most one of each per
    # worker slot.
    assert len(duplicates) <= 2 * concurrency, duplicates
    assert set(delivered) <= accepted | unanswered  # nothing delivered that was not sent
