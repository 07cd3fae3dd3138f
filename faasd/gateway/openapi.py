"""``GET /openapi.json``: an OpenAPI 3 description of every route the gateway serves.

Modelled on OpenFaaS's published spec (``api-docs/spec.openapi.yml`` in github.com/openfaas/faas) for the
routes faasd shares with it -- same paths, operation ids and JSON field names -- but it describes what
*faasd* answers, where the two differ: ``DELETE /system/functions`` and ``POST /system/scale-function``
answer 202, ``DELETE /system/secrets`` 200, ``GET /system/secrets`` a list; every error is one line of
``text/plain``; ``handlerArchive``, ``/system/scaling/{functionName}`` and the ``faasd`` block of
``/system/info`` are faasd's own, and so is the Flock-of-Birds API under ``/api/`` (:mod:`faasd.fob.openapi`:
JSON answers, errors as ``{"error": "<one line>"}``). ``tests/reliability/`` fuzzes the daemon against this document, so
a status or a field faasd sends but does not list here fails the suite.

The document is public, like ``/healthz``: it is the same for every daemon of a version and names
nothing about this one (no functions, no secrets).
"""

from __future__ import annotations

from typing import Any

from faasd import __version__
from faasd.fob.openapi import fob_paths, fob_schemas
from faasd.namespace import DEFAULT_NAMESPACE
from faasd.providers.types import FUNCTION_STATES, MAX_NAME_LENGTH
from faasd.service import MAX_REPLICAS

__all__ = ["openapi_document"]

Schema = dict[str, Any]

NAME_REGEX = r"^[-a-zA-Z_0-9.]+$"
FUNCTION_NAME_REGEX = r"^[-a-zA-Z_0-9]+$"
"""A function deployed now: no dot (in /function/NAME.NAMESPACE a dot starts the namespace)."""
TEXT = "text/plain"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(description: str) -> Schema:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _shared(*names: str) -> dict[str, Schema]:
    return {code: {"$ref": f"#/components/responses/{name}"} for code, name in (_SHARED[n] for n in names)}


_SHARED = {
    "400": ("400", "BadRequest"),
    "401": ("401", "Unauthorized"),
    "404": ("404", "NotFound"),
    "413": ("413", "TooLarge"),
    "415": ("415", "NotJson"),
    "429": ("429", "Throttled"),
    "502": ("502", "BackendError"),
    "503": ("503", "BackendUnavailable"),
    "504": ("504", "BackendTimeout"),
}
_READ = ("401", "429")
_WRITE = ("400", "401", "413", "415", "429")
_BACKEND = ("502", "503", "504")
LOCKED = "The backend holds the function in another change (Marathon: a deployment locks its app; named)"


def _system(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    shared: tuple[str, ...],
    body: str | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["system"],
        "security": [{"basicAuth": []}],
        "responses": {**responses, **_shared(*shared)},
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


_NAME_IN_PATH: Schema = {
    "name": "functionName",
    "in": "path",
    "required": True,
    "description": "Function name",
    "schema": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
}
_INVOKE_NAME: Schema = {
    **_NAME_IN_PATH,
    "description": f"Function name, or NAME.{DEFAULT_NAMESPACE} (OpenFaaS's NAME.NAMESPACE: the part after the "
    f"last dot is the namespace, and {DEFAULT_NAMESPACE} is the only one)",
    "schema": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH + 1 + len(DEFAULT_NAMESPACE)},
}
_NAMESPACE: Schema = {
    "type": "string",
    "enum": ["", DEFAULT_NAMESPACE],
    "description": f"faasd has one namespace, {DEFAULT_NAMESPACE}: empty means it too; any other is 400",
}
_NAMESPACE_QUERY: Schema = {"name": "namespace", "in": "query", "required": False, "schema": _NAMESPACE}
_CALL_HEADERS: Schema = {
    "X-Call-Id": {"description": "The caller's X-Call-Id, or a new UUID", "schema": {"type": "string"}},
    "X-Start-Time": {"description": "When the gateway received the call (Unix ns)", "schema": {"type": "string"}},
}
_INVOKE_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def _invoke_responses() -> dict[str, Schema]:
    def gateway(description: str) -> Schema:
        return {**_text(description), "headers": _CALL_HEADERS}

    return {
        "200": {"description": "The function's answer, relayed as it is", "headers": _CALL_HEADERS},
        "400": gateway(
            "Invalid function name, another namespace than openfaas-fn, or a NUL (%00) in the path or query"
        ),
        "404": gateway("No such function"),
        "413": gateway("Body larger than max_body_size (an Alexa request: max_json_size)"),
        "502": gateway("The replica failed or timed out"),
        "503": gateway("No ready replica in time (or too many calls or request bodies waiting)"),
        "default": {"description": "The function's own status and answer", "headers": _CALL_HEADERS},
    }


