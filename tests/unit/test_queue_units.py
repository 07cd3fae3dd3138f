"""The async queue's pure parts and its database: settings from labels, backoff, the callback URL and
address rule, the capture of an answer, the callback's headers, and ``queue.db``
(faasd/queue/settings.py, callback.py, worker.py, store.py)."""

from __future__ import annotations

import ipaddress
import os
import random
import sqlite3
import stat
from pathlib import Path

import pytest
import trio

from faasd.errors import InvalidRequest, StateError
from faasd.queue.callback import (
    CallbackRule,
    Delivery,
    deliver,
    forbidden_address,
    literal_address,
    parse_callback_url,
)
from faasd.queue.hosts import CallbackHosts
from faasd.queue.settings import QueueDefaults, QueueSettings, backoff_s
from faasd.queue.store import PART_BYTES, AddCall, AddPart, DeleteCall, QueueDb, Reschedule, SaveResult
from faasd.queue.worker import Capture, callback_headers

DEFAULTS = QueueDefaults()

# -- settings -------------------------------------------------------------------------------------


def test_settings_default_to_the_daemon_and_labels_or_annotations_override():
    assert QueueSettings.for_function({}, {}, QueueDefaults(concurrency=7, attempts=3)) == QueueSettings(
        concurrency=7, attempts=3, retry_codes=frozenset({429, 502, 503}), min_wait_s=1.0, max_wait_s=60.0
    )
    labels = {
        "com.openfaas.queue.max_inflight": "2",
        "com.openfaas.retry.attempts": "30",
        "com.openfaas.retry.codes": "429, 500,504",
        "com.openfaas.retry.min_wait": "5s",
        "com.openfaas.retry.max_wait": "1m",
    }
    settings = QueueSettings.for_function(labels, {"com.openfaas.retry.attempts": "4"}, DEFAULTS)
    assert settings == QueueSettings(
        concurrency=2, attempts=4, retry_codes=frozenset({429, 500, 504}), min_wait_s=5.0, max_wait_s=60.0
    )
    assert QueueSettings.for_function({"com.openfaas.retry.attempts": "0"}, {}, DEFAULTS).attempts == 1


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"com.openfaas.queue.max_inflight": "0"}, "com.openfaas.queue.max_inflight"),
        ({"com.openfaas.queue.max_inflight": "1000"}, "com.openfaas.queue.max_inflight"),
        ({"com.openfaas.retry.attempts": "many"}, "com.openfaas.retry.attempts"),
        ({"com.openfaas.retry.attempts": "101"}, "com.openfaas.retry.attempts"),
        ({"com.openfaas.retry.codes": "429,abc"}, "com.openfaas.retry.codes"),
        ({"com.openfaas.retry.codes": "99"}, "com.openfaas.retry.codes"),
        ({"com.openfaas.retry.min_wait": "soon"}, "com.openfaas.retry.min_wait"),
        ({"com.openfaas.retry.max_wait": "2h"}, "com.openfaas.retry.max_wait"),
        ({"com.openfaas.retry.min_wait": "2m"}, "com.openfaas.retry.max_wait"),  # above the default max
    ],
)
def test_bad_settings_are_errors_naming_the_key(labels: dict[str, str], named: str):
    with pytest.raises(InvalidRequest, match=named.replace(".", r"\.")):
        QueueSettings.for_function(labels, {}, DEFAULTS)


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all():
    rng = random.Random(7)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]:
        waits = [backoff_s(retry, 1.0, 60.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (retry, min(waits), max(waits))
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not all the same
    assert backoff_s(3, 0.0, 60.0) == 0.0


# -- the callback URL and address rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "target"),
    [
        ("http://127.0.0.1:9000/cb?x=1#frag", "127.0.0.1", 9000, b"/cb?x=1"),
        ("HTTPS://receiver.example", "receiver.example", 443, b"/"),
        ("http://[::1]:8081/a/b", "::1", 8081, b"/a/b"),
        ("http://receiver/%0d%0aX-Injected:%201", "receiver", 80, b"/%0d%0aX-Injected:%201"),
    ],
)
def test_callback_urls_accepted(text: str, host: str, port: int, target: bytes):
    url = parse_callback_url(text)
    assert (url.host, url.port, url.target) == (host, port, target)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ftp://127.0.0.1/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("127.0.0.1:8000/x", "http:// or https://"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://user:secret@127.0.0.1/", "credentials"),
        ("http://127.0.0.1@169.254.169.254/", "credentials"),
        ("http://127.0.0.1:0/", "port 0"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://a b/", "visible ASCII"),
        ("http://a/\r\nX-Injected: 1", "visible ASCII"),
        ("http://a/\x00", "visible ASCII"),
        ("http://ré.example/", "visible ASCII"),
        ("http://a/" + "p" * 2100, "longer than 2048"),
        ("", "visible ASCII"),
    ],
)
def test_callback_urls_refused(text: str, reason: str):
    with pytest.raises(InvalidRequest, match=reason):
        parse_callback_url(text)


