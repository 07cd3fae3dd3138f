"""faasd's one namespace (faasd.namespace): which spellings mean it, and the one-line 400 for any other."""

from __future__ import annotations

import pytest

from faasd.errors import InvalidRequest
from faasd.namespace import DEFAULT_NAMESPACE, NAMESPACES, check_namespace, split_qualified_name


def test_the_one_namespace_is_openfaas_fns_default() -> None:
    assert DEFAULT_NAMESPACE == "openfaas-fn"
    assert NAMESPACES == ("openfaas-fn",)


@pytest.mark.parametrize("namespace", [None, "", "openfaas-fn"])
def test_empty_or_openfaas_fn_is_accepted(namespace: object) -> None:
    check_namespace(namespace)


@pytest.mark.parametrize(
    ("namespace", "message"),
    [
        ("dev", "namespace 'dev' does not exist: faasd has one namespace, openfaas-fn"),
        ("OPENFAAS-FN", "namespace 'OPENFAAS-FN' does not exist"),
        (" openfaas-fn", "namespace ' openfaas-fn' does not exist"),
        ("x" * 500, "namespace '" + "x" * 70 + "...' does not exist"),
        (0, "namespace must be a string"),
        (["openfaas-fn"], "namespace must be a string"),
    ],
)
def test_any_other_namespace_is_one_clear_line(namespace: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_namespace(namespace)
    assert info.value.http_status == 400
    assert info.value.message.startswith(message), info.value.message
    assert "openfaas-fn" in info.value.message and len(info.value.message) < 200


@pytest.mark.parametrize(
    ("qualified", "name"),
    [
        ("echo", "echo"),
        ("echo.openfaas-fn", "echo"),
        ("a.b.openfaas-fn", "a.b"),  # The last dot splits, as OpenFaaS's gateway does.
        (".openfaas-fn", ""),  # An empty name: the caller's name check answers it.
        ("", ""),
    ],
)
def test_the_invoke_paths_name_dot_namespace(qualified: str, name: str) -> None:
    assert split_qualified_name(qualified) == name


@pytest.mark.parametrize(("qualified", "namespace"), [("echo.dev", "dev"), ("echo.", ""), ("a.openfaas-fn.x", "x")])
def test_another_namespace_on_the_invoke_path_is_a_400_naming_it(qualified: str, namespace: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        split_qualified_name(qualified)
    assert info.value.message == f"namespace {namespace!r} does not exist: faasd has one namespace, openfaas-fn"
