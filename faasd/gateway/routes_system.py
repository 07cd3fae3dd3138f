"""The management API (``/system/*``) on Quart, with OpenFaaS's paths, JSON shapes and status codes.

Everything that is not the invoke hot path lands here. Each route validates its input, calls the
:class:`~faasd.service.FunctionService` and maps the result; errors are :class:`~faasd.errors.FaasdError`
subclasses answered by one handler as a single ``text/plain`` line with the class's status.

=================================== ======== ==========================================================
route                               method   answer
=================================== ======== ==========================================================
/system/functions                   GET      200 [FunctionStatus]
/system/functions                   POST     202 (deploy; replaces an existing function); 400
/system/functions                   PUT      202 (update); 404 when missing (faas-cli then POSTs); 400
/system/functions                   DELETE   202 ``{"functionName"}``; 400 empty name; 404
/system/function/{name}             GET      200 FunctionStatus; 404
/system/scale-function/{name}       POST     202 ``{"serviceName", "replicas"}``; 400; 404
/system/info                        GET      200 GatewayInfo
/system/logs                        GET      200 NDJSON (``name``, ``tail``, ``follow``, ``since``, ``instance``)
/system/namespaces                  GET      200 ``["openfaas-fn"]`` (faasd's one namespace)
/system/namespace/{namespace}       GET      200 ``{"name": "openfaas-fn"}``; 404 any other
/system/namespace/{namespace}       POST...  400: namespaces cannot be created, changed or removed
/system/secrets                     GET      200 ``[{"name", "namespace"}]``
/system/secrets                     POST     201 ``{"name", "value"|"rawValue"}``; 409 exists already; 400
/system/secrets                     PUT      200; 404 when missing; 400
/system/secrets                     DELETE   200 ``{"name"}``; 404; 409 while a function uses it (names them)
/system/scaling/{name}              GET      200 the autoscaler's load, decision and reason (faasd's own)
/openapi.json                       GET      200 the OpenAPI 3 document of every route (public)
/                                   GET      200 one line of text; 302 to ``/ui/`` for a browser (Accept: text/html)
=================================== ======== ==========================================================

A ``namespace`` -- ``?namespace=`` on the routes about functions and secrets, ``"namespace"`` in the
bodies whose OpenFaaS types carry it -- may be empty or ``openfaas-fn``; any other is a 400 naming it
(:mod:`faasd.namespace`). Answers name ``openfaas-fn`` where OpenFaaS's carry a namespace.

Every ``/system/*`` request needs basic auth (401; failed attempts are slowed per client address: 429
with ``Retry-After``, see :mod:`faasd.gateway.throttle`), and every write (POST/PUT/DELETE) a
``Content-Type: application/json`` (415 otherwise: a cross-site browser form cannot send it). Every
answer here carries ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import platform
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from faasd import __version__
from faasd.errors import FaasdError, FunctionNotFound, InvalidRequest, NotSupported
from faasd.gateway.auth import BasicAuth
from faasd.gateway.jsonbody import parse_json, too_large
from faasd.gateway.listing import FunctionListing
from faasd.gateway.openapi import openapi_document
from faasd.gateway.reasons import one_line
from faasd.gateway.throttle import AuthThrottle, retry_after_header
from faasd.namespace import DEFAULT_NAMESPACE, NAMESPACES, check_namespace
from faasd.providers.types import FunctionSpec, LogRequest, validate_name
from faasd.scaler.loop import Autoscaler
from faasd.service import FunctionService
from faasd.units import parse_bool

__all__ = ["create_management_app"]

JSON = "application/json"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_management_app(
    *,
    service: FunctionService,
    auth: BasicAuth,
    provider_name: str,
    orchestration: str,
    max_body_bytes: int,
    health: Callable[[], tuple[bool, str]],
    max_json_bytes: int = 1024 * 1024,
    started_at: float | None = None,
    password_file: str | None = None,
    autoscaler: Autoscaler | None = None,
    throttle: AuthThrottle | None = None,
    sandbox: Callable[[], dict[str, object]] | None = None,
    async_queue: Callable[[], dict[str, tuple[int, int, float]]] | None = None,
) -> QuartTrio:
    """Build the Quart app serving ``/system/*``, ``/healthz`` fallbacks and friendly errors.

    JSON bodies are read up to ``max_json_bytes`` (413 above), deploys and updates up to
    ``max_body_bytes`` (they carry the function's code); see :mod:`faasd.gateway.jsonbody`.
    """
    deploy_body = partial(_json_body, max_body_bytes, "max_body_size")
    json_body = partial(_json_body, max_json_bytes, "max_json_size")
    app = QuartTrio("faasd")
    app.config.update(
        RESPONSE_TIMEOUT=None,  # /system/logs?follow=true streams for as long as the client wants.
        BODY_TIMEOUT=120,
        MAX_CONTENT_LENGTH=max_body_bytes,
    )

    throttle = throttle or AuthThrottle()
    listing = FunctionListing()

    @app.before_request
    async def guard_system_routes() -> Response | None:
        """Auth (slowed per address on failures), then JSON-only writes; see :mod:`faasd.gateway.throttle`."""
        if not request.path.startswith("/system/"):
            return None
        address = request.remote_addr
        wait = throttle.retry_after(address)
        if wait > 0:
            response = _text(429, f"too many failed logins from {address}; retry in {retry_after_header(wait)}s")
            response.headers["Retry-After"] = retry_after_header(wait)
            return response
        authorization = request.headers.get("Authorization")
        if not auth.check(authorization):
            if authorization:
                throttle.failed(address)
            response = _text(401, "invalid credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="Restricted"'
            return response
        throttle.succeeded(address)
        if request.method not in _SAFE_METHODS and request.routing_exception is None and request.mimetype != JSON:
            # A browser form can POST text/plain, form or multipart bodies cross-site with cached
            # credentials, but not application/json: requiring it makes every write CSRF-proof.
            got = request.headers.get("Content-Type", "")
            return _text(
                415,
                f"Content-Type must be application/json for {request.method} {request.path}"
                + (f" (got {got[:80]!r})" if got else " (none sent)"),
            )
        return None

    @app.after_request
    async def no_sniffing(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(FaasdError)
    async def faasd_error(error: FaasdError) -> Response:
        return _text(error.http_status, error.message)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        messages = {
            404: f"Not found: {request.path}",
            405: f"Method {request.method} not allowed on {request.path}",
        }
        response = _text(status, messages.get(status, error.description or error.name))
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    # -- functions ------------------------------------------------------------------------------
    @app.get("/system/functions")
    async def list_functions() -> Response:
        _query_namespace()
        return Response(listing.encode(await service.list()), status=200, content_type=JSON)

    @app.post("/system/functions")
    async def deploy() -> Response:
        _query_namespace()
        spec = FunctionSpec.from_json(await deploy_body())
        await service.deploy(spec)
        return Response("", status=202)

    @app.put("/system/functions")
    async def update() -> Response:
        _query_namespace()
        spec = FunctionSpec.from_json(await deploy_body())
        await service.update(spec)
        return Response("", status=202)

    @app.delete("/system/functions")
    async def delete() -> Response:
        _query_namespace()  # Where OpenFaaS clients before DeleteFunctionRequest.namespace put it.
        body = await json_body()
        name = body.get("functionName") if isinstance(body, dict) else None
        if not name:
            raise InvalidRequest("functionName is required")
        validate_name(name, "functionName")
        check_namespace(body.get("namespace"))
        if not service.exists(name):
            raise FunctionNotFound(f"No such service found: {name}.")
        await service.remove(name)
        return Response("", status=202)

    @app.get("/system/function/<name>")
    async def function_status(name: str) -> Response:
        _query_namespace()
        return _json((await service.status(name)).to_json())

    @app.post("/system/scale-function/<name>")
    async def scale(name: str) -> Response:
        _query_namespace()
        body = await json_body()
        if not isinstance(body, dict):
            raise InvalidRequest('the body must be a JSON object like {"serviceName": "f", "replicas": 2}')
        check_namespace(body.get("namespace"))
        replicas = body.get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise InvalidRequest("replicas is required and must be a whole number")
        service_name = body.get("serviceName")
        if service_name not in (None, "", name):
            raise InvalidRequest(f"serviceName {service_name!r} does not match the path's {name!r}")
        await service.scale(name, replicas)
        if autoscaler is not None:
            autoscaler.manual_scale(name, replicas)
        return Response("", status=202)

    @app.get("/system/scaling/<name>")
    async def scaling(name: str) -> Response:
        """faasd's own: the autoscaler's view of one function -- load, decision and why."""
        _query_namespace()
        status = await service.status(name)
        if autoscaler is None:
            raise NotSupported("this daemon runs no autoscaler")
        explanation = autoscaler.explain(name).to_json(replicas=status.replicas)
        return _json(
            {"name": name, "replicas": status.replicas, "availableReplicas": status.available_replicas, **explanation}
        )

    # -- info, namespaces, logs -----------------------------------------------------------------
    started = time.time() if started_at is None else started_at

    @app.get("/system/info")
    async def info() -> Response:
        healthy, reason = health()
        return _json(
            {
                "faasd": {
                    "uptime_seconds": round(time.time() - started, 3),
                    "healthy": healthy,
                    "health": reason,
                    "password_file": password_file or "$FAASD_PASSWORD",
                    "functions": len(service.names()),
                    **({"sandbox": sandbox()} if sandbox is not None else {}),
                    **({"async": _async_summary(async_queue())} if async_queue is not None else {}),
                },
                "provider": {
                    "provider": f"faasd-{provider_name}",
                    "orchestration": orchestration,
                    "version": {"sha": "", "release": __version__},
                },
                "version": {"commit_message": "", "sha": "", "release": __version__},
                "arch": platform.machine(),
            }
        )

    @app.get("/system/namespaces")
    async def namespaces() -> Response:
        return _json(list(NAMESPACES))

    @app.get("/system/namespace/<namespace>")
    async def namespace(namespace: str) -> Response:
        """faas-cli's ``namespace get``: the one namespace, as OpenFaaS's FunctionNamespace."""
        if namespace != DEFAULT_NAMESPACE:
            raise FunctionNotFound(f"namespace {namespace} not found: faasd has one namespace, {DEFAULT_NAMESPACE}")
        return _json({"name": DEFAULT_NAMESPACE})

    @app.post("/system/namespace/")
    @app.route("/system/namespace/<namespace>", methods=["POST", "PUT", "DELETE"])
    async def mutate_namespace(namespace: str = "") -> Response:
        """faas-cli's ``namespace create|update|remove``: a 400, like any request for another namespace."""
        raise InvalidRequest(
            f"faasd has one namespace, {DEFAULT_NAMESPACE}: namespaces cannot be created, changed or removed"
        )

    @app.get("/system/logs")
    async def logs() -> Response:
        _query_namespace()
        log_request = _log_request(request.args)
        messages = service.logs(log_request)

        async def ndjson() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(messages) as stream:  # A follower is released on close.
                async for message in stream:
                    yield json.dumps(message.to_json()).encode() + b"\n"

        return Response(ndjson(), status=200, content_type="application/x-ndjson")

    # -- secrets --------------------------------------------------------------------------------
    @app.get("/system/secrets")
    async def list_secrets() -> Response:
        _query_namespace()
        return _json([{"name": name, "namespace": DEFAULT_NAMESPACE} for name in await service.list_secrets()])

    @app.post("/system/secrets")
    async def create_secret() -> Response:
        _query_namespace()
        await service.create_secret(*_secret_body(await json_body()))
        return Response("", status=201)

    @app.put("/system/secrets")
    async def update_secret() -> Response:
        _query_namespace()
        await service.update_secret(*_secret_body(await json_body()))
        return Response("", status=200)

    @app.delete("/system/secrets")
    async def delete_secret() -> Response:
        _query_namespace()
        body = await json_body()
        name = validate_name(body.get("name") if isinstance(body, dict) else None, "name")
        check_namespace(body.get("namespace"))
        await service.delete_secret(name)
        return Response("", status=200)

    # -- health (the ASGI front answers /healthz itself; this serves HEAD and odd methods) -------
    @app.route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> Response:
        ok, reason = health()
        return _text(200 if ok else 503, "OK" if ok else f"degraded: {reason}")

    openapi = json.dumps(openapi_document()).encode()

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        """Public, like /healthz: the same for every daemon of this version (see faasd.gateway.openapi)."""
        return Response(openapi, status=200, content_type=JSON)

    @app.get("/")
    async def index() -> Response:
        """One line for curl; a browser (it asks for ``text/html``) is sent to the web UI."""
        if "text/html" in request.headers.get("Accept", ""):
            response = _text(302, "The web UI is at /ui/")
            response.headers["Location"] = "/ui/"
            return response
        return _text(200, f"faasd {__version__}: invoke functions at /function/<name>; API under /system/; UI at /ui/")

    return app


def _async_summary(lines: dict[str, tuple[int, int, float]]) -> dict[str, Any]:
    """The async queue in ``/system/info``: totals, and per function (queued, running, oldest age)."""
    functions = {
        name: {"queued": queued, "running": running, "oldestSeconds": round(oldest, 3)}
        for name, (queued, running, oldest) in lines.items()
    }
    return {
        "queued": sum(line["queued"] for line in functions.values()),
        "running": sum(line["running"] for line in functions.values()),
        "oldestSeconds": max((line["oldestSeconds"] for line in functions.values()), default=0.0),
        "functions": functions,
    }


def _text(status: int, message: str) -> Response:
    return Response(one_line(message) + "\n", status=status, content_type="text/plain; charset=utf-8")


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, content_type=JSON)


async def _json_body(limit: int, setting: str) -> Any:
    """The request's JSON document, read up to ``limit`` bytes (413 above, before reading when the
    Content-Length says so)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit, setting)
    chunks = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise too_large(limit, setting)
        chunks.append(chunk)
    if not size:
        raise InvalidRequest("the body is empty; a JSON object is required")
    return parse_json(b"".join(chunks))


def _query_namespace() -> None:
    """``?namespace=``: empty or ``openfaas-fn`` (every value, when the query repeats it); 400 otherwise."""
    for namespace in request.args.getlist("namespace"):
        check_namespace(namespace)


def _log_request(args: Any) -> LogRequest:
    name = args.get("name", "")
    if not name:
        raise InvalidRequest("name is required")
    validate_name(name, "name")
    try:
        tail = int(args.get("tail", "0") or 0)
    except ValueError:
        raise InvalidRequest("tail must be a whole number") from None
    try:
        follow = parse_bool(args.get("follow", "false"))
    except ValueError:
        raise InvalidRequest("follow must be true or false") from None
    since = None
    if args.get("since"):
        try:
            since = datetime.fromisoformat(args["since"].replace("Z", "+00:00"))
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)  # RFC 3339 requires an offset; read a bare time as UTC.
        except ValueError:
            raise InvalidRequest("since must be an RFC 3339 time like 2026-01-02T15:04:05Z") from None
    return LogRequest(name=name, instance=args.get("instance", ""), tail=tail, follow=follow, since=since)


def _secret_body(body: Any) -> tuple[str, bytes]:
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object like {"name": "key", "value": "..."}')
    name = validate_name(body.get("name"), "name")
    check_namespace(body.get("namespace"))
    if body.get("rawValue"):
        try:
            return name, base64.b64decode(body["rawValue"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidRequest("rawValue must be base64") from None
    value = body.get("value")
    if not isinstance(value, str):
        raise InvalidRequest("value (a string) or rawValue (base64) is required")
    return name, value.encode()