def _invoke(operation_id: str, summary: str, extra: list[Schema]) -> Schema:
    item: Schema = {}
    for method in _INVOKE_METHODS:
        operation: Schema = {
            "operationId": f"{operation_id}{method.capitalize()}",
            "summary": summary,
            "tags": ["function"],
            "security": [],
            "parameters": [_INVOKE_NAME, *extra],
            "responses": _invoke_responses(),
        }
        if method in ("post", "put", "patch"):
            operation["requestBody"] = {
                "required": False,
                "description": "Passed to the function as it is",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        item[method] = operation
    return item


_NAMESPACE_IN_PATH: Schema = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "description": "Namespace name",
    "schema": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
}


def _namespace_mutation(operation_id: str, summary: str, *, path: bool = False) -> Schema:
    """faas-cli's ``namespace create|update|remove``: faasd has one namespace, which cannot change."""
    return _system(
        operation_id,
        summary,
        {"400": _text(f"faasd has one namespace, {DEFAULT_NAMESPACE}: it cannot be created, changed or removed")},
        shared=("401", "415", "429"),
        body="NamespaceRequest",
        parameters=[_NAMESPACE_IN_PATH] if path else None,
    )


def _async(operation_id: str, summary: str, extra: list[Schema]) -> Schema:
    def gateway(description: str) -> Schema:
        return {**_text(description), "headers": _CALL_HEADERS}

    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": (
                "The call is stored durably, then answered 202; a queue worker invokes the function later. "
                "An X-Callback-Url header (http or https) receives the function's answer as a POST with "
                "X-Call-Id, X-Duration-Seconds, X-Function-Status and X-Function-Name (docs/async.md has the "
                "rules on callback addresses, retries and limits)."
            ),
            "tags": ["function"],
            "security": [],
            "parameters": [_INVOKE_NAME, *extra],
            "requestBody": {
                "required": False,
                "description": "Passed to the function as it is",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "202": {"description": "Stored; the function will be called", "headers": _CALL_HEADERS},
                "400": gateway(
                    "Invalid function name, X-Callback-Url or X-Call-Id, another namespace than openfaas-fn, "
                    "or a NUL (%00) in the path or query"
                ),
                "404": gateway("No such function"),
                "413": gateway("Body larger than max_body_size"),
                "429": gateway("This function's async queue is full (async_queue_size)"),
                "500": gateway("The call could not be stored"),
                "503": gateway("The async queue is full (async_queue_total, async_max_stored_size)"),
            },
        }
    }