def _never_local(address: object) -> bool:
    return False


def _always_local(address: object) -> bool:
    return True


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2852039166/", "link-local"),  # 169.254.169.254 written as one number
        ("http://0xa9.0xfe.0xa9.0xfe/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:9000/", "unspecified"),
        ("http://[::]:9000/", "unspecified"),
        ("http://224.0.0.1/", "multicast or broadcast"),
        ("http://255.255.255.255/", "multicast or broadcast"),
        ("http://127.0.0.1/", None),
        ("http://10.1.2.3:8080/", None),
        ("http://192.168.0.10/", None),
    ],
)
def test_addresses_no_one_should_call(text: str, forbidden: str | None):
    url = parse_callback_url(text)
    assert url.literal is not None
    reason = forbidden_address(url.literal, url, gateway_port=None, is_local=_never_local)
    assert (reason is None) if forbidden is None else (forbidden in (reason or "")), reason


def test_the_gateway_itself_only_for_its_function_routes():
    for text, refused in [
        ("http://127.0.0.1:8080/system/functions", True),
        ("http://127.0.0.1:8080/async-function/echo", True),
        ("http://127.0.0.1:8080/", True),
        ("http://127.0.0.1:8080/function/next-step", False),
        ("http://127.0.0.1:9090/system/functions", False),  # another port: not the gateway
    ]:
        url = parse_callback_url(text)
        assert url.literal is not None
        reason = forbidden_address(url.literal, url, gateway_port=8080, is_local=_always_local)
        assert (reason is not None) == refused, (text, reason)
        assert not refused or "only its /function/" in (reason or "")


def test_literal_addresses_in_every_form_the_resolver_reads():
    assert literal_address("2852039166") == ipaddress.IPv4Address("169.254.169.254")
    assert literal_address("0251.0376.0251.0376") == ipaddress.IPv4Address("169.254.169.254")
    assert literal_address("::1") == ipaddress.IPv6Address("::1")
    assert literal_address("receiver.example") is None


def test_callback_hosts_are_read_from_a_list_or_a_comma_separated_string():
    hosts = CallbackHosts.parse("Hooks.Example.com., *.corp.example, 10.0.0.0/8, [fd00::7], 192.0.2.1,,")
    assert hosts == CallbackHosts.parse(["hooks.example.com", "*.corp.example", "10.0.0.0/8", "fd00::7", "192.0.2.1"])
    assert hosts.names == {"hooks.example.com"} and hosts.suffixes == (".corp.example",) and not hosts.any_host
    assert [str(network) for network in hosts.networks] == ["10.0.0.0/8", "fd00::7/128", "192.0.2.1/32"]
    assert CallbackHosts.parse("*").any_host and str(CallbackHosts.parse("")) == "(loopback only)"
    for bad in ["http://hooks.example.com/", "10.0.0.0/33", "a b", "*.", "-bad-.example", "999.1.1.1", "x" * 300]:
        with pytest.raises(ValueError, match="is not a host name"):
            CallbackHosts.parse(bad)


@pytest.mark.parametrize(
    ("entries", "allowed", "refused"),
    [
        (
            "",
            ["http://127.0.0.1:9/", "http://127.9.9.9/", "http://[::1]/", "http://localhost:9/", "http://a.localhost/",
             "http://[::ffff:127.0.0.1]/", "http://2130706433/"],
            ["http://10.1.2.3/", "http://192.168.0.10/", "http://203.0.113.5/", "http://hooks.example.com/",
             "http://localhost.example.com/"],
        ),
        (
            "hooks.example.com,*.corp.example,10.0.0.0/8",
            ["http://hooks.example.com/", "https://HOOKS.example.com./x", "http://a.b.corp.example/", "http://10.1.2.3/",
             "http://127.0.0.1/"],
            ["http://www.hooks.example.com/", "http://corp.example/", "http://11.0.0.1/", "http://example.com/"],
        ),
        ("*", ["http://203.0.113.5/", "http://anything.example/", "http://10.1.2.3/"], []),
    ],
)  # fmt: skip
def test_callbacks_go_to_loopback_and_the_listed_hosts_only(entries: str, allowed: list[str], refused: list[str]):
    rule = CallbackRule(CallbackHosts.parse(entries), gateway_port=None, is_local=_never_local)
    for text in allowed:
        assert rule.check(text).text == text
    for text in refused:
        with pytest.raises(
            InvalidRequest, match="is not allowed: callbacks go to this host's loopback or to the hosts"
        ):
            rule.check(text)


