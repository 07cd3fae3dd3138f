"""The table of hostile requests that ``test_hostile_inputs.py`` sends: every route of the gateway, by group.

Each :class:`Bad` is one request as raw bytes (so NUL, CR and LF can go where a client library would
refuse to put them), the statuses it may get, and the route of ``/openapi.json`` it exercises (the test
checks that every documented route has cases). ``reason=True``: faasd writes the answer itself, so it
must be one short line of ``text/plain`` (the function's own answers and the HTTP layer's bare
400/431/505 are not). When two statuses are listed, both are right by RFC 9110/9112 (a server may reject
or accept, e.g. a control character in a header value); everything else has exactly one answer.

The daemon these run against has ``max_body_size = 4m`` (so "over the cap" costs 4 MiB, not 64) and the
default ``max_json_size`` (1 MiB); the function ``ref`` is ``cat``, and the secret ``used`` is in use by
the function ``user`` (see ``test_hostile_inputs.py``). The ``api`` group (the Flock-of-Birds routes,
whose answers are JSON: ``json=True``) has a snippet returning the names of its arguments; its id
replaces :data:`SNIPPET` in the requests.
"""

# ruff: noqa: E501
# (A table: one case per line reads better than calls wrapped over five.)

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from tests.daemon_fixtures import PASSWORD

__all__ = ["GROUPS", "MAX_BODY", "MAX_JSON", "SNIPPET", "Bad", "cases"]

MAX_BODY = 4 * 1024 * 1024
"""The daemon's ``max_body_size`` in this test."""
MAX_JSON = 1024 * 1024
"""``max_json_size``'s default."""
AUTH = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
JSON = "application/json"
INJECTED = "x-injected"
"""Every CR/LF case tries to add this header to an answer; no answer may carry it."""
DEEP = 100_000
"""Nesting depth of the deep JSON documents (the interpreter's recursion limit is 1000)."""
SNIPPET = "SNIPPET-ID"
"""In the ``api`` group's requests: replaced by the id of the snippet the test uploads first."""
MAX_SNIPPET = 256 * 1024
"""``max_snippet_size``'s default."""


@dataclass(frozen=True)
class Bad:
    """One hostile request and what it must get."""

    what: str
    route: str
    """The ``/openapi.json`` path it exercises (``""``: none -- the HTTP layer itself)."""
    raw: bytes
    expect: frozenset[int]
    reason: bool = True
    """faasd answers it: one line of text/plain."""
    head: bool = False
    """A HEAD request: the answer has no body."""
    json: bool = False
    """faasd's answer is JSON (``/api/*``): an error is ``{"error": "<one short line>"}``, not text/plain."""


def request(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    auth: bool = False,
    length: int | None = None,
) -> bytes:
    """One keep-alive request; ``length`` announces a Content-Length other than the body's (the body is
    not sent)."""
    head = {"Host": "127.0.0.1"}
    if auth:
        head["Authorization"] = AUTH
    head.update(headers or {})
    if length is not None:
        head["Content-Length"] = str(length)
    elif body or method in ("POST", "PUT", "PATCH", "DELETE"):
        head["Content-Length"] = str(len(body))
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw(text: bytes) -> bytes:
    """A request written out by hand (for bytes no helper would produce)."""
    return text


