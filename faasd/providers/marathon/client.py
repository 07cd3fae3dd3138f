"""Marathon's v2 REST API over httpx on trio: requests, error bodies, deployments, the event stream.

What it speaks is Marathon's documented API (the RAML under ``docs/docs/rest-api/public/api/`` in
https://github.com/mesosphere/marathon): JSON in and out (``Content-Type``/``Accept:
application/json``), errors as ``{"message": ..., "details": ...}``, every change answered with a
deployment id (body ``deploymentId`` or ``deployments[0].id``, header ``Marathon-Deployment-Id``).

**Errors.** An HTTP error answer is a :class:`MarathonHttpError` keeping Marathon's status, ``message``,
``details`` and the ids of the deployments that lock an app (409) -- as marathon-python keeps them; the
provider decides what each means for faasd. A transport failure is translated here, once:
unreachable (refused, DNS, TLS) -> :class:`~faasd.errors.BackendUnavailable` naming the URL and the
reason; no answer in time -> :class:`~faasd.errors.BackendTimeout`.

**Auth.** HTTP basic (``marathon_user``/``marathon_password``, Marathon's ``--http_credentials``) or
DC/OS's ``Authorization: token=<JWT>`` (literally ``token=``, not ``Bearer``). TLS certificates are
verified unless ``marathon_tls_verify`` is off; ``marathon_ca`` names a CA bundle to trust.

**Events.** :meth:`MarathonClient.events` reads ``GET /v2/events`` (Server-Sent Events). Marathon 1.8+
answers it on a non-leader with a redirect to the leader; httpx drops credentials on a redirect to
another host, so that one redirect is followed here, with the credentials, when it keeps the scheme.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from faasd.errors import BackendTimeout, BackendUnavailable

__all__ = ["API_TIMEOUT_S", "Auth", "Change", "MarathonClient", "MarathonHttpError", "SseEvent"]

API_TIMEOUT_S = 10.0
"""Longest one API request may take (connect, each read, write)."""
EVENT_READ_TIMEOUT_S = 300.0
"""A stream silent this long is dropped and opened again: Marathon sends no keep-alives, and a
connection lost without a FIN would otherwise be waited on for ever."""
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Largest event accepted from the stream (a ``deployment_info`` carries whole app definitions)."""


@dataclass(frozen=True, slots=True)
class Auth:
    """How faasd authenticates to Marathon (none, basic, or a DC/OS token)."""

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"token={self.token}"}
        return {}

    def basic(self) -> tuple[str, str] | None:
        return (self.user, self.password) if self.user and not self.token else None


NO_AUTH = Auth()


class MarathonHttpError(Exception):
    """Marathon answered with an error status."""

    def __init__(self, status: int, message: str, details: object = None, deployments: Sequence[str] = ()) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.details = details
        self.deployments = tuple(deployments)

    @property
    def locked(self) -> bool:
        """A 409 because a running deployment holds the app (``?force=true`` would override it)."""
        return self.status == 409 and (bool(self.deployments) or "locked" in self.message)

    def describe(self) -> str:
        """``message`` and ``details`` on one line: ``Object is not valid: /mem: error.min``."""
        details = self.details
        if isinstance(details, list):
            parts = []
            for item in details:
                if isinstance(item, Mapping):
                    errors = item.get("errors")
                    text = ", ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
                    parts.append(f"{item.get('path', '')}: {text}" if item.get("path") else text)
                else:
                    parts.append(str(item))
            return f"{self.message}: {'; '.join(parts)}" if parts else self.message
        if isinstance(details, str) and details:
            return f"{self.message}: {details}"
        return self.message


