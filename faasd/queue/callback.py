"""``X-Callback-Url``: which URLs are accepted, which addresses are never called, and the POST itself.

Anyone who may call a function may ask for a callback (``/async-function/*`` is public, as in OpenFaaS),
so the daemon must not become a way to reach what only it can reach. The rule, applied to the URL when the
call is accepted (a 400 naming what is wrong), and again, with every address the host resolves to, when the
callback is sent (then the callback is given up at once, not retried):

* ``http`` or ``https`` only, a host, no ``user:password@`` (a classic way to hide the real host), a
  port from 1 to 65535, at most :data:`MAX_URL_CHARS` characters of visible ASCII (no spaces, no control
  characters, so no CR/LF that could split the request we write); a ``#fragment`` is dropped;
* the host is this host's loopback or one listed in ``async_callback_hosts`` (:mod:`faasd.queue.hosts`);
* never an address no one should call, whatever that list says: unspecified (``0.0.0.0``, ``::``),
  **link-local** (``169.254.0.0/16``, ``fe80::/10``: where cloud metadata services answer, e.g.
  ``169.254.169.254``), multicast or broadcast -- also written as a decimal or hex number, or
  IPv4-mapped IPv6;
* never this gateway itself, except ``/function/...`` (chaining functions, as OpenFaaS documents): an
  address of this host (loopback, or any address it could bind) with the gateway's port, and any other
  path -- ``/system/*`` or ``/async-function/*`` (a loop) -- is refused.

The check runs on the addresses actually connected to (the host is resolved once per attempt and only
those addresses are used), so a DNS name that changes between the check and the connection cannot point
the callback elsewhere.

Delivery (:func:`deliver`): one ``POST`` per attempt on a new connection (``Connection: close``), TLS
for https (the system's CA store, the host name checked), the whole attempt bounded by a timeout. A
``2xx`` answer is delivered; ``408``, ``429``, ``5xx``, no answer or a connection error are worth
retrying; any other answer (a ``3xx`` -- redirects are not followed -- or a ``4xx``) is final: the
receiver got the call and refused it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

from faasd.errors import InvalidRequest
from faasd.queue.hosts import LOOPBACK_ONLY, CallbackHosts, IpAddress, is_localhost, unmapped
from faasd.tcpconnect import open_tcp

__all__ = [
    "MAX_URL_CHARS",
    "AddressGuard",
    "CallbackRule",
    "CallbackUrl",
    "Delivery",
    "deliver",
    "forbidden_address",
    "known_addresses",
    "parse_callback_url",
]

MAX_URL_CHARS = 2048
MAX_ANSWER_HEAD_BYTES = 64 * 1024
"""Of the receiver's answer only the head is read (its status); a longer head is a failed attempt."""
SEND_CHUNK = 64 * 1024
_VISIBLE = re.compile(r"[\x21-\x7e]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |$)")


