"""``/ui/*`` as raw ASGI: the UI's static files, read from the package once, with strict headers.

=====================  ============  =============================================================
path                   method        answer
=====================  ============  =============================================================
``/ui``                GET, HEAD     308 to ``/ui/``
``/ui/``               GET, HEAD     200 ``index.html`` (the function list)
``/ui/{file}``         GET, HEAD     200 the file; 304 when ``If-None-Match`` has its ETag; 404
anything else          any           405 with ``Allow: GET, HEAD``
=====================  ============  =============================================================

Only the files shipped in ``faasd/ui/static/`` (one level, known suffixes) exist: a name is a
dictionary lookup, so ``..``, encoded slashes or any other path cannot reach anything else. Every
answer -- errors included, which are one line of ``text/plain`` as everywhere in the gateway -- carries
:data:`SECURITY_HEADERS`. ``Cache-Control: no-cache`` with an ETag: a browser revalidates each load
(a 304 costs nothing) and sees a new version at once after an upgrade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import trio

from faasd.gateway.proxy import Receive, Scope, Send
from faasd.gateway.reasons import one_line

__all__ = ["CONTENT_TYPES", "CSP", "SECURITY_HEADERS", "UiRoute", "load_assets"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No inline script or style, no eval, nothing from another origin, no framing (clickjacking)."""
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # For browsers older than CSP's frame-ancestors.
    (b"referrer-policy", b"no-referrer"),
    # A page a function serves (same origin) that opens the UI in a window gets no handle on it.
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
)
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
PREFIX = "/ui/"
INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file, ready to send."""

    body: bytes
    content_type: bytes
    etag: bytes


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every file of ``faasd/ui/static/`` (or ``root``) with a known suffix, by name.

    Read through :mod:`importlib.resources`, so it works from ``dist/faasd.pyz`` (a zip) as from a
    checkout; files of other kinds (an editor's backup) are not served.
    """
    root = root if root is not None else resources.files("faasd.ui").joinpath("static")
    assets = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        assets[entry.name] = Asset(body, content_type, etag)
    if INDEX not in assets:
        raise RuntimeError(f"the UI's {INDEX} is missing from faasd/ui/static (a broken build?)")
    return assets


class UiRoute:
    """Serves ``/ui`` and ``/ui/*`` (the daemon hands it every request whose path is one of them)."""

    def __init__(self, assets: dict[str, Asset] | None = None) -> None:
        self.assets = assets
        """The files, read on the first request (in a worker thread): reading them through
        importlib.resources parses the zipapp's whole directory again, which the daemon's start need
        not wait for."""
        self._loading: trio.Lock | None = None

    async def _assets(self) -> dict[str, Asset]:
        assets = self.assets
        if assets is None:
            if self._loading is None:
                self._loading = trio.Lock()
            async with self._loading:
                assets = self.assets
                if assets is None:
                    assets = self.assets = await trio.to_thread.run_sync(load_assets)
        return assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if method not in ("GET", "HEAD"):
            await _text(send, 405, f"Method {method} not allowed on {path}", [(b"allow", b"GET, HEAD")])
            return
        if path == "/ui":
            await _text(send, 308, "The UI is at /ui/", [(b"location", b"/ui/")])
            return
        name = path[len(PREFIX) :] or INDEX
        asset = (self.assets or await self._assets()).get(name)
        if asset is None:
            await _text(send, 404, f"Not found: {path}")
            return
        headers = [(b"content-type", asset.content_type), (b"etag", asset.etag), *SECURITY_HEADERS]
        if _matches(scope, asset.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(asset.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": asset.body if method == "GET" else b""})


def _matches(scope: Scope, etag: bytes) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (or ``*``)."""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            tags = {tag.strip().removeprefix(b"W/") for tag in value.split(b",")}
            return etag in tags or b"*" in tags
    return False


async def _text(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """One line of text/plain, as every error the gateway writes itself, with the UI's headers."""
    body = one_line(message).encode() + b"\n"
    start = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *(headers or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
