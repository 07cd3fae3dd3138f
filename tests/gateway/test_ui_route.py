"""The web UI's files as the gateway serves them (faasd/ui/route.py), in process through the daemon's ASGI app,
and what the pages are made of: only their own files, nothing inline (what the Content-Security-Policy
allows), text never parsed as HTML, every form control labelled. The browser tests in tests/ui/ use them."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from faasd.ui.route import CONTENT_TYPES, CSP, load_assets

STATIC = Path(__file__).resolve().parents[2] / "faasd" / "ui" / "static"
SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def assert_secured(headers: Any) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, name
    assert "set-cookie" not in headers  # The UI's credentials are never the browser's to send by itself.


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "img-src", "connect-src", "form-action"):
        assert directives[directive] == "'self'", directive
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe" not in CSP and "data:" not in CSP and "http" not in CSP


async def test_every_file_is_served_as_shipped_with_its_type_and_the_headers(make_gateway: Any) -> None:
    gateway = await make_gateway()
    shipped = sorted(path.name for path in STATIC.iterdir())
    assert sorted(load_assets()) == shipped  # Nothing in static/ is left out, nothing else is added.
    for name in [*shipped, ""]:
        answer = await gateway.client.get(f"/ui/{name}")  # No credentials: the files are public.
        assert answer.status_code == 200, name
        path = STATIC / (name or "index.html")
        assert answer.content == path.read_bytes(), name
        assert answer.headers["content-type"] == CONTENT_TYPES[path.suffix].decode()
        assert answer.headers["cache-control"] == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{20}"', answer.headers["etag"])
        assert_secured(answer.headers)


async def test_revalidation_head_and_the_redirect(make_gateway: Any) -> None:
    client = (await make_gateway()).client
    first = await client.get("/ui/list.js")
    again = await client.get("/ui/list.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert_secured(again.headers)
    other = await client.get("/ui/list.js", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and other.content == first.content
    head = await client.head("/ui/list.js")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    bare = await client.get("/ui")
    assert bare.status_code == 308 and bare.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/ui/nothing.html", 404),
        ("GET", "/ui/%2e%2e/system/info", 404),  # The decoded path is /ui/../system/info: not a file name.
        ("GET", "/ui/..%2fsystem%2finfo", 404),
        ("GET", "/ui/static/index.html", 404),
        ("GET", "/ui/route.py", 404),  # Python sources sit beside static/, never in it.
        ("POST", "/ui/", 405),
        ("PUT", "/ui/index.html", 405),
        ("DELETE", "/ui", 405),
    ],
)
async def test_anything_else_is_a_one_line_error_with_the_headers(
    make_gateway: Any, method: str, path: str, status: int
) -> None:
    client = (await make_gateway()).client
    answer = await client.request(method, path)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.text.count("\n") == 1 and answer.text.endswith("\n")
    assert_secured(answer.headers)
    if status == 405:
        assert answer.headers["allow"] == "GET, HEAD"


async def test_the_root_sends_a_browser_to_the_ui_and_answers_curl_in_text(make_gateway: Any) -> None:
    client = (await make_gateway()).client
    browser = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 302 and browser.headers["location"] == "/ui/"
    for accept in ("*/*", None):
        answer = await client.get("/", headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200, accept
        assert answer.text.startswith("faasd ") and "/ui/" in answer.text


# -- what the pages are made of ------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of an HTML page the policy and the labels depend on."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.styles = 0
        self.links: list[str] = []
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.labels: set[str] = set()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in attributes:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>: inline code or style")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        elif tag == "style":
            self.styles += 1
        elif tag in ("input", "select", "textarea"):
            self.controls.append((tag, attributes))
        elif tag == "label" and attributes.get("for"):
            self.labels.add(str(attributes["for"]))
        for name in ("src", "href"):
            if attributes.get(name):
                self.links.append(str(attributes[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


@pytest.mark.parametrize("name", sorted(path.name for path in STATIC.glob("*.html")))
def test_a_page_loads_only_its_own_files_and_labels_every_control(name: str) -> None:
    page = Page()
    page.feed((STATIC / name).read_text(encoding="utf-8"))
    assert page.problems == []
    assert not page.inline_script and page.styles == 0
    assert [script.get("type") for script in page.scripts] == ["module"]
    shipped = {path.name for path in STATIC.iterdir()}
    for link in page.links:
        assert link == "./" or link in shipped, f"{name} links to {link}: not one of the UI's own files"
    for tag, attributes in page.controls:
        if attributes.get("type") != "hidden":
            assert attributes.get("id") in page.labels, f"{name}: <{tag} id={attributes.get('id')}> has no label"


@pytest.mark.parametrize("name", sorted(path.name for path in STATIC.glob("*.js")))
def test_scripts_import_only_their_siblings_and_never_parse_html(name: str) -> None:
    source = (STATIC / name).read_text(encoding="utf-8")
    for specifier in re.findall(r'^import .* from "([^"]+)";$', source, re.MULTILINE):
        assert specifier.startswith("./") and (STATIC / specifier[2:]).is_file(), f"{name} imports {specifier}"
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, f"{name} uses {sink}: what the pages show is set as text"