@dataclass(frozen=True, slots=True)
class CallbackUrl:
    """A checked ``X-Callback-Url``."""

    text: str
    scheme: str
    host: str
    """Without IPv6 brackets."""
    port: int
    target: bytes
    """``/path?query`` as sent on the request line."""
    literal: IpAddress | None
    """The host when it is written as an address."""

    @property
    def host_header(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return (host if self.port == default else f"{host}:{self.port}").encode("ascii")


def parse_callback_url(text: str) -> CallbackUrl:
    """Check ``text`` against the URL half of the module's rule (the addresses are checked apart).

    Raises:
        InvalidRequest: what is wrong with it, in one line.
    """
    if len(text) > MAX_URL_CHARS:
        raise InvalidRequest(f"X-Callback-Url is longer than {MAX_URL_CHARS} characters")
    if not _VISIBLE.fullmatch(text):
        raise InvalidRequest("X-Callback-Url must be visible ASCII: no spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise InvalidRequest(f"X-Callback-Url is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest("X-Callback-Url must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise InvalidRequest("X-Callback-Url must not carry credentials (user@host)")
    if not host:
        raise InvalidRequest("X-Callback-Url has no host")
    if port == 0:
        raise InvalidRequest("X-Callback-Url has port 0")
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    return CallbackUrl(
        text=text,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        target=target.encode("ascii"),
        literal=literal_address(host),
    )


def literal_address(host: str) -> IpAddress | None:
    """``host`` as an address when it is one, in any form the resolver would read it as one
    (``169.254.169.254``, ``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, ``::ffff:169.254.169.254``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def known_addresses(url: CallbackUrl) -> list[IpAddress]:
    """The addresses ``url``'s host is known to have without asking a resolver: its literal, or the
    loopback addresses for ``localhost`` (RFC 6761). Checked when the call is accepted, so the obvious
    cases are a 400 at once; every address is checked again when the callback is sent."""
    if url.literal is not None:
        return [url.literal]
    if is_localhost(url.host):
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    return []


AddressGuard = Callable[[IpAddress, CallbackUrl], "str | None"]
"""Why a callback may not be sent to this address (one line), or None."""


def forbidden_address(
    address: IpAddress, url: CallbackUrl, *, gateway_port: int | None, is_local: Callable[[IpAddress], bool]
) -> str | None:
    """The address half of the module's rule: why ``url`` may not be called at ``address``, or None."""
    address = unmapped(address)
    if address.is_unspecified:
        return f"X-Callback-Url points at the unspecified address {address}"
    if address.is_link_local:
        return f"X-Callback-Url points at the link-local address {address} (cloud metadata services live there)"
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return f"X-Callback-Url points at the multicast or broadcast address {address}"
    gateway = gateway_port is not None and url.port == gateway_port and is_local(address)
    if gateway and not url.target.startswith(b"/function/"):
        return "X-Callback-Url points at this gateway: only its /function/... routes may be called back"
    return None


@dataclass(slots=True)
class CallbackRule:
    """The module's rule with this daemon's settings: ``async_callback_hosts`` and the gateway's port."""

    hosts: CallbackHosts = LOOPBACK_ONLY
    gateway_port: int | None = None
    """Set once the gateway is bound (None: not checked)."""
    is_local: Callable[[IpAddress], bool] = field(default=lambda address: is_local_address(address))

    def check(self, text: str) -> CallbackUrl:
        """``X-Callback-Url`` against all of the rule that needs no resolver (the addresses a host name
        resolves to are checked by :meth:`guard` when the callback is sent).

        Raises:
            InvalidRequest: why it may not be used, in one line.
        """
        url = parse_callback_url(text)
        for address in known_addresses(url):
            reason = self.guard(address, url)
            if reason:
                raise InvalidRequest(reason)
        reason = self.hosts.refusal(url.host, url.literal)
        if reason:
            raise InvalidRequest(reason)
        return url

    def guard(self, address: IpAddress, url: CallbackUrl) -> str | None:
        """Why a callback may not go to ``address`` (:func:`forbidden_address`; and loopback only for a
        host allowed only as ``localhost``), or None."""
        reason = forbidden_address(address, url, gateway_port=self.gateway_port, is_local=self.is_local)
        if reason is None and self.hosts.loopback_only(url.host, url.literal) and not unmapped(address).is_loopback:
            reason = f"X-Callback-Url host {url.host} resolves to {address}, not to a loopback address"
        return reason


def is_local_address(address: IpAddress) -> bool:
    """Whether ``address`` belongs to this host: loopback, or one a socket can be bound to."""
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one attempt went."""

    ok: bool
    """The receiver answered 2xx."""
    status: int
    """The receiver's status, 0 when there was no answer."""
    reason: str
    """Why not ok, in one line ("" when ok)."""
    final: bool
    """No point in trying again (delivered, refused by the receiver, or a forbidden address)."""


Body = bytes | Callable[[], AsyncIterator[bytes]]
"""The callback's body: in hand, or a function that streams it (once per attempt)."""


async def deliver(
    url: CallbackUrl,
    headers: list[tuple[bytes, bytes]],
    body: Body,
    length: int,
    *,
    timeout_s: float,
    guard: AddressGuard,
) -> Delivery:
    """POST ``body`` (``length`` bytes) with ``headers`` to ``url``: one attempt, see the module docstring.

    Error handling: every failure is a :class:`Delivery` saying why; nothing is raised but cancellation.
    """
    with trio.move_on_after(timeout_s):
        try:
            return await _attempt(url, headers, body, length, guard)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            return Delivery(False, 0, f"callback to {_where(url)} failed: {_describe(exc)}", final=False)
    return Delivery(False, 0, f"callback to {_where(url)}: no answer within {timeout_s:g}s", final=False)


async def _attempt(
    url: CallbackUrl, headers: list[tuple[bytes, bytes]], body: Body, length: int, guard: AddressGuard
) -> Delivery:
    addresses = await _resolve(url)
    for address in addresses:
        reason = guard(address, url)
        if reason:
            return Delivery(False, 0, f"{reason} ({url.host} is {address})", final=True)
    stream: trio.abc.Stream = await _connect(addresses, url.port)
    try:
        if url.scheme == "https":
            tls = trio.SSLStream(stream, _tls_context(), server_hostname=url.host, https_compatible=True)
            await tls.do_handshake()
            stream = tls
        head = [b"POST ", url.target, b" HTTP/1.1\r\nHost: ", url.host_header]
        head.append(b"\r\nContent-Length: %d\r\nConnection: close" % length)
        for name, value in headers:
            head += (b"\r\n", name, b": ", value)
        head.append(b"\r\n\r\n")
        if isinstance(body, bytes):
            await stream.send_all(b"".join(head) + body)
        else:
            await stream.send_all(b"".join(head))
            async for piece in body():
                for start in range(0, len(piece), SEND_CHUNK):
                    await stream.send_all(piece[start : start + SEND_CHUNK])
        status = await _read_status(stream)
    finally:
        await trio.aclose_forcefully(stream)
    if 200 <= status < 300:
        return Delivery(True, status, "", final=True)
    retry = status in (408, 429) or status >= 500
    return Delivery(False, status, f"callback to {_where(url)} answered {status}", final=not retry)


async def _resolve(url: CallbackUrl) -> list[IpAddress]:
    if url.literal is not None:
        return [url.literal]
    infos = await trio.socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    addresses: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{url.host} resolves to no address")
    return addresses


async def _connect(addresses: list[IpAddress], port: int) -> trio.SocketStream:
    error: OSError | None = None
    for address in addresses:
        try:
            return await open_tcp(str(address), port)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


async def _read_status(stream: trio.abc.Stream) -> int:
    buffer = b""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            match = _STATUS_LINE.match(buffer.split(b"\r\n", 1)[0])
            if match is None:
                raise OSError("the receiver's answer is not HTTP/1.x")
            status = int(match.group(1))
            if status >= 200:
                return status
            buffer = buffer[end + 4 :]  # An interim answer (100 Continue): the real one follows.
            continue
        if len(buffer) > MAX_ANSWER_HEAD_BYTES:
            raise OSError("the answer's head is too large")
        data = await stream.receive_some(SEND_CHUNK)
        if not data:
            raise OSError("the receiver closed the connection without an answer")
        buffer += data


_TLS: list[ssl.SSLContext] = []


def _tls_context() -> ssl.SSLContext:
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return _TLS[0]


def _where(url: CallbackUrl) -> str:
    return f"{url.scheme}://{url.host_header.decode()}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
