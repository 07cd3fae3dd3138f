"""faasd's one namespace, named as OpenFaaS names its default: ``openfaas-fn``.

OpenFaaS clients name a namespace in three places, and faasd accepts each of them with ``openfaas-fn``
(or nothing) and answers any other namespace with a 400 naming it and the one that exists:

* the invoke path, ``/function/<name>.<namespace>[/<path>]`` (faas-cli and the OpenFaaS Go SDK always
  call it so). As OpenFaaS's gateway splits it (``GetNamespace`` in openfaas/faas
  ``gateway/pkg/middleware/service_name.go``), the part after the **last** dot is the namespace;
* the query, ``?namespace=``, on the ``/system`` routes that read one (listing functions or secrets,
  a function's status, logs, ...);
* the body, ``"namespace"``, of the write requests whose OpenFaaS types carry it (FunctionDeployment,
  DeleteFunctionRequest, ScaleServiceRequest, Secret).

Because a dot separates a name from its namespace, a **function** name may not contain one: a deploy of
``a.b`` is a 400 (``validate_function_name`` in :mod:`faasd.providers.types`), so ``/function/a.b`` can
only mean "function ``a`` in namespace ``b``". Secret names keep their dots: they never appear in a path.

Pure: no I/O.
"""

from __future__ import annotations

from faasd.errors import InvalidRequest

__all__ = ["DEFAULT_NAMESPACE", "NAMESPACES", "check_namespace", "split_qualified_name", "unknown_namespace"]

DEFAULT_NAMESPACE = "openfaas-fn"
"""The one namespace: every function and secret is in it."""

NAMESPACES = (DEFAULT_NAMESPACE,)
"""What ``GET /system/namespaces`` lists."""

_SHOWN_CHARS = 70
"""A namespace quoted in an error is clipped to this many characters (it is the client's text)."""


def unknown_namespace(namespace: str) -> InvalidRequest:
    """The 400 for a namespace other than :data:`DEFAULT_NAMESPACE`: one line naming both."""
    shown = namespace if len(namespace) <= _SHOWN_CHARS else namespace[:_SHOWN_CHARS] + "..."
    return InvalidRequest(f"namespace {shown!r} does not exist: faasd has one namespace, {DEFAULT_NAMESPACE}")


def check_namespace(namespace: object, field_name: str = "namespace") -> None:
    """Accept ``None``, ``""`` or ``openfaas-fn`` (a query parameter or a JSON field).

    Raises:
        InvalidRequest: any other value (naming it and ``openfaas-fn``), or not a string.
    """
    if namespace is None or namespace == "" or namespace == DEFAULT_NAMESPACE:
        return
    if not isinstance(namespace, str):
        raise InvalidRequest(f"{field_name} must be a string (faasd has one namespace, {DEFAULT_NAMESPACE})")
    raise unknown_namespace(namespace)


def split_qualified_name(qualified: str) -> str:
    """The function name in ``name`` or ``name.openfaas-fn`` (the invoke path's form).

    ``echo`` -> ``echo``; ``echo.openfaas-fn`` -> ``echo``; the part after the last dot must be
    ``openfaas-fn``. The name itself is not validated here (the caller does, as for any name).

    Raises:
        InvalidRequest: the part after the last dot is another namespace (or empty: ``echo.``).
    """
    name, dot, namespace = qualified.rpartition(".")
    if not dot:
        return qualified
    if namespace != DEFAULT_NAMESPACE:
        raise unknown_namespace(namespace)
    return name