def chunked(method: str, target: str, size: int, headers: dict[str, str] | None = None, *, auth: bool = False) -> bytes:
    """A chunked body of ``size`` bytes (1 MiB chunks) -- no Content-Length to refuse it on."""
    head = {"Host": "127.0.0.1", "Transfer-Encoding": "chunked", **(headers or {})}
    if auth:
        head["Authorization"] = AUTH
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in head.items())]
    out = [("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")]
    left = size
    while left:
        piece = min(left, 1024 * 1024)
        out += [b"%x\r\n" % piece, b"{" * piece, b"\r\n"]
        left -= piece
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def _ok(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


def _alexa(intent: object) -> bytes:
    return json.dumps(
        {
            "session": {"sessionId": "s-1", "application": {"applicationId": "app-1"}},
            "request": {"type": "IntentRequest", "intent": {"name": intent}},
        }
    ).encode()


def _deep_arrays() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def _deep_objects() -> bytes:
    return b'{"a":' * DEEP + b"1" + b"}" * DEEP


# -- the groups -----------------------------------------------------------------------------------


def invoke() -> list[Bad]:
    """``/function/{name}[/{path}]``: names, paths, queries, headers, methods, bodies."""
    fn, sub = "/function/{functionName}", "/function/{functionName}/{path}"
    return [
        Bad("NUL (%00) in the path", sub, request("GET", "/function/ref/a%00b"), _ok(400)),
        Bad("NUL (%00) in the query", fn, request("GET", "/function/ref?a=%00"), _ok(400)),
        Bad("NUL (%00) in the name", fn, request("GET", "/function/re%00f"), _ok(400)),
        Bad("raw NUL byte in the target", sub, raw(b"GET /function/ref/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"), _ok(400), False),
        Bad("CRLF (%0d%0a) in the path", sub, request("GET", f"/function/ref/%0d%0a{INJECTED}:%201"), _ok(200), False),
        Bad("CRLF (%0d%0a) in the query", fn, request("GET", f"/function/ref?a=%0d%0a{INJECTED}:%201"), _ok(200), False),
        Bad("CRLF (%0d%0a) in the name", fn, request("GET", f"/function/ref%0d%0a{INJECTED}:%201"), _ok(400)),
        Bad("raw CR in a header value", fn, raw(b"GET /function/ref HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: 1\r\n\r\n"), _ok(400), False),
        Bad("raw NUL in a header value", fn, raw(b"GET /function/ref HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"), _ok(400), False),
        Bad("control character in a header value", fn, raw(b"GET /function/ref HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\nConnection: close\r\n\r\n"), _ok(200, 400), False),
        Bad("control character in X-Call-Id (echoed back)", fn, raw(b"GET /function/ref HTTP/1.1\r\nHost: x\r\nX-Call-Id: a\x7fb\r\nConnection: close\r\n\r\n"), _ok(200, 400), False),
        Bad("12k-character X-Call-Id (echoed back)", fn, request("GET", "/function/ref", headers={"X-Call-Id": "c" * 12_000}), _ok(200, 431), False),
        Bad("10k-character path", sub, request("GET", "/function/ref/" + "p" * 10_000), _ok(200), False),
        Bad("10k-character name", fn, request("GET", "/function/" + "n" * 10_000), _ok(400)),
        Bad("a namespace that does not exist", fn, request("GET", "/function/ref.dev"), _ok(400)),
        Bad("a namespace that does not exist, before a path", sub, request("GET", "/function/ref.dev/x"), _ok(400)),
        Bad("an empty namespace (a trailing dot)", fn, request("GET", "/function/ref."), _ok(400)),
        Bad("only a namespace", fn, request("GET", "/function/.openfaas-fn"), _ok(400)),
        Bad("a name and the namespace twice", fn, request("GET", "/function/ref.openfaas-fn.openfaas-fn"), _ok(404)),
        Bad("a 10k-character namespace", fn, request("GET", "/function/ref." + "n" * 10_000), _ok(400)),
        Bad("a namespace with CRLF (%0d%0a)", fn, request("GET", f"/function/ref.openfaas-fn%0d%0a{INJECTED}:%201"), _ok(400)),
        Bad("a namespace with %00", fn, request("GET", "/function/ref.openfaas-f%00n"), _ok(400)),
        Bad("encoded dot-dot after the name", fn, request("GET", "/function/ref.%2e%2e/system/info"), _ok(400)),
        Bad("100k-character target", sub, request("GET", "/function/ref/" + "p" * 100_000), _ok(414, 431), False),
        Bad("10k-character query", fn, request("GET", "/function/ref?" + "q=1&" * 2_500), _ok(200), False),
        Bad("malformed percent-escapes and bytes in the query", fn, request("GET", "/function/ref?%zz&%%&=&a=%ff%fe&&"), _ok(200), False),
        Bad("query of 5000 ampersands", fn, request("GET", "/function/ref?" + "&" * 5_000), _ok(200), False),
        Bad("unknown method", fn, request("BREW", "/function/ref"), _ok(405)),
        Bad("TRACE", fn, request("TRACE", "/function/ref"), _ok(405)),
        Bad("method with a character no token has", fn, raw(b"G@T /function/ref HTTP/1.1\r\nHost: x\r\n\r\n"), _ok(400), False),
        Bad("unknown function", fn, request("POST", "/function/nope", b"x"), _ok(404)),
        Bad("empty name", fn, request("GET", "/function/"), _ok(400)),
        Bad("empty name before a path", sub, request("GET", "/function//ref"), _ok(400)),
        Bad("encoded dot-dot as the name", fn, request("GET", "/function/%2e%2e/system/info"), _ok(400)),
        Bad("Content-Length over max_body_size", fn, request("POST", "/function/ref", length=MAX_BODY + 1), _ok(413)),
        Bad("Content-Length of 2^63", fn, request("POST", "/function/ref", length=2**63), _ok(400, 413)),
        Bad("negative Content-Length", fn, raw(b"POST /function/ref HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), _ok(400), False),
        Bad("two different Content-Lengths", fn, raw(b"POST /function/ref HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), _ok(400), False),
        Bad("Content-Length and chunked", fn, raw(b"POST /function/ref HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), _ok(200, 400), False),
        Bad("chunked body over max_body_size", fn, chunked("POST", "/function/ref", MAX_BODY + 1024), _ok(413)),
        Bad("malformed chunk size", fn, raw(b"POST /function/ref HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"), _ok(400), False),
        Bad("Expect: 100-continue over max_body_size", fn, request("POST", "/function/ref", headers={"Expect": "100-continue"}, length=MAX_BODY + 1), _ok(413)),
        Bad("control characters as Content-Type", fn, raw(b"POST /function/ref HTTP/1.1\r\nHost: x\r\nContent-Type: \x01\x02\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"), _ok(200, 400), False),
        Bad("10k-character Content-Type", fn, request("POST", "/function/ref", b"hi", {"Content-Type": "text/" + "x" * 10_000}), _ok(200), False),
        Bad("500 headers", fn, raw(b"GET /function/ref HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"Connection: close\r\n\r\n"), _ok(200, 431), False),
        Bad("a 20k header", fn, request("GET", "/function/ref", headers={"X-Long": "l" * 20_000}), _ok(431), False),
    ]  # fmt: skip


def async_calls() -> list[Bad]:
    """``POST /async-function/{name}[/{path}]``: names, paths, methods, bodies, ``X-Callback-Url`` (the rule
    of faasd/queue/callback.py: scheme, host, credentials, length, CR/LF, link-local and unspecified
    addresses, hosts not in async_callback_hosts) and ``X-Call-Id``. Calls it accepts (202) run later on
    ``ref``; their callbacks go to a closed port on 127.0.0.1 and are retried in the background while the
    group goes on."""
    fn, sub = "/async-function/{functionName}", "/async-function/{functionName}/{path}"

    def post(
        what: str, target: str, expect: frozenset[int], body: bytes = b"x", reason: bool = True, **headers: str
    ) -> Bad:
        route = sub if target.count("/") > 2 else fn
        return Bad(
            what,
            route,
            request("POST", target, body, {name.replace("_", "-"): value for name, value in headers.items()}),
            expect,
            reason,
        )

    def callback(what: str, url: str, expect: frozenset[int] = _ok(400)) -> Bad:
        return post(f"X-Callback-Url {what}", "/async-function/ref", expect, X_Callback_Url=url)

    return [
        post("NUL (%00) in the path", "/async-function/ref/a%00b", _ok(400)),
        post("NUL (%00) in the query", "/async-function/ref?a=%00", _ok(400)),
        post("NUL (%00) in the name", "/async-function/re%00f", _ok(400)),
        post("CRLF (%0d%0a) in the name", f"/async-function/ref%0d%0a{INJECTED}:%201", _ok(400)),
        post("CRLF (%0d%0a) in the path (stored as sent)", f"/async-function/ref/%0d%0a{INJECTED}:%201", _ok(202), reason=False),
        Bad("raw NUL byte in the target", sub, raw(b"POST /async-function/ref/a\x00b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), _ok(400), False),
        post("10k-character name", "/async-function/" + "n" * 10_000, _ok(400)),
        post("10k-character path", "/async-function/ref/" + "p" * 10_000, _ok(202), reason=False),
        post("empty name", "/async-function/", _ok(400)),
        post("empty name before a path", "/async-function//ref", _ok(400)),
        post("encoded dot-dot as the name", "/async-function/%2e%2e/system/info", _ok(400)),
        post("the namespace suffix alone", "/async-function/.openfaas-fn", _ok(400)),
        post("a namespace that does not exist", "/async-function/ref.dev", _ok(400)),
        post("a namespace that does not exist, before a path", "/async-function/ref.dev/x", _ok(400)),
        post("an empty namespace (a trailing dot)", "/async-function/ref.", _ok(400)),
        post("a name and the namespace twice", "/async-function/ref.openfaas-fn.openfaas-fn", _ok(404)),
        post("a 10k-character namespace", "/async-function/ref." + "n" * 10_000, _ok(400)),
        post("a namespace with CRLF (%0d%0a)", f"/async-function/ref.openfaas-fn%0d%0a{INJECTED}:%201", _ok(400)),
        post("unknown function", "/async-function/nope", _ok(404)),
        Bad("GET", fn, request("GET", "/async-function/ref"), _ok(405)),
        Bad("PUT with a path", sub, request("PUT", "/async-function/ref/x", b"x"), _ok(405)),
        Bad("DELETE", fn, request("DELETE", "/async-function/ref"), _ok(405)),
        Bad("unknown method", fn, request("BREW", "/async-function/ref"), _ok(405)),
        Bad("HEAD", fn, request("HEAD", "/async-function/ref"), _ok(405), False, head=True),
        Bad("Content-Length over max_body_size", fn, request("POST", "/async-function/ref", length=MAX_BODY + 1), _ok(413)),
        Bad("Content-Length of 2^63", fn, request("POST", "/async-function/ref", length=2**63), _ok(400, 413)),
        Bad("negative Content-Length", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), _ok(400), False),
        Bad("chunked body over max_body_size", fn, chunked("POST", "/async-function/ref", MAX_BODY + 1024), _ok(413)),
        Bad("Expect: 100-continue over max_body_size", fn, request("POST", "/async-function/ref", headers={"Expect": "100-continue"}, length=MAX_BODY + 1), _ok(413)),
        callback("ftp://", "ftp://127.0.0.1/x"),
        callback("file://", "file:///etc/passwd"),
        callback("without a host", "http:///x"),
        callback("with credentials", "http://admin:secret@127.0.0.1:9/"),
        callback("hiding the host behind @", "http://127.0.0.1:9@169.254.169.254/"),
        callback("to cloud metadata", "http://169.254.169.254/latest/meta-data/"),
        callback("to cloud metadata as one number", "http://2852039166/"),
        callback("to cloud metadata in hex", "http://0xa9.0xfe.0xa9.0xfe/"),
        callback("to cloud metadata, IPv4-mapped", "http://[::ffff:169.254.169.254]/"),
        callback("to an IPv6 link-local address", "http://[fe80::1]:9/"),
        callback("to 0.0.0.0", "http://0.0.0.0:9/"),
        callback("to multicast", "http://224.0.0.1:9/"),
        callback("to a private address not in async_callback_hosts", "http://10.1.2.3:9/"),
        callback("to a host name not in async_callback_hosts", "http://hooks.example.com/"),
        callback("to a name under localhost's", "http://localhost.example.com/"),
        callback("with port 0", "http://127.0.0.1:0/"),
        callback("with port 99999", "http://127.0.0.1:99999/"),
        callback("of 10k characters", "http://127.0.0.1:9/" + "u" * 10_000),
        callback("with a space", "http://127.0.0.1:9/a b"),
        callback("not a URL", "%%%"),
        callback("empty", ""),
        callback("with CRLF (%0d%0a) in its path (sent as written)", f"http://127.0.0.1:9/%0d%0a{INJECTED}:%201", _ok(202)),
        Bad("X-Callback-Url with a raw CR", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nX-Callback-Url: http://127.0.0.1:9/\rX-Injected: 1\r\nContent-Length: 0\r\n\r\n"), _ok(400), False),
        Bad("X-Callback-Url with a control character", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nX-Callback-Url: http://127.0.0.1:9/\x01\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), _ok(400), False),
        Bad("X-Callback-Url not ASCII", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nX-Callback-Url: http://r\xe9.example/\r\nContent-Length: 0\r\n\r\n"), _ok(400)),
        Bad("X-Callback-Url twice", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nX-Callback-Url: http://127.0.0.1:9/\r\nX-Callback-Url: http://127.0.0.1:10/\r\nContent-Length: 0\r\n\r\n"), _ok(400)),
        post("X-Call-Id of 300 characters", "/async-function/ref", _ok(400), X_Call_Id="c" * 300),
        Bad("X-Call-Id with a control character", fn, raw(b"POST /async-function/ref HTTP/1.1\r\nHost: x\r\nX-Call-Id: a\x7fb\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), _ok(400), False),
        post("a call whose callback goes to a closed port", "/async-function/ref", _ok(202), reason=False, X_Callback_Url="http://127.0.0.1:9/"),
    ]  # fmt: skip


def root() -> list[Bad]:
    """``POST /``: the X-Function header and Alexa bodies; and the other methods on ``/``."""
    return [
        Bad("no X-Function, not Alexa", "/", request("POST", "/", b"hello"), _ok(400)),
        Bad("X-Function with %00", "/", request("POST", "/", b"x", {"X-Function": "re%00f"}), _ok(400)),
        Bad("X-Function with CRLF (%0d%0a)", "/", request("POST", "/", b"x", {"X-Function": f"ref%0d%0a{INJECTED}:%201"}), _ok(400)),
        Bad("X-Function with a raw CR", "/", raw(b"POST / HTTP/1.1\r\nHost: x\r\nX-Function: ref\rX-Injected: 1\r\nContent-Length: 1\r\n\r\nx"), _ok(400), False),
        Bad("5000-character X-Function", "/", request("POST", "/", b"x", {"X-Function": "f" * 5_000}), _ok(400)),
        Bad("empty X-Function", "/", request("POST", "/", b"x", {"X-Function": ""}), _ok(400)),
        Bad("X-Function of an unknown function", "/", request("POST", "/", b"x", {"X-Function": "nope"}), _ok(404)),
        Bad("X-Function in a namespace that does not exist", "/", request("POST", "/", b"x", {"X-Function": "ref.dev"}), _ok(400)),
        Bad("Alexa intent in a namespace that does not exist", "/", request("POST", "/", _alexa("ref.dev")), _ok(400)),
        Bad("Alexa body over max_json_size", "/", request("POST", "/", b'{"sessionId": "' + b"s" * (2 * MAX_JSON) + b'"}', {"Content-Type": JSON}), _ok(413)),
        Bad("Alexa Content-Length of 100 MiB", "/", request("POST", "/", headers={"Content-Type": JSON}, length=100 * 1024 * 1024), _ok(413)),
        Bad("chunked Alexa body over max_json_size", "/", chunked("POST", "/", 2 * MAX_JSON, {"Content-Type": JSON}), _ok(400, 413)),
        Bad("Alexa body nested 100k deep", "/", request("POST", "/", b'{"sessionId": "s", "a": ' + _deep_arrays() + b"}", {"Content-Type": JSON}), _ok(400)),
        Bad("Alexa body that is not JSON", "/", request("POST", "/", b'{"sessionId": ', {"Content-Type": JSON}), _ok(400)),
        Bad("Alexa body with the wrong types", "/", request("POST", "/", b'{"sessionId": 1, "session": [], "request": {"intent": {"name": 5}}}'), _ok(400)),
        Bad("Alexa intent with a NUL", "/", request("POST", "/", _alexa("re\x00f")), _ok(400)),
        Bad("Alexa intent of 10k characters", "/", request("POST", "/", _alexa("i" * 10_000)), _ok(400)),
        Bad("Alexa intent of an unknown function", "/", request("POST", "/", _alexa("nope")), _ok(404)),
        Bad("Alexa body as form data", "/", request("POST", "/", b"sessionId=1&a=2", {"Content-Type": "multipart/form-data; boundary=x"}), _ok(400)),
        Bad("PUT /", "/", request("PUT", "/", b"x"), _ok(405)),
        Bad("DELETE /", "/", request("DELETE", "/"), _ok(405)),
        Bad("GET / with a %00 query", "/", request("GET", "/?%00"), _ok(200), False),
    ]  # fmt: skip


def probes() -> list[Bad]:
    """``/healthz``, ``/metrics``, ``/openapi.json``, the web UI's files and paths nothing serves."""
    return [
        Bad("POST /healthz", "/healthz", request("POST", "/healthz", b"x"), _ok(405)),
        Bad("DELETE /healthz", "/healthz", request("DELETE", "/healthz"), _ok(405)),
        Bad("/healthz with a 10k query", "/healthz", request("GET", "/healthz?" + "h" * 10_000), _ok(200), False),
        Bad("/healthz/%00", "/healthz", request("GET", "/healthz/%00"), _ok(404)),
        Bad("POST /metrics", "/metrics", request("POST", "/metrics", b"x"), _ok(405)),
        Bad("PUT /metrics", "/metrics", request("PUT", "/metrics", b"x"), _ok(405)),
        Bad("HEAD /metrics", "/metrics", request("HEAD", "/metrics"), _ok(200), False, head=True),
        Bad("/metrics with a %00 query", "/metrics", request("GET", "/metrics?a=%00"), _ok(200), False),
        Bad("POST /openapi.json", "/openapi.json", request("POST", "/openapi.json", b"{}", {"Content-Type": JSON}), _ok(405)),
        Bad("/openapi.json/%00", "/openapi.json", request("GET", "/openapi.json/%00"), _ok(404)),
        Bad("/openapi.json with a CRLF query", "/openapi.json", request("GET", f"/openapi.json?%0d%0a{INJECTED}:%201"), _ok(200), False),
        Bad("POST /ui/", "/ui/", request("POST", "/ui/", b"x"), _ok(405)),
        Bad("GET / as a browser with a CRLF in Accept (%0d%0a)", "/", request("GET", "/", headers={"Accept": f"text/html%0d%0a{INJECTED}:%201"}), _ok(302)),
        Bad("HEAD /ui/", "/ui/", request("HEAD", "/ui/"), _ok(200), False, head=True),
        Bad("/ui/ with a 10k If-None-Match", "/ui/", request("GET", "/ui/", headers={"If-None-Match": '"' + "e" * 10_000 + '"'}), _ok(200), False),
        Bad("DELETE /ui/{file}", "/ui/{file}", request("DELETE", "/ui/index.html"), _ok(405)),
        Bad("/ui/ file with an encoded ../", "/ui/{file}", request("GET", "/ui/%2e%2e%2fsystem%2finfo"), _ok(404)),
        Bad("/ui/ file two levels up", "/ui/{file}", request("GET", "/ui/..%2f..%2f..%2fetc%2fpasswd"), _ok(404)),
        Bad("/ui/ file below static/", "/ui/{file}", request("GET", "/ui/static/index.html"), _ok(404)),
        Bad("/ui/ file with %00", "/ui/{file}", request("GET", "/ui/index.html%00"), _ok(404)),
        Bad("/ui/ file with a CRLF (%0d%0a)", "/ui/{file}", request("GET", f"/ui/x%0d%0a{INJECTED}:%201"), _ok(404)),
        Bad("a 10k-character /ui/ file name", "/ui/{file}", request("GET", "/ui/" + "u" * 10_000), _ok(404)),
        Bad("/%00", "", request("GET", "/%00"), _ok(404)),
        Bad("a 10k-character path nothing serves", "", request("GET", "/" + "x" * 10_000), _ok(404)),
        Bad("a CRLF (%0d%0a) in a path nothing serves", "", request("GET", f"/x%0d%0a{INJECTED}:%201"), _ok(404)),
    ]  # fmt: skip


def functions() -> list[Bad]:
    """``/system/functions``, ``/system/function/{name}``, ``/system/scale-function/{name}``,
    ``/system/scaling/{name}``: every kind of wrong JSON, name and content type."""
    route, status, scale, scaling = (
        "/system/functions",
        "/system/function/{functionName}",
        "/system/scale-function/{functionName}",
        "/system/scaling/{functionName}",
    )
    j = {"Content-Type": JSON}

    def deploy(what: str, body: bytes, expect: frozenset[int] = _ok(400), method: str = "POST") -> Bad:
        return Bad(what, route, request(method, route, body, j, auth=True), expect)

    def spec(**fields: object) -> bytes:
        return json.dumps({"service": "bad", "envProcess": "cat", **fields}).encode()

    def scaled(body: bytes, name: str = "ref") -> Bad:
        return Bad(
            f"scale {body[:40]!r}",
            scale,
            request("POST", f"/system/scale-function/{name}", body, j, auth=True),
            _ok(400),
        )

    return [
        deploy("not JSON", b'{"service": '),
        deploy("empty body", b""),
        deploy("null", b"null"),
        deploy("a list", b"[]"),
        deploy("a string", b'"ref"'),
        deploy("not UTF-8", b'{"service": "\xff\xfe"}'),
        deploy("arrays nested 100k deep", _deep_arrays()),
        deploy("objects nested 100k deep", _deep_objects()),
        Bad("Content-Length over max_body_size", route, request("POST", route, headers=j, auth=True, length=MAX_BODY + 1), _ok(413)),
        deploy("a body over max_body_size", spec(pad="p" * (MAX_BODY + 1)), _ok(413)),
        Bad("a chunked body over max_body_size", route, chunked("POST", route, MAX_BODY + 1024, j, auth=True), _ok(400, 413)),
        deploy("3 MiB of an unknown field and a wrong type", spec(pad="p" * (3 * 1024 * 1024), envVars=[])),
        deploy("an integer of 5000 digits", b'{"service": "bad", "labels": {"a": ' + b"9" * 5_000 + b"}}"),
        deploy("NaN as a label", b'{"service": "bad", "labels": {"a": NaN}}'),
        deploy("service as a number", spec(service=1)),
        deploy("envVars as a list", spec(envVars=["a=b"])),
        deploy("labels as a string", spec(labels="a=b")),
        deploy("secrets as a string", spec(secrets="s")),
        deploy("secrets of numbers", spec(secrets=[1])),
        deploy("limits as a number", spec(limits=5)),
        deploy("limits.memory as nonsense", spec(limits={"memory": "lots"})),
        deploy("readOnlyRootFilesystem as a string", spec(readOnlyRootFilesystem="yes")),
        deploy("constraints as an object", spec(constraints={})),
        deploy("handlerArchive not base64", spec(handlerArchive="%%%")),
        deploy("handlerArchive not an archive", spec(handlerArchive=base64.b64encode(b"hello").decode())),
        deploy("an envVars name with '='", spec(envVars={"a=b": "1"})),
        deploy("an envVars name with a NUL", spec(envVars={"a\x00b": "1"})),
        deploy("an envVars value with a NUL", spec(envVars={"a": "1\x002"})),
        deploy("a watchdog setting it cannot parse", spec(envVars={"exec_timeout": "forever"})),
        deploy("envProcess with a NUL", spec(envProcess="cat\x00x")),
        deploy("envProcess a shell cannot split", spec(envProcess="sh -c '")),
        deploy("a service name of 10k characters", spec(service="s" * 10_000)),
        deploy("a service name with CRLF", spec(service=f"ref\r\n{INJECTED}: 1")),
        deploy("a service name with ../", spec(service="../ref")),
        deploy("a service name with a dot", spec(service="a.b")),
        deploy("a service name ending in .openfaas-fn", spec(service="ref.openfaas-fn")),
        deploy("a namespace that does not exist", spec(namespace="dev")),
        deploy("a namespace of 10k characters", spec(namespace="n" * 10_000)),
        deploy("a namespace with CRLF", spec(namespace=f"openfaas-fn\r\n{INJECTED}: 1")),
        deploy("a namespace as a list", spec(namespace=["openfaas-fn"])),
        Bad("a deploy with ?namespace= that does not exist", route, request("POST", "/system/functions?namespace=dev", spec(), j, auth=True), _ok(400)),
        deploy("a secret that does not exist", spec(secrets=["nope"])),
        deploy("unknown fields and no service", b'{"bogus": {"deep": [1, 2, 3]}, "more": null}'),
        deploy("unknown fields beside a valid spec", spec(service="extra", bogus={"a": [1, None]}), _ok(202)),
        deploy("PUT of a function that does not exist", spec(service="nope"), _ok(404), "PUT"),
        deploy("PUT with a wrong type", spec(service="ref", envVars=7), _ok(400), "PUT"),
        deploy("DELETE with functionName a number", b'{"functionName": 1}', _ok(400), "DELETE"),
        deploy("DELETE with no functionName", b"{}", _ok(400), "DELETE"),
        deploy("DELETE of a function that does not exist", b'{"functionName": "nope"}', _ok(404), "DELETE"),
        deploy("DELETE of a list", b"[1, 2]", _ok(400), "DELETE"),
        deploy("DELETE in a namespace that does not exist", b'{"functionName": "ref", "namespace": "dev"}', _ok(400), "DELETE"),
        deploy("DELETE with namespace a number", b'{"functionName": "ref", "namespace": 5}', _ok(400), "DELETE"),
        Bad("DELETE with ?namespace= that does not exist", route, request("DELETE", "/system/functions?namespace=dev", b'{"functionName": "ref"}', j, auth=True), _ok(400)),
        Bad("list with ?namespace= that does not exist", route, request("GET", "/system/functions?namespace=dev", auth=True), _ok(400)),
        Bad("list with ?namespace= twice, the second wrong", route, request("GET", "/system/functions?namespace=openfaas-fn&namespace=x", auth=True), _ok(400)),
        Bad("a write as text/plain", route, request("POST", route, spec(), {"Content-Type": "text/plain"}, auth=True), _ok(415)),
        Bad("a write as a form", route, request("POST", route, b"service=x", {"Content-Type": "application/x-www-form-urlencoded"}, auth=True), _ok(415)),
        Bad("a write with no Content-Type", route, request("POST", route, spec(), auth=True), _ok(415)),
        Bad("a Content-Type with a raw NUL", route, raw(b"POST /system/functions HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() + b"\r\nContent-Type: application/json\x00\r\nContent-Length: 2\r\n\r\n{}"), _ok(400), False),
        Bad("PATCH", route, request("PATCH", route, b"{}", j, auth=True), _ok(405)),
        Bad("an unknown method", route, request("BREW", route, auth=True), _ok(405)),
        Bad("status of %00", status, request("GET", "/system/function/ref%00", auth=True), _ok(400)),
        Bad("status of a 10k-character name", status, request("GET", "/system/function/" + "n" * 10_000, auth=True), _ok(400)),
        Bad("status of a CRLF name", status, request("GET", f"/system/function/ref%0d%0a{INJECTED}:%201", auth=True), _ok(400)),
        Bad("status with namespace %00", status, request("GET", "/system/function/ref?namespace=%00", auth=True), _ok(400)),
        Bad("status with a namespace of CRLF", status, request("GET", f"/system/function/ref?namespace=%0d%0a{INJECTED}:%201", auth=True), _ok(400)),
        Bad("status with a namespace of 10k characters", status, request("GET", "/system/function/ref?namespace=" + "n" * 10_000, auth=True), _ok(400)),
        Bad("status of name.openfaas-fn (not split off here, as in OpenFaaS)", status, request("GET", "/system/function/ref.openfaas-fn", auth=True), _ok(404)),
        Bad("status of a function that does not exist", status, request("GET", "/system/function/nope", auth=True), _ok(404)),
        scaled(b'{"replicas": "2"}'),
        scaled(b'{"replicas": 1.5}'),
        scaled(b'{"replicas": true}'),
        scaled(b'{"replicas": -1}'),
        scaled(b'{"replicas": 101}'),
        scaled(b'{"replicas": ' + b"9" * 4_000 + b"}"),
        scaled(b'{"replicas": ' + b"9" * 5_000 + b"}"),
        scaled(b'{"replicas": NaN}'),
        scaled(b'{"replicas": Infinity}'),
        scaled(b"[2]"),
        scaled(b'{"replicas": 1, "serviceName": "other"}'),
        scaled(b'{"replicas": 1}', name="re%0d%0af"),
        scaled(b'{"replicas": 1, "namespace": "dev"}'),
        scaled(b'{"replicas": 1, "namespace": {}}'),
        Bad("scale of a function that does not exist", scale, request("POST", "/system/scale-function/nope", b'{"replicas": 1}', j, auth=True), _ok(404)),
        Bad("scaling of a CRLF name", scaling, request("GET", f"/system/scaling/%0d%0a{INJECTED}:%201", auth=True), _ok(400)),
        Bad("scaling of a function that does not exist", scaling, request("GET", "/system/scaling/nope", auth=True), _ok(404)),
        Bad("scaling with ?namespace= that does not exist", scaling, request("GET", "/system/scaling/ref?namespace=dev", auth=True), _ok(400)),
        Bad("a /system path nothing serves, with CRLF", "", request("GET", f"/system/x%0d%0a{INJECTED}:%201", auth=True), _ok(404)),
        Bad("a /system path nothing serves, with NUL", "", request("GET", "/system/x%00y", auth=True), _ok(404)),
        Bad("a 10k-character /system path", "", request("GET", "/system/" + "x" * 10_000, auth=True), _ok(404)),
    ]  # fmt: skip


def secrets() -> list[Bad]:
    """``/system/secrets``: every method, wrong JSON, names, sizes."""
    route = "/system/secrets"
    j = {"Content-Type": JSON}

    def secret(what: str, body: bytes, expect: frozenset[int] = _ok(400), method: str = "POST") -> Bad:
        return Bad(what, route, request(method, route, body, j, auth=True), expect)

    return [
        secret("a value over max_json_size", b'{"name": "big", "value": "' + b"v" * (2 * MAX_JSON) + b'"}', _ok(413)),
        Bad("a chunked body over max_json_size", route, chunked("POST", route, 2 * MAX_JSON, j, auth=True), _ok(400, 413)),
        secret("not JSON", b'{"name"'),
        secret("null", b"null"),
        secret("a list", b'[{"name": "a", "value": "b"}]'),
        secret("not UTF-8", b'{"name": "a", "value": "\xff"}'),
        secret("nested 100k deep", _deep_arrays()),
        secret("rawValue not base64", b'{"name": "a", "rawValue": "%%%"}'),
        secret("value a number", b'{"name": "a", "value": 5}'),
        secret("value an object", b'{"name": "a", "value": {"v": 1}}'),
        secret("no value", b'{"name": "a"}'),
        secret("name a number", b'{"name": 5, "value": "v"}'),
        secret("name with a NUL", b'{"name": "a\\u0000b", "value": "v"}'),
        secret("name with CRLF", b'{"name": "a\\r\\nx-injected: 1", "value": "v"}'),
        secret("name of 10k characters", b'{"name": "' + b"n" * 10_000 + b'", "value": "v"}'),
        secret("name with ../", b'{"name": "../password", "value": "v"}'),
        secret("a name that exists already", b'{"name": "used", "value": "again"}', _ok(409)),
        secret("PUT of a secret that does not exist", b'{"name": "nope", "value": "v"}', _ok(404), "PUT"),
        secret("PUT with a wrong type", b'{"name": "used", "value": []}', _ok(400), "PUT"),
        secret("DELETE of a secret that does not exist", b'{"name": "nope"}', _ok(404), "DELETE"),
        secret("DELETE with name a number", b'{"name": 5}', _ok(400), "DELETE"),
        secret("DELETE of a secret in use", b'{"name": "used"}', _ok(409), "DELETE"),
        secret("a namespace that does not exist", b'{"name": "a", "value": "v", "namespace": "dev"}'),
        secret("a namespace a number", b'{"name": "a", "value": "v", "namespace": 1}'),
        secret("PUT in a namespace that does not exist", b'{"name": "used", "value": "v", "namespace": "dev"}', _ok(400), "PUT"),
        secret("DELETE in a namespace that does not exist", b'{"name": "used", "namespace": "dev"}', _ok(400), "DELETE"),
        Bad("GET with ?namespace= that does not exist", route, request("GET", "/system/secrets?namespace=dev", auth=True), _ok(400)),
        Bad("DELETE with ?namespace= that does not exist", route, request("DELETE", "/system/secrets?namespace=dev", b'{"name": "used"}', j, auth=True), _ok(400)),
        Bad("a write as a form", route, request("POST", route, b"name=a&value=b", {"Content-Type": "application/x-www-form-urlencoded"}, auth=True), _ok(415)),
        Bad("a write as multipart", route, request("POST", route, b"--x--", {"Content-Type": "multipart/form-data; boundary=x"}, auth=True), _ok(415)),
        Bad("GET with a %00 query", route, request("GET", "/system/secrets?%00", auth=True), _ok(200), False),
        Bad("PATCH", route, request("PATCH", route, b"{}", j, auth=True), _ok(405)),
    ]  # fmt: skip


def system_other() -> list[Bad]:
    """``/system/logs``, ``/system/info``, ``/system/namespace[s]``: bad query strings, names and methods."""
    logs, namespace, create = "/system/logs", "/system/namespace/{namespace}", "/system/namespace/"
    j = {"Content-Type": JSON}
    return [
        Bad("logs without a name", logs, request("GET", logs, auth=True), _ok(400)),
        Bad("logs of a name with a NUL", logs, request("GET", "/system/logs?name=re%00f", auth=True), _ok(400)),
        Bad("logs of a name with CRLF", logs, request("GET", f"/system/logs?name=ref%0d%0a{INJECTED}:%201", auth=True), _ok(400)),
        Bad("logs of a function that does not exist", logs, request("GET", "/system/logs?name=nope", auth=True), _ok(404)),
        Bad("logs with tail not a number", logs, request("GET", "/system/logs?name=ref&tail=abc", auth=True), _ok(400)),
        Bad("logs with a tail of 5000 digits", logs, request("GET", "/system/logs?name=ref&tail=" + "9" * 5_000, auth=True), _ok(400)),
        Bad("logs with a negative tail", logs, request("GET", "/system/logs?name=ref&tail=-5", auth=True), _ok(200, 400), False),
        Bad("logs with since not a time", logs, request("GET", "/system/logs?name=ref&since=yesterday", auth=True), _ok(400)),
        Bad("logs since the year 9999", logs, request("GET", "/system/logs?name=ref&since=9999-12-31T23:59:59Z", auth=True), _ok(200), False),
        Bad("logs with follow neither true nor false", logs, request("GET", "/system/logs?name=ref&follow=maybe", auth=True), _ok(400)),
        Bad("logs of an instance with a NUL", logs, request("GET", "/system/logs?name=ref&instance=%00", auth=True), _ok(200), False),
        Bad("logs with every parameter twice", logs, request("GET", "/system/logs?name=ref&name=x&tail=1&tail=x", auth=True), _ok(200, 400), False),
        Bad("logs in a namespace that does not exist", logs, request("GET", "/system/logs?name=ref&namespace=dev", auth=True), _ok(400)),
        Bad("logs with malformed percent-escapes", logs, request("GET", "/system/logs?name=%zz&tail=%", auth=True), _ok(400)),
        Bad("POST /system/logs", logs, request("POST", logs, b"{}", {"Content-Type": JSON}, auth=True), _ok(405)),
        Bad("info with a %00 query", "/system/info", request("GET", "/system/info?x=%00", auth=True), _ok(200), False),
        Bad("POST /system/info", "/system/info", request("POST", "/system/info", b"{}", {"Content-Type": JSON}, auth=True), _ok(405)),
        Bad("namespaces with a CRLF query", "/system/namespaces", request("GET", f"/system/namespaces?%0d%0a{INJECTED}:%201", auth=True), _ok(200), False),
        Bad("POST /system/namespaces", "/system/namespaces", request("POST", "/system/namespaces", b"{}", {"Content-Type": JSON}, auth=True), _ok(405)),
        Bad("a namespace that does not exist", namespace, request("GET", "/system/namespace/dev", auth=True), _ok(404)),
        Bad("a namespace with CRLF", namespace, request("GET", f"/system/namespace/openfaas-fn%0d%0a{INJECTED}:%201", auth=True), _ok(404)),
        Bad("a namespace with %00", namespace, request("GET", "/system/namespace/openfaas-fn%00", auth=True), _ok(404)),
        Bad("a namespace of 10k characters", namespace, request("GET", "/system/namespace/" + "n" * 10_000, auth=True), _ok(404)),
        Bad("removing the namespace", namespace, request("DELETE", "/system/namespace/openfaas-fn", b'{"name": "openfaas-fn"}', j, auth=True), _ok(400)),
        Bad("changing the namespace", namespace, request("PUT", "/system/namespace/openfaas-fn", b'{"name": "openfaas-fn", "labels": 5}', j, auth=True), _ok(400)),
        Bad("creating a namespace as a form", create, request("POST", create, b"name=dev", {"Content-Type": "application/x-www-form-urlencoded"}, auth=True), _ok(415)),
        Bad("creating a namespace with a body nested 100k deep", create, request("POST", create, _deep_arrays(), j, auth=True), _ok(400)),
        Bad("PATCH of the namespace", namespace, request("PATCH", "/system/namespace/openfaas-fn", b"{}", j, auth=True), _ok(405)),
    ]  # fmt: skip


def credentials() -> list[Bad]:
    """Basic auth gone wrong. Run on a daemon of their own: after five failures from one address every
    ``/system`` request from it is 429 for a while (faasd.gateway.throttle), the good ones too."""
    route = "/system/functions"

    def auth(what: str, value: str | None) -> Bad:
        headers = {} if value is None else {"Authorization": value}
        return Bad(what, route, request("GET", route, headers=headers), _ok(401, 429))

    def basic(text: bytes) -> str:
        return "Basic " + base64.b64encode(text).decode()

    return [
        auth("no credentials", None),
        auth("a wrong password", basic(b"admin:wrong-password-0123456789")),
        auth("not base64", "Basic !!!"),
        auth("no colon", basic(b"admin")),
        auth("a NUL in the password", basic(b"admin:" + PASSWORD.encode() + b"\x00")),
        auth("the password's prefix", basic(b"admin:" + PASSWORD[:-1].encode())),
        auth("another scheme", "Bearer " + PASSWORD),
        auth("10k characters", basic(b"admin:" + b"p" * 7_500)),
        auth("a user other than admin", basic(b"root:" + PASSWORD.encode())),
        Bad("a CR in the credentials", route, raw(b"GET /system/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Basic a\rb\r\n\r\n"), _ok(400), False),
    ]  # fmt: skip


def http_layer() -> list[Bad]:
    """Requests that are not HTTP/1.1 at all, or break its framing: the server's own parser answers."""
    return [
        Bad("a TLS ClientHello", "", raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100), _ok(400), False),
        Bad("HTTP/0.9", "", raw(b"GET /\r\n\r\n"), _ok(400), False),
        Bad("HTTP/9.9", "", raw(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"), _ok(400, 505), False),
        Bad("HTTP/1.1 without Host", "", raw(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"), _ok(400), False),
        Bad("a header line with no colon", "", raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"), _ok(400), False),
        Bad("a space before the colon", "", raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"), _ok(400), False),
        Bad("an obsolete folded header", "", raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n"), _ok(200, 400), False),
        Bad("a request line of spaces", "", raw(b"     \r\n\r\n"), _ok(400), False),
        Bad("a bare LF request", "", raw(b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n"), _ok(200, 400), False),
        Bad("an absolute-form target", "", raw(b"GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), _ok(200, 400, 404), False),
        Bad("OPTIONS *", "", raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), _ok(400, 404, 405), False),
        Bad("CONNECT", "", raw(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n"), _ok(400, 404, 405), False),
        Bad("a 100k-character /system target", "", request("GET", "/system/" + "x" * 100_000, auth=True), _ok(414, 431), False),
    ]  # fmt: skip


def api() -> list[Bad]:
    """The Flock-of-Birds API (``/api/*``): hostile uploads (none reaches a replica), argument lists, ids,
    methods, who may upload. One wrong password only: the credentials group covers the throttle."""
    gen, remove, call, stats = "/api/gen", "/api/gen/{id}", "/api/call/{id}", "/api/stats"
    meta, source = "/api/meta/{id}", "/api/cs/{id}"
    mine = f"/api/call/{SNIPPET}"
    wrong = "Basic " + base64.b64encode(b"admin:wrong-password-0123456789").decode()

    def bad(what: str, route: str, raw_request: bytes, expect: frozenset[int], reason: bool = True) -> Bad:
        return Bad(what, route, raw_request, expect, reason, json=True)

    return [
        bad("an empty upload", gen, request("POST", gen), _ok(400)),
        bad("an upload of NUL bytes", gen, request("POST", gen, b"\x00" * 1000), _ok(400)),
        bad("an upload that is not UTF-8", gen, request("POST", gen, b"def callme():\n    return '\xff\xfe'\n"), _ok(400)),
        bad("an upload nested 100k deep", gen, request("POST", gen, _deep_arrays()), _ok(400)),
        bad("an upload of 100k unary minuses", gen, request("POST", gen, b"x = " + b"-" * DEEP + b"1\ndef callme(): pass\n"), _ok(400)),
        bad("an upload of 100k attribute lookups", gen, request("POST", gen, b"x = a" + b".b" * DEEP + b"\ndef callme(): pass\n"), _ok(400)),
        bad("an upload of 100k-deep JSON objects (600 kB)", gen, request("POST", gen, _deep_objects()), _ok(413)),
        bad("an upload with a syntax error", gen, request("POST", gen, b"def callme(:\n"), _ok(400)),
        bad("an upload with no callme", gen, request("POST", gen, b"def other(): pass\n"), _ok(400)),
        bad("a Content-Length over max_snippet_size", gen, request("POST", gen, length=MAX_SNIPPET + 1), _ok(413)),
        bad("a chunked upload over max_snippet_size", gen, chunked("POST", gen, MAX_SNIPPET + 1024), _ok(413)),
        bad("a Content-Length over max_body_size", gen, request("POST", gen, length=MAX_BODY + 1), _ok(413)),
        bad("a Content-Length of 2^63", gen, request("POST", gen, length=2**63), _ok(400, 413)),
        bad("an unknown lang", gen, request("POST", "/api/gen?lang=cobol", b"def callme(): pass\n"), _ok(400)),
        bad("a lang with CRLF", gen, request("POST", f"/api/gen?lang=py%0d%0a{INJECTED}:%201", b"def callme(): pass\n"), _ok(400)),
        bad("a lang with %00", gen, request("POST", "/api/gen?lang=py%00thon", b"def callme(): pass\n"), _ok(400)),
        bad("a 10k-character lang", gen, request("POST", "/api/gen?lang=" + "l" * 10_000, b"def callme(): pass\n"), _ok(400)),
        bad("lang twice", gen, request("POST", "/api/gen?lang=python&lang=js", b"def callme(): pass\n"), _ok(400)),
        bad("an upload from another site", gen, request("POST", gen, b"def callme(): pass\n", {"Origin": "http://evil.example"}), _ok(403)),
        bad("an upload through a proxy, without credentials", gen, request("POST", gen, b"def callme(): pass\n", {"X-Forwarded-For": "10.1.2.3"}), _ok(401)),
        bad("an upload with a wrong password", gen, request("POST", gen, b"def callme(): pass\n", {"Authorization": wrong}), _ok(401)),
        bad("GET /api/gen", gen, request("GET", gen), _ok(405)),
        bad("PUT /api/gen", gen, request("PUT", gen, b"x"), _ok(405)),
        bad("an argument without a colon", call, request("GET", f"{mine}?a"), _ok(400)),
        bad("an empty argument", call, request("GET", f"{mine}?a:1,,b:2"), _ok(400)),
        bad("an argument twice", call, request("GET", f"{mine}?a:1,a:2"), _ok(400)),
        bad("a key that is not a name", call, request("GET", f"{mine}?a-b:1"), _ok(400)),
        bad("a key with CRLF", call, request("GET", f"{mine}?a%0d%0a{INJECTED}:1"), _ok(400)),
        bad("a value with %00", call, request("GET", f"{mine}?a:x%00"), _ok(400)),
        bad("a malformed percent-escape", call, request("GET", f"{mine}?a:%zz"), _ok(400)),
        bad("a value that is not UTF-8", call, request("GET", f"{mine}?a:%ff%fe"), _ok(400)),
        bad("a value with CRLF (passed to callme)", call, request("GET", f"{mine}?a:%0d%0a{INJECTED}:%201"), _ok(200), False),
        bad("2000 arguments", call, request("GET", mine + "?" + ",".join(f"k{i}:v" for i in range(2_000))), _ok(200), False),
        bad("a 10k-character value", call, request("GET", f"{mine}?a:" + "v" * 10_000), _ok(200), False),
        bad("an unknown id", call, request("GET", "/api/call/00000000-0000-4000-8000-000000000000"), _ok(404)),
        bad("an empty id", call, request("GET", "/api/call/"), _ok(404)),
        bad("an id with %00", call, request("GET", "/api/call/a%00b"), _ok(404)),
        bad("an id with CRLF", call, request("GET", f"/api/call/a%0d%0a{INJECTED}:%201"), _ok(404)),
        bad("a 10k-character id", call, request("GET", "/api/call/" + "i" * 10_000), _ok(404)),
        bad("dot-dot after /api/call/", call, request("GET", "/api/call/../../system/info"), _ok(404)),
        bad("POST to a snippet", call, request("POST", mine, b"x"), _ok(405)),
        bad("a body over max_body_size to a snippet", call, request("POST", mine, length=MAX_BODY + 1), _ok(405)),
        bad("stats with a %00 query", stats, request("GET", "/api/stats?%00"), _ok(200), False),
        bad("POST /api/stats", stats, request("POST", stats, b"{}"), _ok(405)),
        bad("meta of an unknown id", meta, request("GET", "/api/meta/nope"), _ok(404)),
        bad("meta of an id with CRLF", meta, request("GET", f"/api/meta/a%0d%0a{INJECTED}:%201"), _ok(404)),
        bad("the source of an unknown id", source, request("GET", "/api/cs/" + "i" * 10_000), _ok(404)),
        bad("the source, from another site", source, request("GET", f"/api/cs/{SNIPPET}", headers={"Sec-Fetch-Site": "cross-site"}), _ok(403)),
        bad("DELETE without credentials", remove, request("DELETE", f"/api/gen/{SNIPPET}"), _ok(401)),
        bad("DELETE of an unknown id", remove, request("DELETE", "/api/gen/nope", auth=True), _ok(404)),
        bad("DELETE of an id with CRLF", remove, request("DELETE", f"/api/gen/a%0d%0a{INJECTED}:%201", auth=True), _ok(404)),
        bad("GET /api/gen/{id}", remove, request("GET", f"/api/gen/{SNIPPET}"), _ok(405)),
        bad("an unknown /api route", "", request("GET", "/api/" + "x" * 1000), _ok(404)),
    ]  # fmt: skip


GROUPS = {
    "api": api,
    "invoke": invoke,
    "async": async_calls,
    "root": root,
    "probes": probes,
    "functions": functions,
    "secrets": secrets,
    "system": system_other,
    "credentials": credentials,
    "http": http_layer,
}
"""Each group runs against a daemon of its own (see ``credentials`` for why)."""


def cases(group: str) -> list[Bad]:
    return GROUPS[group]()
