"""The OpenAPI document (faasd.gateway.openapi) lists every route the gateway serves, with its methods,
and every operation in it loads (schemathesis parses each one as the fuzzer in tests/reliability does)."""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from faasd.gateway import BasicAuth, create_management_app
from faasd.gateway.openapi import openapi_document

INVOKE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods that reach a function (faasd/watchdog/app.py: OPTIONS and HEAD too, for a function's own CORS)."""
RAW_ROUTES = {
    # Answered by GatewayApp/Invoker before Quart (faasd/gateway/app.py): not in Quart's url_map.
    *(
        (route, method)
        for route in ("/function/{functionName}", "/function/{functionName}/{path}")
        for method in INVOKE_METHODS
    ),
    ("/async-function/{functionName}", "POST"),
    ("/async-function/{functionName}/{path}", "POST"),
    ("/", "POST"),
    ("/metrics", "GET"),
    ("/metrics", "HEAD"),
    # The Flock-of-Birds API (faasd/fob/routes.py), also raw ASGI.
    ("/api/gen", "POST"),
    ("/api/gen/{id}", "DELETE"),
    ("/api/call/{id}", "GET"),
    ("/api/stats", "GET"),
    ("/api/meta/{id}", "GET"),
    ("/api/cs/{id}", "GET"),
    # The web UI's static files (faasd/ui/route.py), raw ASGI too.
    ("/ui/", "GET"),
    ("/ui/{file}", "GET"),
}
AUTOMATIC = {"HEAD", "OPTIONS"}
"""Methods Quart adds to every route by itself (HEAD of a GET; OPTIONS answered with Allow)."""


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def _quart_routes() -> set[tuple[str, str]]:
    app = create_management_app(
        service=None,  # type: ignore[arg-type]  # Only the routing table is read.
        auth=BasicAuth("admin", "a-password-for-tests-only"),
        provider_name="local",
        orchestration="local",
        max_body_bytes=1024,
        health=lambda: (True, ""),
    )
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?name>", "{functionName}", rule.rule).replace("<namespace>", "{namespace}")
        explicit = {"HEAD"} if rule.rule == "/healthz" else set()  # /healthz lists HEAD itself.
        routes |= {(path, method) for method in (rule.methods or ()) if method not in AUTOMATIC or method in explicit}
    return routes


def test_every_route_is_documented_and_nothing_else() -> None:
    document = openapi_document()
    served = _quart_routes() | RAW_ROUTES
    documented = _documented(document)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_every_operation_loads_and_system_routes_need_auth() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document)
    operations = list(schema.get_all_operations())
    assert len(operations) == len(_documented(document))
    for result in operations:
        result.ok()  # Raises with the reason when an operation does not load.
    for path, item in document["paths"].items():
        if path.startswith("/api/"):
            continue  # Open, open on loopback, or auth: tests/unit/test_fob_routes.py checks each.
        for method, operation in item.items():
            needs_auth = path.startswith("/system/")
            assert bool(operation["security"]) == needs_auth, (path, method)
            if needs_auth:
                assert {"401", "429"} <= operation["responses"].keys(), (path, method)
            if needs_auth and method in ("post", "put", "delete"):
                assert "415" in operation["responses"] and "application/json" in operation["requestBody"]["content"]
