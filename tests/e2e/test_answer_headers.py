"""What the gateway keeps of a function's answer headers (faasd/gateway/proxy.py ``DROP_ANSWER``): a real
daemon, a real python-mode replica that answers with whatever headers it likes.

A function's answer comes from the same origin as the web UI (``/ui/``). Two headers act on the whole
origin, not on the function's own answer, and are dropped: ``Service-Worker-Allowed`` (would let a
service worker served under ``/function/NAME/`` control ``/ui/``) and ``Clear-Site-Data`` (would wipe
the UI's storage, i.e. log the admin out, or unregister its workers). ``Set-Cookie`` is kept, whatever
its ``Path``: functions use cookies, and faasd reads none (docs/ui.md "Why it is safe").
"""

from __future__ import annotations

import base64
import io
import tarfile

import httpx

from tests.daemon_fixtures import StartDaemon

HANDLER = """\
def handle(event, context):
    return {
        "statusCode": 200,
        "body": "ok",
        "headers": {
            "Service-Worker-Allowed": "/",
            "SERVICE-WORKER-ALLOWED": "/ui/",
            "Clear-Site-Data": '"*"',
            "Set-Cookie": "session=1; Path=/ui",
            "X-Kept": "yes",
        },
    }
"""


def archive(files: dict[str, str]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(raw.getvalue()).decode()


def test_origin_wide_headers_of_a_function_answer_are_dropped(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("sw", "", envVars={"mode": "python", "workers": "1"}, handlerArchive=archive({"handler.py": HANDLER}))
    for method, path in (("GET", "/function/sw"), ("POST", "/function/sw/sub/sw.js"), ("GET", "/function/sw/")):
        answer = httpx.request(method, f"{daemon.url}{path}", timeout=10)
        assert (answer.status_code, answer.text) == (200, "ok"), answer.text
        names = {name.lower() for name in answer.headers}
        assert "service-worker-allowed" not in names and "clear-site-data" not in names, answer.headers
        assert answer.headers["x-kept"] == "yes" and answer.headers["set-cookie"] == "session=1; Path=/ui"
