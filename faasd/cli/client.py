"""A small synchronous client of the gateway's HTTP API for the CLI (stdlib ``urllib``: the CLI makes a
few calls per command, so it needs no async client and starts without one).

The gateway URL comes from ``--gateway``, else ``FAASD_URL``, else ``OPENFAAS_URL``, else
http://127.0.0.1:8080. Credentials: ``FAASD_PASSWORD``, else the password file the daemon wrote in
its state dir (``$FAASD_STATE_DIR``, ``$STATE_DIRECTORY``, ``~/.local/state/faasd``, ``/var/lib/faasd``).
Every failure becomes a :class:`ClientError` with one line for the user.

Redirects are never followed: urllib would resend every header, ``Authorization`` included, to
wherever a ``Location`` points (another host, another port, plain http), and the gateway's API never
redirects. A 3xx is an error naming the target, so the user can point ``--gateway`` there on purpose.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from faasd.config import default_state_dir
from faasd.credentials import PASSWORD_FILE, USERNAME

__all__ = ["DEFAULT_GATEWAY", "ClientError", "GatewayClient", "Response", "find_password"]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
SYSTEM_STATE_DIR = "/var/lib/faasd"


class ClientError(Exception):
    """A request failed; ``str()`` is one line for the user, ``status`` the HTTP status or 0."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ClientError(f"the gateway answered {self.status} with a body that is not JSON") from None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def gateway_url(flag: str | None, env: Mapping[str, str]) -> str:
    return (flag or env.get("FAASD_URL") or env.get("OPENFAAS_URL") or DEFAULT_GATEWAY).rstrip("/")


def password_candidates(env: Mapping[str, str]) -> list[str]:
    """Password files to try, in order."""
    directories = []
    if env.get("FAASD_STATE_DIR"):
        directories.append(env["FAASD_STATE_DIR"])
    directories += [default_state_dir(env), SYSTEM_STATE_DIR]
    seen: list[str] = []
    for directory in directories:
        path = os.path.join(os.path.expanduser(directory), PASSWORD_FILE)
        if path not in seen:
            seen.append(path)
    return seen


def find_password(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(password, where it came from) or (None, None)."""
    if env.get("FAASD_PASSWORD"):
        return env["FAASD_PASSWORD"], "$FAASD_PASSWORD"
    for path in password_candidates(env):
        try:
            with open(path, encoding="utf-8") as file:
                password = file.read().strip()
        except OSError:
            continue
        if password:
            return password, path
    return None, None


def _opener() -> Any:
    """urllib's opener, refusing redirects. urllib.request (with http.client and email) is imported here,
    by the commands that call a gateway, not by every ``faasd`` start (``faasd up`` never needs it)."""
    import urllib.request

    class RefuseRedirects(urllib.request.HTTPRedirectHandler):
        """Turns every 3xx into an answer the caller sees (see the module docstring)."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib then raises HTTPError with the 3xx, which _open returns as the answer.

    return urllib.request.build_opener(RefuseRedirects)


class GatewayClient:
    """Calls one gateway; ``timeout_s`` bounds each request (not streams)."""

    def __init__(self, url: str, password: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self.password = password
        self.timeout_s = timeout_s
        self._opener = _opener()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        auth: bool = True,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        timeout_s: float | None = None,
    ) -> Response:
        """Make one request and return the answer if its status is in ``ok``.

        Raises:
            ClientError: connection failure, or a status not in ``ok`` (message = the gateway's text).
        """
        with self._open(method, path, body, json_body, headers, query, auth, timeout_s) as answer:
            response = Response(answer.status, dict(answer.headers), answer.read())
        if response.status not in ok:
            raise ClientError(_describe_status(response, path), response.status)
        return response

    def stream_lines(self, path: str, *, query: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """GET ``path`` and yield its body line by line as it arrives (NDJSON log streams)."""
        with self._open("GET", path, None, None, None, query, True, None, stream=True) as answer:
            if answer.status != 200:
                response = Response(answer.status, dict(answer.headers), answer.read())
                raise ClientError(_describe_status(response, path), answer.status)
            yield from answer

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None,
        json_body: object,
        headers: Mapping[str, str] | None,
        query: Mapping[str, str] | None,
        auth: bool,
        timeout_s: float | None,
        *,
        stream: bool = False,
    ) -> Any:
        import urllib.error
        import urllib.parse
        import urllib.request

        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        all_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if auth and self.password is not None:
            token = base64.b64encode(f"{USERNAME}:{self.password}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            return self._opener.open(request, timeout=None if stream else (timeout_s or self.timeout_s))
        except urllib.error.HTTPError as exc:
            return exc  # An answer with an error status: the caller reads it.
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise ClientError(
                f"cannot reach the faasd gateway at {self.url}: {reason} (is 'faasd up' running?)"
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the gateway at {self.url} did not answer within {timeout_s or self.timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise ClientError(f"cannot reach the faasd gateway at {self.url}: {exc}") from None


def _describe_status(response: Response, path: str) -> str:
    text = response.text.strip().splitlines()[0] if response.text.strip() else ""
    if 300 <= response.status < 400:
        target = response.headers.get("Location") or response.headers.get("location") or "?"
        return (
            f"the gateway answered {response.status} redirecting {path} to {target[:200]}; faasd does not follow "
            "redirects (they would carry the password elsewhere): set --gateway/FAASD_URL to the right address"
        )
    if response.status == 401:
        return (
            "unauthorized: set FAASD_PASSWORD or make the daemon's password file readable "
            "(see 'faasd status' for where it is)"
        )
    return f"{response.status} from {path}: {text}" if text else f"{response.status} from {path}"
