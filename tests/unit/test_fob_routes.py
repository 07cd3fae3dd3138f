"""``/api/*`` in process (faasd.fob.routes): who may upload, read and delete; every answer JSON with the
documented status; ``/api/call`` forwarding the parsed arguments to the snippet's function and turning
an error answer that is not JSON into ``{"error"}``. The snippets come from a real store; the snippet's
"replica" is a real TCP server on 127.0.0.1 that keeps each request head and answers as told. Creating a
snippet end to end (a real replica) is in tests/e2e/test_fob.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from faasd.fob.openapi import fob_paths
from faasd.fob.routes import FobRoutes, JsonErrors, is_loopback_bind
from faasd.fob.snippets import SnippetService
from faasd.gateway.auth import BasicAuth
from faasd.gateway.invoke import Invoker
from faasd.gateway.metrics import GatewayMetrics
from faasd.gateway.proxy import UpstreamPool
from faasd.gateway.throttle import AuthThrottle
from faasd.providers.local import LocalProvider
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry
from faasd.service import FunctionService
from faasd.store import AsyncStore, Store

PASSWORD = "a-password-for-tests-only"
AUTH = (b"authorization", b"Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()))
SOURCE = b"def callme(param1, param2):\n    return int(param1) + int(param2)\n"


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        assert self.headers[b"content-type"] == b"application/json", self
        return json.loads(self.body)


def _reply(status: int, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, content_type, len(body))
    return head + body


class Replica:
    """A one-request-per-connection HTTP server on 127.0.0.1: keeps each request head, answers ``reply``."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0
        self.reply = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"result": 2}'

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            self.heads.append(data.split(b"\r\n\r\n", 1)[0])
            await stream.send_all(self.reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))


@dataclass
class Api:
    routes: FobRoutes
    snippets: SnippetService
    registry: EndpointRegistry
    snippet_id: str
    pool: UpstreamPool
    replicas: list[Replica] = field(default_factory=list)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes = b"",
        client: str = "127.0.0.1",
    ) -> Answer:
        sent: list[dict[str, Any]] = []
        chunks = [body]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "headers": [(b"host", b"127.0.0.1:8080"), (b"content-length", str(len(body)).encode()), *headers],
            "client": (client, 50000),
        }
        await self.routes(scope, receive, send)
        start = sent[0]
        assert start["type"] == "http.response.start"
        return Answer(start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = AsyncStore(Store.open(str(tmp_path / "faasd.db")))
    registry = EndpointRegistry()
    provider = LocalProvider(state_dir=str(tmp_path / "state"), registry=registry)  # Never started here.
    service = FunctionService(store, provider, registry)
    snippets = SnippetService(store, service, registry, timeout_s=5, ready_timeout_s=1)
    row = await store.add_snippet("0b0e3f5c-3d3f-4c39-a3a2-6c1c7b0e9a11", "python", SOURCE)
    await snippets.load()
    pool = UpstreamPool()
    invoker = Invoker(
        exists=lambda name: name == f"fob-{row.id}",
        registry=registry,
        metrics=GatewayMetrics(ready_replicas=dict),
        pool=pool,
        upstream_timeout_s=10,
        ready_timeout_s=0.2,
        max_body_bytes=1 << 20,
    )
    routes = FobRoutes(
        snippets=snippets,
        invoker=invoker,
        auth=BasicAuth("admin", PASSWORD),
        throttle=AuthThrottle(),
        open_gen=True,
        max_snippet_bytes=1024,
    )
    yield Api(routes, snippets, registry, row.id, pool)
    await snippets.checker.aclose()  # The source checker's child process (SnippetService.run stops it in the daemon).
    await pool.aclose()
    await store.aclose()


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_binds(bind: str, loopback: bool) -> None:
    assert is_loopback_bind(bind) is loopback


def test_the_documented_security_of_each_operation() -> None:
    """Open: stats and call. Open on loopback (else basic auth): gen, meta, cs. Always basic auth: delete."""
    security = {(path, method): op["security"] for path, item in fob_paths().items() for method, op in item.items()}
    optional = [{}, {"basicAuth": []}]
    assert security == {
        ("/api/stats", "get"): [],
        ("/api/call/{id}", "get"): [],
        ("/api/gen", "post"): optional,
        ("/api/meta/{id}", "get"): optional,
        ("/api/cs/{id}", "get"): optional,
        ("/api/gen/{id}", "delete"): [{"basicAuth": []}],
    }
    for (path, method), needs in security.items():
        responses = fob_paths()[path][method]["responses"]
        assert bool(needs) == ({"401", "403", "429"} <= responses.keys()), (path, method)


async def test_stats_source_and_meta(api: Api) -> None:
    assert (await api.request("GET", "/api/stats")).json() == {"functions": [api.snippet_id]}
    source = await api.request("GET", f"/api/cs/{api.snippet_id}")
    assert (source.status, source.body) == (200, SOURCE)
    assert source.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert (await api.request("GET", f"/api/meta/{api.snippet_id}")).status == 503  # No ready replica.
    api.registry.publish(f"fob-{api.snippet_id}", [Endpoint("127.0.0.1", 4321, "r1")])
    assert (await api.request("GET", f"/api/meta/{api.snippet_id}")).json() == {"host": "127.0.0.1", "port": 4321}
    for route in ("cs", "meta", "call"):
        missing = await api.request("GET", f"/api/{route}/no-such-id")
        assert missing.status == 404 and "no-such-id" in missing.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/gen", b"POST"),
        ("PUT", "/api/gen", b"POST"),
        ("GET", "/api/gen/x", b"DELETE"),
        ("POST", "/api/stats", b"GET"),
        ("DELETE", "/api/cs/x", b"GET"),
        ("POST", "/api/meta/x", b"GET"),
    ],
)
async def test_other_methods_are_405_with_allow(api: Api, method: str, path: str, allow: bytes) -> None:
    answer = await api.request(method, path, headers=(AUTH,))
    assert answer.status == 405 and answer.headers[b"allow"] == allow and answer.json()["error"]