def _schemas() -> dict[str, Schema]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    nullable_string_map = {**string_map, "nullable": True}
    resources = {"nullable": True, "allOf": [_ref("FunctionResources")]}
    version = {
        "type": "object",
        "required": ["sha", "release"],
        "properties": {
            "commit_message": {"type": "string"},
            "sha": {"type": "string"},
            "release": {"type": "string"},
        },
    }
    return {
        "FunctionResources": {
            "type": "object",
            "properties": {
                "memory": {"type": "string", "example": "128M"},
                "cpu": {"type": "string", "example": "0.5"},
            },
        },
        "FunctionDeployment": {
            "type": "object",
            "required": ["service"],
            "description": "What to run. Unknown fields are ignored (OpenFaaS clients send some faasd has no use for).",
            "properties": {
                "service": {
                    "type": "string",
                    "pattern": FUNCTION_NAME_REGEX,
                    "maxLength": MAX_NAME_LENGTH,
                    "description": "No dot: in /function/NAME.NAMESPACE a dot starts the namespace",
                },
                "image": {"type": "string", "description": "Swarm: the image; local: ignored"},
                "namespace": _NAMESPACE,
                "envProcess": {"type": "string", "description": "The command the watchdog runs (fprocess)"},
                "envVars": {
                    "type": "object",
                    "nullable": True,
                    "description": "A process environment: names without '=' or NUL, values without NUL",
                    "propertyNames": {"pattern": "^[^=\u0000]+$"},
                    "additionalProperties": {"type": "string", "pattern": "^[^\u0000]*$"},
                },
                "constraints": {"type": "array", "items": {"type": "string"}, "nullable": True},
                "secrets": {
                    "type": "array",
                    "nullable": True,
                    "items": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                },
                "labels": nullable_string_map,
                "annotations": nullable_string_map,
                "limits": resources,
                "requests": resources,
                "readOnlyRootFilesystem": {"type": "boolean"},
                "handlerArchive": {
                    "type": "string",
                    "format": "byte",
                    "description": "faasd's own: a .tar.gz of the function's directory, base64 (on Swarm a "
                    "Docker config: at most 500 KB)",
                },
                "registryAuth": {"type": "string", "deprecated": True, "description": "Ignored"},
                "network": {"type": "string", "deprecated": True, "description": "Ignored"},
            },
        },
        "FunctionStatus": {
            "type": "object",
            "required": [
                "name",
                "namespace",
                "image",
                "invocationCount",
                "replicas",
                "availableReplicas",
                "createdAt",
                "faasd",
            ],
            "properties": {
                "name": {"type": "string"},
                "image": {"type": "string"},
                "namespace": {"type": "string", "enum": [DEFAULT_NAMESPACE]},
                "envProcess": {"type": "string"},
                "envVars": string_map,
                "constraints": {"type": "array", "items": {"type": "string"}},
                "secrets": {"type": "array", "items": {"type": "string"}},
                "labels": string_map,
                "annotations": string_map,
                "limits": _ref("FunctionResources"),
                "requests": _ref("FunctionResources"),
                "readOnlyRootFilesystem": {"type": "boolean"},
                "invocationCount": {"type": "number", "minimum": 0},
                "replicas": {"type": "integer", "minimum": 0, "description": "Desired replicas"},
                "availableReplicas": {"type": "integer", "minimum": 0, "description": "Ready replicas"},
                "createdAt": {"type": "string", "format": "date-time"},
                "faasd": {
                    "type": "object",
                    "description": "faasd's own: its view of the function (OpenFaaS clients ignore it)",
                    "required": ["state"],
                    "properties": {
                        "state": {"type": "string", "enum": list(FUNCTION_STATES)},
                        "reason": {"type": "string", "description": "Why it failed"},
                    },
                },
            },
        },
        "DeleteFunctionRequest": {
            "type": "object",
            "required": ["functionName"],
            "properties": {
                "functionName": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                "namespace": _NAMESPACE,
            },
        },
        "ScaleServiceRequest": {
            "type": "object",
            "required": ["replicas"],
            "properties": {
                "serviceName": {"type": "string", "description": "Empty or the path's function name"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS},
                "namespace": _NAMESPACE,
            },
        },
        "ScalingStatus": {
            "type": "object",
            "description": "faasd's own: the autoscaler's view of one function",
            "required": ["name", "replicas", "availableReplicas", "desiredReplicas", "reason", "load", "settings"],
            "properties": {
                "name": {"type": "string"},
                "replicas": {"type": "integer"},
                "availableReplicas": {"type": "integer"},
                "desiredReplicas": {"type": "integer"},
                "reason": {"type": "string"},
                "panicking": {"type": "boolean"},
                "load": {
                    "type": "object",
                    "required": ["type", "stable", "panic", "inFlightNow", "idleSeconds"],
                    "properties": {
                        "type": {"type": "string"},
                        "stable": {"type": "number"},
                        "panic": {"type": "number"},
                        "inFlightNow": {"type": "number"},
                        "idleSeconds": {"type": "number"},
                        "queued": {"type": "number", "description": "Async calls waiting, counted as load"},
                    },
                },
                "settings": {
                    "type": "object",
                    "required": ["min", "max", "type", "target", "targetProportion", "zero", "enabled"],
                    "properties": {
                        "min": {"type": "integer"},
                        "max": {"type": "integer"},
                        "type": {"type": "string"},
                        "target": {"type": "number"},
                        "targetProportion": {"type": "number"},
                        "zero": {"type": "boolean"},
                        "zeroDurationSeconds": {"type": "number"},
                        "enabled": {"type": "boolean"},
                    },
                },
            },
        },
        "GatewayInfo": {
            "type": "object",
            "required": ["provider", "version", "arch"],
            "properties": {
                "provider": {
                    "type": "object",
                    "required": ["provider", "orchestration", "version"],
                    "properties": {
                        "provider": {"type": "string", "example": "faasd-local"},
                        "orchestration": {"type": "string"},
                        "version": version,
                    },
                },
                "version": version,
                "arch": {"type": "string"},
                "faasd": {
                    "type": "object",
                    "description": "faasd's own",
                    "required": ["uptime_seconds", "healthy", "health", "password_file", "functions"],
                    "properties": {
                        "uptime_seconds": {"type": "number"},
                        "healthy": {"type": "boolean"},
                        "health": {"type": "string"},
                        "password_file": {"type": "string"},
                        "functions": {"type": "integer"},
                        "async": {
                            "type": "object",
                            "description": "The async queue: calls accepted and not finished, in all and per function",
                            "required": ["queued", "running", "oldestSeconds", "functions"],
                            "properties": {
                                "queued": {"type": "integer", "minimum": 0},
                                "running": {"type": "integer", "minimum": 0},
                                "oldestSeconds": {"type": "number", "minimum": 0},
                                "functions": {"type": "object", "additionalProperties": _ref("AsyncQueueStats")},
                            },
                        },
                    },
                },
            },
        },
        "AsyncQueueStats": {
            "type": "object",
            "required": ["queued", "running", "oldestSeconds"],
            "properties": {
                "queued": {"type": "integer", "minimum": 0},
                "running": {"type": "integer", "minimum": 0},
                "oldestSeconds": {"type": "number", "minimum": 0},
            },
        },
        "LogEntry": {
            "type": "object",
            "required": ["name", "namespace", "instance", "timestamp", "text"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string", "enum": [DEFAULT_NAMESPACE]},
                "instance": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
                "text": {"type": "string"},
            },
        },
        "SecretDescription": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                "namespace": _NAMESPACE,
            },
        },
        "SecretListItem": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                "namespace": {"type": "string", "enum": [DEFAULT_NAMESPACE]},
            },
        },
        "FunctionNamespace": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "enum": [DEFAULT_NAMESPACE]}},
        },
        "NamespaceRequest": {
            "type": "object",
            "description": "What faas-cli's namespace create|update|remove send (OpenFaaS's FunctionNamespace)",
            "properties": {"name": {"type": "string"}, "labels": string_map, "annotations": string_map},
        },
        "Secret": {
            "type": "object",
            "required": ["name"],
            "description": "value (text) or rawValue (base64) is required",
            "properties": {
                "name": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                "value": {"type": "string"},
                "rawValue": {"type": "string", "format": "byte"},
                "namespace": _NAMESPACE,
            },
        },
    }