@dataclass(frozen=True, slots=True)
class Change:
    """What Marathon answered to a change: the deployment it started and the app version it made."""

    deployment: str
    version: str
    created: bool = False


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event of ``/v2/events``: its type and its JSON (an empty dict when not an object)."""

    type: str
    data: dict[str, Any]


class MarathonClient:
    """One httpx client for one Marathon; every method may raise :class:`MarathonHttpError`,
    :class:`~faasd.errors.BackendUnavailable` or :class:`~faasd.errors.BackendTimeout`."""

    def __init__(
        self,
        url: str,
        *,
        auth: Auth = NO_AUTH,
        verify: bool = True,
        ca_file: str = "",
        timeout_s: float = API_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._auth = auth
        verification: bool | ssl.SSLContext = verify
        if verify and ca_file:
            verification = ssl.create_default_context(cafile=ca_file)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            auth=auth.basic(),
            headers={"Accept": "application/json", **auth.headers()},
            verify=verification,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<MarathonClient {self.url}>"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- requests ---------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: object = None,
    ) -> httpx.Response:
        """Send one request; an error status raises :class:`MarathonHttpError`."""
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = await self._http.request(method, path, params=list(params), content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"Marathon at {self.url} did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Marathon at {self.url} is unreachable: {_reason(exc)}") from exc
        if response.status_code >= 300:
            raise _http_error(response)
        return response

    async def json(self, method: str, path: str, **options: Any) -> Any:
        response = await self.request(method, path, **options)
        try:
            return response.json()
        except ValueError:
            raise MarathonHttpError(502, f"{method} {path} answered {response.status_code} with no JSON") from None

    async def ping(self) -> None:
        await self.request("GET", "/ping")

    async def list_apps(self, group: str, label: str, embed: Sequence[str]) -> list[dict[str, Any]]:
        """``GET /v2/apps?id=<group>/&label=<label>&embed=...``: the apps under ``group`` (the ``id``
        filter matches a substring, so the caller checks each app's id)."""
        params = [("id", group + "/"), ("label", label), *(("embed", item) for item in embed)]
        document = await self.json("GET", "/v2/apps", params=params)
        apps = document.get("apps") if isinstance(document, dict) else None
        return [app for app in apps or [] if isinstance(app, dict)]

    async def get_app(self, app_id: str) -> dict[str, Any] | None:
        """``GET /v2/apps/{id}`` (with its tasks, deployments and ``lastTaskFailure``); None on 404."""
        try:
            document = await self.json("GET", f"/v2/apps{app_id}")
        except MarathonHttpError as exc:
            if exc.status == 404:
                return None
            raise
        app = document.get("app") if isinstance(document, dict) else None
        return app if isinstance(app, dict) else None

    async def create_app(self, app: Mapping[str, Any], *, force: bool = False) -> Change:
        response = await self.request("POST", "/v2/apps", params=_force(force), body=app)
        document = _body(response)
        deployments = document.get("deployments") or [{}]
        deployment = response.headers.get("Marathon-Deployment-Id") or str((deployments[0] or {}).get("id", ""))
        return Change(deployment, str(document.get("version", "")), created=True)

    async def put_app(self, app_id: str, body: Mapping[str, Any], *, partial: bool, force: bool = False) -> Change:
        params = [("partialUpdate", "true" if partial else "false"), *_force(force)]
        response = await self.request("PUT", f"/v2/apps{app_id}", params=params, body=body)
        return _change(response)

    async def delete_app(self, app_id: str) -> Change:
        """``DELETE /v2/apps/{id}`` (which overrides a running deployment by default, as documented)."""
        return _change(await self.request("DELETE", f"/v2/apps{app_id}"))

    async def deployments(self) -> list[dict[str, Any]]:
        document = await self.json("GET", "/v2/deployments")
        return [item for item in document if isinstance(item, dict)] if isinstance(document, list) else []

    async def cancel_deployment(self, deployment: str, *, force: bool = False) -> None:
        """``DELETE /v2/deployments/{id}``: rolled back (a new deployment), or with ``force`` just stopped."""
        await self.request("DELETE", f"/v2/deployments/{deployment}", params=_force(force))

    # -- events -----------------------------------------------------------------------------------

    async def events(self, types: Sequence[str]) -> AsyncIterator[SseEvent]:
        """The event stream until it ends (raises like :meth:`request`; never ends on its own while
        Marathon runs). The first event is ``event_stream_attached``."""
        params: list[tuple[str, str | int | float | bool | None]] = [("event_type", kind) for kind in types]
        url = "/v2/events"
        for _ in range(2):  # The stream, or one redirect to the leader.
            request = self._http.build_request("GET", url, params=params, headers={"Accept": "text/event-stream"})
            request.extensions["timeout"] = httpx.Timeout(API_TIMEOUT_S, read=EVENT_READ_TIMEOUT_S).as_dict()
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise BackendTimeout(f"Marathon at {self.url} did not answer GET /v2/events in time") from exc
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"Marathon at {self.url} is unreachable: {_reason(exc)}") from exc
            try:
                location = response.headers.get("Location", "")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    target = urljoin(str(request.url), location)
                    if urlsplit(target).scheme != urlsplit(self.url).scheme:
                        raise MarathonHttpError(response.status_code, f"event stream redirected to {target}")
                    url = target
                    continue
                if response.status_code >= 300:
                    await response.aread()
                    raise _http_error(response)
                async for item in _sse(response):
                    yield item
                return
            except httpx.TimeoutException as exc:
                raise BackendTimeout(f"Marathon at {self.url}: the event stream stalled") from exc
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"Marathon at {self.url}: the event stream broke: {_reason(exc)}") from exc
            finally:
                await response.aclose()
        raise MarathonHttpError(310, "the event stream was redirected more than once")


async def _sse(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse ``text/event-stream``: ``event:`` and ``data:`` lines, a blank line ends an event."""
    kind = ""
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        if not line:
            if data or kind:
                yield SseEvent(kind or "message", _object("\n".join(data)))
            kind, data, size = "", [], 0
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "event":
            kind = value
        elif field_name == "data":
            size += len(value)
            if size > MAX_EVENT_BYTES:
                raise MarathonHttpError(502, f"an event of the stream is over {MAX_EVENT_BYTES} bytes")
            data.append(value)


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _force(force: bool) -> list[tuple[str, str]]:
    return [("force", "true")] if force else []


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _change(response: httpx.Response) -> Change:
    document = _body(response)
    deployment = response.headers.get("Marathon-Deployment-Id") or str(document.get("deploymentId", ""))
    return Change(deployment, str(document.get("version", "")), created=response.status_code == 201)


def _http_error(response: httpx.Response) -> MarathonHttpError:
    document = _body(response) if response.content else {}
    message = document.get("message")
    if not isinstance(message, str) or not message:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        message = text or response.reason_phrase or "error"
    locks = document.get("deployments")
    locks = locks if isinstance(locks, list) else []
    ids = [str(item["id"]) for item in locks if isinstance(item, dict) and item.get("id")]
    return MarathonHttpError(response.status_code, message, document.get("details"), ids)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a transport error, one line (``[Errno 111] Connection refused``,
    ``certificate verify failed``)."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # trio: one error per address tried.
            exc = exc.exceptions[-1]
        elif exc.__cause__ is not None or exc.__context__ is not None:
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        else:
            break
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verify failed: {exc.verify_message or exc.reason} (give its CA with marathon_ca, "
            "or turn marathon_tls_verify off)"
        )
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
