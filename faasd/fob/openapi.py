"""The Flock-of-Birds routes' part of ``/openapi.json`` (:mod:`faasd.gateway.openapi` merges it in).

What :mod:`faasd.fob.routes` answers, status by status: every answer is JSON but ``/api/cs``'s source,
and every error is ``{"error": "<one line>"}`` (``FobError``). The argument list of ``/api/call/{id}`` is
the raw query string (``?param1:1,param2:1``), which OpenAPI's query parameters cannot describe: the
operation says so in its description and lists no parameter for it.
"""

from __future__ import annotations

from typing import Any

from faasd.fob.source import LANGUAGES

__all__ = ["fob_paths", "fob_schemas"]

Schema = dict[str, Any]

_OPEN_ON_LOOPBACK: list[dict[str, list[str]]] = [{}, {"basicAuth": []}]
"""No credentials while the gateway binds a loopback address (and the request is not proxied); else basic auth."""
_ID: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "A snippet's id (the uuid4 POST /api/gen answered)",
    "schema": {"type": "string", "maxLength": 200},
}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, headers: Schema | None = None) -> Schema:
    response = _json(description, {"$ref": "#/components/schemas/FobError"})
    if headers:
        response["headers"] = headers
    return response


_GUARD = {
    "401": _error(
        "Credentials needed (the gateway does not bind a loopback address, or the request came through a "
        "proxy), or the ones sent are wrong",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "403": _error("A cross-site request (an Origin of another site, or Sec-Fetch-Site: cross-site)"),
    "429": _error(
        "Too many failed logins from this address; retry after Retry-After seconds",
        {"Retry-After": {"schema": {"type": "integer"}}},
    ),
}


def fob_schemas() -> dict[str, Schema]:
    return {
        "FobError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "Why, in one line"},
                "type": {"type": "string", "description": "The exception's type (a snippet that raised)"},
                "message": {"type": "string", "description": "The exception's message (a snippet that raised)"},
                "line": {"type": "integer", "description": "Where in the snippet (an upload refused)"},
                "column": {"type": "integer"},
            },
        },
    }


def fob_paths() -> dict[str, Schema]:
    tags = ["fob"]
    return {
        "/api/stats": {
            "get": {
                "operationId": "FobStats",
                "summary": "Every snippet's id, oldest first",
                "tags": tags,
                "security": [],
                "responses": {
                    "200": _json(
                        "The snippets",
                        {
                            "type": "object",
                            "required": ["functions"],
                            "properties": {"functions": {"type": "array", "items": {"type": "string"}}},
                        },
                    )
                },
            }
        },
        "/api/call/{id}": {
            "get": {
                "operationId": "FobCall",
                "summary": "Call a snippet's callme; the raw query string is its argument list",
                "description": (
                    "The query is key:value pairs separated by commas (?param1:1,param2:1), each key an "
                    "identifier, keys and values percent-decoded; every value reaches callme as a string. "
                    "A value may hold ':' (split at the first); a ',' in a value is %2C."
                ),
                "tags": tags,
                "security": [],
                "parameters": [_ID],
                "responses": {
                    "200": _json(
                        "What callme returned",
                        {"type": "object", "required": ["result"], "properties": {"result": {}}},
                    ),
                    "400": _error("A bad argument list, or arguments that do not fit callme's signature"),
                    "404": _error("No such snippet"),
                    "408": _error("callme ran past snippet_timeout"),
                    "413": _error("A request body over max_body_size"),
                    "500": _error(
                        "callme raised (type and message given, no traceback), its result is not "
                        "JSON-serialisable, or its worker crashed"
                    ),
                    "502": _error("The replica failed or timed out"),
                    "503": _error("No ready replica in time"),
                },
            }
        },
        "/api/meta/{id}": {
            "get": {
                "operationId": "FobMeta",
                "summary": "Internal: where a ready replica of the snippet answers",
                "tags": tags,
                "security": _OPEN_ON_LOOPBACK,
                "parameters": [_ID],
                "responses": {
                    "200": _json(
                        "A replica",
                        {
                            "type": "object",
                            "required": ["host", "port"],
                            "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
                        },
                    ),
                    "404": _error("No such snippet"),
                    "503": _error("No ready replica now"),
                    **_GUARD,
                },
            }
        },
        "/api/cs/{id}": {
            "get": {
                "operationId": "FobSource",
                "summary": "Internal: the snippet's source as it was uploaded",
                "tags": tags,
                "security": _OPEN_ON_LOOPBACK,
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "The source", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "404": _error("No such snippet"),
                    **_GUARD,
                },
            }
        },
        "/api/gen": {
            "post": {
                "operationId": "FobGen",
                "summary": "Upload a snippet defining callme; answered once it can be called",
                "description": (
                    "The body is the source as it is (not JSON, not a form). It is compiled in the daemon, "
                    "never run there; it runs in its own sandboxed function, fob-<id>."
                ),
                "tags": tags,
                "security": _OPEN_ON_LOOPBACK,
                "parameters": [
                    {
                        "name": "lang",
                        "in": "query",
                        "required": False,
                        "description": f"The snippet's language: {', '.join(LANGUAGES)} (the default)",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "200": _json(
                        "The new snippet's id",
                        {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                    ),
                    "400": _error(
                        "An unsupported lang (the supported ones listed), a source that does not compile or "
                        "defines no callme (line and column given), or one that failed when its replica imported it"
                    ),
                    "413": _error("A source over max_snippet_size"),
                    "502": _error("The backend failed to deploy it"),
                    "503": _error("Not ready within ready_timeout (it is removed again)"),
                    **_GUARD,
                },
            }
        },
        "/api/gen/{id}": {
            "delete": {
                "operationId": "FobDelete",
                "summary": "Delete a snippet and its function",
                "tags": tags,
                "security": [{"basicAuth": []}],
                "parameters": [_ID],
                "responses": {
                    "200": _json(
                        "Deleted",
                        {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}},
                    ),
                    "404": _error("No such snippet"),
                    **_GUARD,
                },
            }
        },
    }