def _responses() -> dict[str, Schema]:
    return {
        "BadRequest": _text("The request is invalid; the line names the field"),
        "Unauthorized": {
            **_text("Missing or wrong credentials"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "NotFound": _text("No such function (or secret, or namespace)"),
        "TooLarge": _text("The body is larger than the limit"),
        "NotJson": _text("A write without Content-Type: application/json (cross-site forms cannot send it)"),
        "Throttled": {
            **_text("Too many failed logins from this address; retry after Retry-After seconds"),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        "BackendError": _text("The backend failed doing what was asked"),
        "BackendUnavailable": _text("The backend cannot be reached now (e.g. dockerd is down)"),
        "BackendTimeout": _text("The backend did not answer in time"),
    }


def _paths() -> dict[str, Schema]:
    accepted = {"202": {"description": "Accepted"}}
    return {
        "/function/{functionName}": _invoke("InvokeFunction", "Call a function (any method)", []),
        "/function/{functionName}/{path}": _invoke(
            "InvokeFunctionPath",
            "Call a function; the replica sees /{path}?{query} (path may hold further segments)",
            [{"name": "path", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
        ),
        "/async-function/{functionName}": _async("InvokeAsync", "Call a function later (async)", []),
        "/async-function/{functionName}/{path}": _async(
            "InvokeAsyncPath",
            "Call a function later (async); the replica sees /{path}?{query}",
            [{"name": "path", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
        ),
        "/": {
            "get": {
                "operationId": "Index",
                "summary": "Where things are",
                "tags": ["internal"],
                "security": [],
                "responses": {
                    "200": _text("One line: version and where to look"),
                    "302": {
                        **_text("A browser (Accept: text/html) is sent to the web UI"),
                        "headers": {"Location": {"schema": {"type": "string", "enum": ["/ui/"]}}},
                    },
                },
            },
            "post": {
                "operationId": "InvokeRoot",
                "summary": "Call the function named by X-Function, or an Alexa skill's intent (2016 routing)",
                "tags": ["function"],
                "security": [],
                "parameters": [{"name": "X-Function", "in": "header", "required": False, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"*/*": {"schema": {"type": "string"}}}},
                "responses": {
                    **_invoke_responses(),
                    "400": {**_text("No X-Function and not an Alexa request, or a bad name"), "headers": _CALL_HEADERS},
                },
            },
        },
        "/healthz": {
            method: {
                "operationId": f"Healthcheck{method.capitalize()}",
                "summary": "Is the gateway serving and its backend reachable",
                "tags": ["internal"],
                "security": [],
                "responses": {"200": _text("OK"), "503": _text("degraded: the reason")},
            }
            for method in ("get", "head")
        },
        "/metrics": {
            method: {
                "operationId": "Metrics" if method == "get" else "MetricsHead",
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "tags": ["internal"],
                "security": [],
                "responses": {"200": _text("Metrics")},
            }
            for method in ("get", "head")
        },
        "/ui/": {
            "get": {
                "operationId": "WebUi",
                "summary": "The web UI (HTML; its data comes from /system/* with the admin's credentials: docs/ui.md)",
                "tags": ["ui"],
                "security": [],
                "responses": {"200": {"description": "The function list page", "content": {"text/html": {}}}},
            }
        },
        "/ui/{file}": {
            "get": {
                "operationId": "WebUiFile",
                "summary": "One of the web UI's static files (HTML, JavaScript, CSS, SVG)",
                "tags": ["ui"],
                "security": [],
                "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            "text/html": {},
                            "text/javascript": {},
                            "text/css": {},
                            "image/svg+xml": {},
                        },
                    },
                    "404": _text("No such file"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "OpenAPI",
                "summary": "This document",
                "tags": ["internal"],
                "security": [],
                "responses": {"200": _json("OpenAPI 3 document", {"type": "object"})},
            }
        },
        "/system/functions": {
            "get": _system(
                "GetFunctions",
                "Every function with its status",
                {"200": _json("The functions", {"type": "array", "items": _ref("FunctionStatus")})},
                shared=(*_READ, "400", *_BACKEND),
                parameters=[_NAMESPACE_QUERY],
            ),
            "post": _system(
                "DeployFunction",
                "Deploy (replaces a function of that name)",
                {**accepted, "409": _text(f"{LOCKED}; or something else has that name there (Marathon)")},
                shared=(*_WRITE, *_BACKEND),
                body="FunctionDeployment",
                parameters=[_NAMESPACE_QUERY],
            ),
            "put": _system(
                "UpdateFunction",
                "Update an existing function",
                {**accepted, "409": _text(LOCKED)},
                shared=(*_WRITE, "404", *_BACKEND),
                body="FunctionDeployment",
                parameters=[_NAMESPACE_QUERY],
            ),
            "delete": _system(
                "DeleteFunction",
                "Remove a function",
                accepted,
                shared=(*_WRITE, "404", *_BACKEND),
                body="DeleteFunctionRequest",
                parameters=[_NAMESPACE_QUERY],
            ),
        },
        "/system/function/{functionName}": {
            "get": _system(
                "GetFunctionStatus",
                "One function's status",
                {"200": _json("The function", _ref("FunctionStatus"))},
                shared=(*_READ, "400", "404", *_BACKEND),
                parameters=[_NAME_IN_PATH, _NAMESPACE_QUERY],
            )
        },
        "/system/scale-function/{functionName}": {
            "post": _system(
                "ScaleFunction",
                "Set the desired replicas",
                {**accepted, "409": _text(LOCKED)},
                shared=(*_WRITE, "404", *_BACKEND),
                body="ScaleServiceRequest",
                parameters=[_NAME_IN_PATH, _NAMESPACE_QUERY],
            )
        },
        "/system/scaling/{functionName}": {
            "get": _system(
                "GetFunctionScaling",
                "faasd's own: the autoscaler's load, decision and reason for one function",
                {"200": _json("Scaling status", _ref("ScalingStatus")), "501": _text("No autoscaler runs")},
                shared=(*_READ, "400", "404", *_BACKEND),
                parameters=[_NAME_IN_PATH, _NAMESPACE_QUERY],
            )
        },
        "/system/info": {
            "get": _system(
                "GetSystemInfo",
                "Versions, backend, health",
                {"200": _json("Info", _ref("GatewayInfo"))},
                shared=_READ,
            )
        },
        "/system/namespaces": {
            "get": _system(
                "GetNamespaces",
                f"Namespaces: faasd has one, {DEFAULT_NAMESPACE}",
                {
                    "200": _json(
                        "The one namespace",
                        {
                            "type": "array",
                            "items": {"type": "string", "enum": [DEFAULT_NAMESPACE]},
                            "minItems": 1,
                            "maxItems": 1,
                        },
                    )
                },
                shared=_READ,
            )
        },
        "/system/namespace/": {"post": _namespace_mutation("CreateNamespace", "Create a namespace: not supported")},
        "/system/namespace/{namespace}": {
            "get": _system(
                "GetNamespace",
                f"One namespace: only {DEFAULT_NAMESPACE} exists",
                {"200": _json("The namespace", _ref("FunctionNamespace"))},
                shared=(*_READ, "404"),
                parameters=[_NAMESPACE_IN_PATH],
            ),
            "put": _namespace_mutation("UpdateNamespace", "Change a namespace: not supported", path=True),
            "delete": _namespace_mutation("DeleteNamespace", "Remove a namespace: not supported", path=True),
            "post": _namespace_mutation("CreateNamedNamespace", "Create a namespace: not supported", path=True),
        },
        "/system/logs": {
            "get": _system(
                "GetFunctionLogs",
                "A function's log lines as NDJSON (follow=true streams until the client leaves)",
                {
                    "200": {
                        "description": "Newline-delimited LogEntry documents",
                        "content": {"application/x-ndjson": {"schema": _ref("LogEntry")}},
                    },
                    "501": _text("The backend serves no logs (Marathon: the message says where they are)"),
                },
                shared=(*_READ, "400", "404", *_BACKEND),
                parameters=[
                    {
                        "name": "name",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "pattern": NAME_REGEX, "maxLength": MAX_NAME_LENGTH},
                    },
                    _NAMESPACE_QUERY,
                    {"name": "instance", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "tail", "in": "query", "required": False, "schema": {"type": "integer"}},
                    {"name": "follow", "in": "query", "required": False, "schema": {"type": "boolean"}},
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "format": "date-time"},
                    },
                ],
            )
        },
        "/system/secrets": {
            "get": _system(
                "ListSecrets",
                "Secret names (never values)",
                {"200": _json("The secrets", {"type": "array", "items": _ref("SecretListItem")})},
                shared=(*_READ, "400"),
                parameters=[_NAMESPACE_QUERY],
            ),
            "post": _system(
                "CreateSecret",
                "Create a secret",
                {"201": {"description": "Created"}, "409": _text("It exists already (use PUT)")},
                shared=_WRITE,
                body="Secret",
                parameters=[_NAMESPACE_QUERY],
            ),
            "put": _system(
                "UpdateSecret",
                "Replace a secret's value",
                {"200": {"description": "Updated"}},
                shared=(*_WRITE, "404"),
                body="Secret",
                parameters=[_NAMESPACE_QUERY],
            ),
            "delete": _system(
                "DeleteSecret",
                "Remove a secret",
                {"200": {"description": "Removed"}, "409": _text("Deployed functions still use it (named)")},
                shared=(*_WRITE, "404"),
                body="SecretDescription",
                parameters=[_NAMESPACE_QUERY],
            ),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The whole document (a fresh dict: callers may serialise or change it)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "faasd gateway",
            "version": __version__,
            "description": (
                "OpenFaaS-compatible gateway. /system/* needs basic auth (user admin); writes need "
                "Content-Type: application/json. /function/*, /healthz, /metrics, this document and the web "
                "UI's files (/ui/, whose data comes from /system/*) are public. "
                "Every error the gateway writes itself is one line of text/plain, but under /api/ (the "
                'Flock-of-Birds API), whose answers are JSON and whose errors are {"error": "<one line>"}.'
            ),
            "license": {"name": "MIT"},
        },
        "tags": [
            {"name": "system", "description": "Managing functions and secrets (basic auth)"},
            {"name": "function", "description": "Calling functions (public)"},
            {"name": "internal", "description": "Health, metrics, this document (public)"},
            {"name": "fob", "description": "Flock-of-Birds snippets (JSON answers; docs/fob.md)"},
            {"name": "ui", "description": "The web UI's static files (public; docs/ui.md)"},
        ],
        "paths": {**_paths(), **fob_paths()},
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": {**_schemas(), **fob_schemas()},
            "responses": _responses(),
        },
    }