async def test_call_with_another_method_and_unknown_routes(api: Api) -> None:
    post = await api.request("POST", f"/api/call/{api.snippet_id}")
    assert post.status == 405 and post.headers[b"allow"] == b"GET"
    for path in ("/api/", "/api/nothing", "/api/stats/x", "/api/call"):
        answer = await api.request("GET", path)
        assert answer.status == 404 and "Not found" in answer.json()["error"], path


async def test_upload_on_loopback_needs_no_credentials_but_checks_those_sent(api: Api) -> None:
    bad = b"def callme(:\n"
    anonymous = await api.request("POST", "/api/gen", body=bad)
    assert anonymous.status == 400 and anonymous.json()["line"] == 1  # Past the guard: the source is checked.
    assert (await api.request("POST", "/api/gen", body=bad, headers=(AUTH,))).status == 400
    wrong = (b"authorization", b"Basic " + base64.b64encode(b"admin:wrong-password-0123456789"))
    refused = await api.request("POST", "/api/gen", body=bad, headers=(wrong,))
    assert refused.status == 401 and refused.headers[b"www-authenticate"].startswith(b"Basic")


async def test_failed_logins_are_throttled_with_the_system_routes_count(api: Api) -> None:
    wrong = (b"authorization", b"Basic " + base64.b64encode(b"admin:wrong-password-0123456789"))
    statuses = [(await api.request("POST", "/api/gen", body=b"x", headers=(wrong,))).status for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    locked = await api.request("POST", "/api/gen", body=b"x", headers=(AUTH,))
    assert locked.status == 429 and int(locked.headers[b"retry-after"]) >= 1
    assert api.routes.throttle.retry_after("127.0.0.1") > 0
    other = await api.request("POST", "/api/gen", body=b"def f(:", headers=(AUTH,), client="127.0.0.9")
    assert other.status == 400  # Another address is not slowed.


@pytest.mark.parametrize(
    "headers",
    [
        ((b"origin", b"http://evil.example"),),
        ((b"origin", b"null"),),
        ((b"origin", b"http://127.0.0.1:9999"),),
        ((b"sec-fetch-site", b"cross-site"),),
        ((b"origin", b"http://evil.example"), AUTH),
    ],
)
async def test_cross_site_requests_may_not_upload_or_read(api: Api, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    for method, path in (("POST", "/api/gen"), ("GET", f"/api/cs/{api.snippet_id}"), ("DELETE", "/api/gen/x")):
        answer = await api.request(method, path, body=b"def f(:", headers=headers)
        assert answer.status == 403 and "cross-site" in answer.json()["error"], (method, path)


async def test_same_origin_and_same_site_requests_are_not_cross_site(api: Api) -> None:
    for headers in (((b"origin", b"http://127.0.0.1:8080"),), ((b"sec-fetch-site", b"same-origin"),)):
        assert (await api.request("POST", "/api/gen", body=b"def f(:", headers=headers)).status == 400


async def test_proxied_requests_and_non_loopback_gateways_need_credentials(api: Api) -> None:
    for proxy in (b"x-forwarded-for", b"forwarded", b"x-real-ip"):
        answer = await api.request("POST", "/api/gen", body=b"def f(:", headers=((proxy, b"10.0.0.7"),))
        assert answer.status == 401, proxy
        assert (await api.request("GET", f"/api/cs/{api.snippet_id}", headers=((proxy, b"x"),))).status == 401
    api.routes.open_gen = False
    assert (await api.request("POST", "/api/gen", body=b"def f(:")).status == 401
    assert (await api.request("GET", f"/api/cs/{api.snippet_id}")).status == 401
    assert (await api.request("GET", f"/api/meta/{api.snippet_id}")).status == 401
    assert (await api.request("POST", "/api/gen", body=b"def f(:", headers=(AUTH,))).status == 400
    assert (await api.request("GET", "/api/stats")).status == 200  # Public like /function/*.
    assert (await api.request("GET", f"/api/call/{api.snippet_id}", query=b"a")).status == 400  # Public too.


async def test_delete_always_needs_credentials(api: Api) -> None:
    assert (await api.request("DELETE", f"/api/gen/{api.snippet_id}")).status == 401
    assert (await api.request("DELETE", "/api/gen/no-such-id", headers=(AUTH,))).status == 404
    assert api.snippets.function_of(api.snippet_id) == f"fob-{api.snippet_id}"


async def test_upload_size_language_and_source_checks(api: Api) -> None:
    too_big = await api.request("POST", "/api/gen", body=b"#" * 1025)
    assert too_big.status == 413 and "max_snippet_size" in too_big.json()["error"]
    unknown = await api.request("POST", "/api/gen", query=b"lang=cobol", body=SOURCE)
    assert unknown.status == 400 and unknown.json()["error"] == "unsupported lang 'cobol'; supported: python"
    twice = await api.request("POST", "/api/gen", query=b"lang=python&lang=js", body=SOURCE)
    assert twice.status == 400
    for body, line, column in ((b"def callme(:\n", 1, 12), (b"x = 1\n\x00\n", 2, 1), (b"x = '\xff'", 1, 6)):
        answer = await api.request("POST", "/api/gen", body=body)
        assert answer.status == 400 and (answer.json()["line"], answer.json()["column"]) == (line, column), body
    nothing = await api.request("POST", "/api/gen", body=b"def other(): pass\n")
    assert nothing.status == 400 and "no top-level callme" in nothing.json()["error"]


async def test_bad_argument_lists_are_400_before_any_replica(api: Api) -> None:
    for query, reason in ((b"param1", "has no ':'"), (b"a:1,a:2", "given twice"), (b"1x:1", "not a valid name")):
        answer = await api.request("GET", f"/api/call/{api.snippet_id}", query=query)
        assert answer.status == 400 and reason in answer.json()["error"]


async def test_call_forwards_the_arguments_and_relays_the_answer(api: Api) -> None:
    replica = Replica()
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.serve)
        api.registry.publish(f"fob-{api.snippet_id}", [Endpoint("127.0.0.1", replica.port, "r1", call_token=False)])
        answer = await api.request("GET", f"/api/call/{api.snippet_id}", query=b"param1:1,param2:%2C%3A%26 x")
        assert answer.status == 200 and answer.json() == {"result": 2}
        assert answer.headers[b"x-call-id"]  # As on /function/*.
        assert replica.heads[-1].startswith(b"GET /?param1=1&param2=%2C%3A%26%20x HTTP/1.1\r\n")
        await api.request("GET", f"/api/call/{api.snippet_id}")
        assert replica.heads[-1].startswith(b"GET / HTTP/1.1\r\n")

        # A watchdog's own error answer (text) becomes JSON with the same status; the driver's JSON passes.
        replica.reply = _reply(500, b"text/plain", b"worker crashed during the call: boom\n")
        crashed = await api.request("GET", f"/api/call/{api.snippet_id}")
        assert crashed.status == 500 and crashed.json() == {"error": "worker crashed during the call: boom"}
        assert crashed.headers[b"x-call-id"]
        replica.reply = _reply(408, b"application/json", b'{"error": "t"}')
        timed_out = await api.request("GET", f"/api/call/{api.snippet_id}")
        assert timed_out.status == 408 and timed_out.body == b'{"error": "t"}'
        nursery.cancel_scope.cancel()
    # The gateway's own error: no ready replica within ready_timeout.
    api.registry.forget(f"fob-{api.snippet_id}")
    held = await api.request("GET", f"/api/call/{api.snippet_id}")
    assert held.status == 503 and "No ready replica" in held.json()["error"]


async def test_json_errors_passes_success_and_json_through_untouched() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
    body = {"type": "http.response.body", "body": b"x", "more_body": False}
    wrapper = JsonErrors(send)
    await wrapper(start)
    await wrapper(body)
    assert sent == [start, body]
    sent.clear()
    wrapper = JsonErrors(send)
    await wrapper({**start, "status": 502, "headers": [(b"x-call-id", b"c1"), (b"content-type", b"text/plain")]})
    await wrapper({"type": "http.response.body", "body": b"line one\nline two" + b"x" * 10_000, "more_body": True})
    await wrapper({"type": "http.response.body", "body": b"more", "more_body": False})
    assert sent[0]["status"] == 502 and (b"x-call-id", b"c1") in sent[0]["headers"]
    error = json.loads(sent[1]["body"])["error"]
    assert error.startswith("line one\\nline two") and len(error) <= 300
