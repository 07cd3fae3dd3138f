"""Requests that arrive the moment ``faasd up`` answers ``/healthz`` (docs/coldstart.md): the daemon
serves before its second stage -- the async queue (:mod:`faasd.queue.stage`), the management API
(:mod:`faasd.gateway.lazyapp`), the stored functions' replicas -- is loaded, and a request for any of
them waits for its part and is then answered as it would be later: never a 5xx, never a wrong 404.
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from tests.daemon_fixtures import PASSWORD, CallbackServer, StartDaemon
from tests.helpers import free_port, scaled


def test_calls_sent_as_soon_as_healthz_answers_are_served(
    start_daemon: StartDaemon, callback_server: CallbackServer
) -> None:
    port = free_port()
    first = start_daemon(port=port)
    first.deploy("echo", "cat")
    state = first.state_dir
    assert first.stop() == 0

    daemon = start_daemon(state_dir=state, port=port, wait_ready=False)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + scaled(30.0)
    with httpx.Client(base_url=base, timeout=30.0) as probe:
        while True:
            assert time.monotonic() < deadline, daemon.logs()[-3000:]
            try:
                if probe.get("/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.002)

    def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        with httpx.Client(base_url=base, auth=("admin", PASSWORD), timeout=30.0) as client:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        queued = pool.submit(
            call, "POST", "/async-function/echo", content=b"later", headers={"X-Callback-Url": callback_server.url}
        )
        listed = pool.submit(call, "GET", "/system/functions")
        invoked = pool.submit(call, "POST", "/function/echo", content=b"now")
        described = pool.submit(call, "GET", "/system/function/echo")
        responses = [future.result() for future in (queued, listed, invoked, described)]
    logs = daemon.logs()
    assert [response.status_code for response in responses] == [202, 200, 200, 200], (
        [(response.status_code, response.text) for response in responses],
        logs[-3000:],
    )
    assert [function["name"] for function in responses[1].json()] == ["echo"]
    assert responses[2].content == b"now"
    call_id = responses[0].headers["x-call-id"]
    callback_server.wait_delivered({call_id}, 20)
    [delivered] = callback_server.calls(call_id)
    assert delivered.body == b"later" and delivered.headers.get("x-function-status") == "200", delivered
    assert "event=ready" in logs and "async queue loaded" in daemon.logs()