def test_what_no_list_allows_is_refused_first_with_its_own_reason():
    rule = CallbackRule(CallbackHosts.parse("*,169.254.0.0/16"), gateway_port=8080, is_local=_always_local)
    for text, reason in [
        ("http://169.254.169.254/", "link-local"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://localhost:8080/system/functions", "this gateway"),
    ]:
        with pytest.raises(InvalidRequest, match=reason):
            rule.check(text)
    assert rule.check("http://localhost:8080/function/next").port == 8080


def test_a_name_allowed_only_as_localhost_must_resolve_to_loopback():
    default = CallbackRule(CallbackHosts(), gateway_port=None, is_local=_never_local)
    localhost = parse_callback_url("http://localhost:9/")
    assert default.guard(ipaddress.ip_address("127.0.0.1"), localhost) is None
    assert default.guard(ipaddress.ip_address("::ffff:127.0.0.1"), localhost) is None
    assert "not to a loopback address" in (default.guard(ipaddress.ip_address("10.1.2.3"), localhost) or "")
    listed = CallbackRule(CallbackHosts.parse("localhost"), gateway_port=None, is_local=_never_local)
    assert listed.guard(ipaddress.ip_address("10.1.2.3"), localhost) is None  # the operator listed the name
    hooks = parse_callback_url("http://hooks.example.com/")
    named = CallbackRule(CallbackHosts.parse("hooks.example.com"), gateway_port=None, is_local=_never_local)
    assert named.guard(ipaddress.ip_address("192.168.1.20"), hooks) is None
    assert "link-local" in (named.guard(ipaddress.ip_address("169.254.169.254"), hooks) or "")


async def test_deliver_checks_the_addresses_a_name_resolves_to() -> None:
    """A host name is resolved at delivery and every address checked before connecting: the guard sees
    127.0.0.1 for ``localhost`` and nothing is sent."""
    seen = []

    def guard(address, url):  # type: ignore[no-untyped-def]
        seen.append(address)
        return "refused for the test"

    listener = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener[0].socket.getsockname()[1]
    url = parse_callback_url(f"http://localhost:{port}/cb")
    delivery = await deliver(url, [], b"body", 4, timeout_s=5, guard=guard)
    assert ipaddress.IPv4Address("127.0.0.1") in seen
    assert delivery == Delivery(False, 0, f"refused for the test (localhost is {seen[0]})", final=True)
    for item in listener:
        await item.aclose()


async def test_deliver_posts_and_classifies_the_answer() -> None:
    answers = iter([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 503 Busy\r\n\r\n"])
    received: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"hello" not in data:
            data += await stream.receive_some(65536)
        received.append(data)
        await stream.send_all(next(answers))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, serve, 0)
        port = listeners[0].socket.getsockname()[1]
        url = parse_callback_url(f"http://127.0.0.1:{port}/cb?x=1")
        ok = await deliver(url, [(b"x-call-id", b"c1")], b"hello", 5, timeout_s=5, guard=lambda a, u: None)
        busy = await deliver(url, [], b"hello", 5, timeout_s=5, guard=lambda a, u: None)
        nursery.cancel_scope.cancel()
    assert ok == Delivery(True, 204, "", final=True)
    assert busy.status == 503 and not busy.ok and not busy.final
    head = received[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /cb?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in head and b"Content-Length: 5" in head and b"x-call-id: c1" in head


async def test_deliver_to_nothing_listening_is_a_retryable_failure() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    url = parse_callback_url(f"http://127.0.0.1:{port}/")
    delivery = await deliver(url, [], b"", 0, timeout_s=5, guard=lambda a, u: None)
    assert not delivery.ok and not delivery.final and delivery.status == 0 and "failed" in delivery.reason


# -- the answer and the callback's headers ----------------------------------------------------------


async def test_capture_keeps_small_answers_in_memory_and_spills_large_ones_in_parts() -> None:
    spilled: list[AddPart] = []

    async def spill(op: AddPart) -> None:
        spilled.append(op)

    small = Capture(1, keep_body=True, keep_status=lambda status: True, spill=spill, limit=10 * PART_BYTES)
    await small.send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
    await small.send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await small.send({"type": "http.response.body", "body": b"c", "more_body": False})
    assert (small.status, small.body, small.length, small.complete, spilled) == (201, b"abc", 3, True, [])

    large = Capture(2, keep_body=True, keep_status=lambda status: True, spill=spill, limit=10 * PART_BYTES)
    await large.send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = os.urandom(PART_BYTES // 3 + 7)
    for _ in range(7):
        await large.send({"type": "http.response.body", "body": chunk, "more_body": True})
    await large.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert large.body is None and large.parts == len(spilled) == 3 and large.length == 7 * len(chunk)
    assert b"".join(op.data for op in spilled) == chunk * 7
    assert [len(op.data) for op in spilled][:2] == [PART_BYTES, PART_BYTES]

    cut = Capture(3, keep_body=True, keep_status=lambda status: True, spill=spill, limit=5)
    await cut.send({"type": "http.response.start", "status": 200, "headers": []})
    await cut.send({"type": "http.response.body", "body": b"0123456789", "more_body": False})
    assert (cut.body, cut.truncated) == (b"01234", True)

    retried = Capture(4, keep_body=True, keep_status=lambda status: status != 503, spill=spill, limit=100)
    await retried.send({"type": "http.response.start", "status": 503, "headers": []})
    await retried.send({"type": "http.response.body", "body": b"busy", "more_body": False})
    assert (retried.status, retried.body, retried.complete) == (503, b"", True)  # a retried answer is not kept


def test_callback_headers_copy_the_answer_and_add_openfaas_fields():
    answer = [
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"x-call-id", b"from-the-answer"),
        (b"x-callback-url", b"http://elsewhere/"),
        (b"connection", b"keep-alive"),
        (b"x-thing", b"1"),
        (b"x-duration-seconds", b"9.9"),
    ]
    headers = callback_headers(answer, call_id="c-1", function="echo", status=201, seconds=0.25, truncated=True)
    assert headers == [
        (b"content-type", b"application/json"),
        (b"x-thing", b"1"),
        (b"user-agent", headers[2][1]),
        (b"x-call-id", b"c-1"),
        (b"x-duration-seconds", b"0.250000"),
        (b"x-function-status", b"201"),
        (b"x-function-name", b"echo"),
        (b"x-faasd-truncated", b"true"),
    ]
    assert headers[2][1].startswith(b"faasd-queue-worker/")


# -- queue.db -----------------------------------------------------------------------------------------


def _call(function: str = "echo", body: bytes = b"hello", callback: str | None = "http://127.0.0.1:9/") -> AddCall:
    return AddCall(
        call_id="c-1",
        function=function,
        method="POST",
        target=b"/sub?q=1",
        headers=[(b"x-custom", b"\xe9t\xe9"), (b"host", b"gw")],
        body=body,
        callback_url=callback,
        accepted_at=1000.5,
    )


async def test_store_keeps_calls_their_progress_and_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "queue.db")
    db = QueueDb.open(path)
    first, second = await db.apply([_call(), _call("other", b"", None)])
    assert (first, second) == (1, 2)
    await db.apply([Reschedule(first, 2, 1, 2000.0), AddPart(first, 0, b"p0"), AddPart(first, 1, b"p1")])
    await db.apply([SaveResult(first, 503, [(b"content-type", b"text/plain")], 0.5, None, 4)])
    await db.aclose()

    db = QueueDb.open(path)  # as after a restart
    index = await db.load_index()
    assert [
        (row.seq, row.function, row.stored_bytes, row.attempts, row.not_before, row.has_result) for row in index
    ] == [
        (1, "echo", 5, 2, 2000.0, True),
        (2, "other", 0, 0, 0.0, False),
    ]
    call = await db.load_call(first)
    assert call is not None
    assert (call.call_id, call.target, call.body, call.callback_url) == (
        "c-1",
        b"/sub?q=1",
        b"hello",
        "http://127.0.0.1:9/",
    )
    assert call.headers == [(b"x-custom", b"\xe9t\xe9"), (b"host", b"gw")]
    assert call.result is not None and (call.result.status, call.result.body, call.result.length) == (503, None, 4)
    assert [await db.read_part(first, n) for n in (0, 1)] == [b"p0", b"p1"]
    await db.apply([DeleteCall(first)])
    assert [row.seq for row in await db.load_index()] == [2]
    with pytest.raises(StateError, match="part 0"):
        await db.read_part(first, 0)
    await db.aclose()
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        file = tmp_path / "state" / name
        if file.exists():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, name


def test_store_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError, match="not an SQLite database"):
        QueueDb.open(str(garbage))
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as connection:
        connection.execute("PRAGMA user_version=99")
    with pytest.raises(StateError, match="newer faasd"):
        QueueDb.open(str(newer))
    with pytest.raises(StateError, match="directory"):
        QueueDb.open(str(tmp_path))
