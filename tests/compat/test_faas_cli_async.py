"""``faas-cli invoke --async`` (faas-cli 0.18.12, unmodified) against a real daemon, with a callback
receiver of its own on 127.0.0.1 (``callback_server``, tests/daemon_fixtures.py).

faas-cli calls ``POST /async-function/<name>.openfaas-fn`` (the OpenFaaS Go SDK adds the namespace, ``-n``
or not), prints ``Function submitted asynchronously.`` on stderr for the 202 and nothing on stdout, and
passes ``-H "Name: value"`` headers on: ``X-Callback-Url`` is how its users ask for the answer (the
``Name=value`` form of older docs gets a deprecation warning and then a Go error in 0.18). Its messages
are quoted from its sources (github.com/openfaas/faas-cli ``commands/invoke.go``). The daemon, the
functions (``env`` answers with the request it saw as ``Http_*`` variables) and how each test starts from
an empty daemon: tests/compat/conftest.py.
"""

from __future__ import annotations

from tests.compat.conftest import FaasCli
from tests.daemon_fixtures import CallbackServer, Daemon
from tests.helpers import wait_for

SUBMITTED = "Function submitted asynchronously.\n"


def _seen(body: bytes) -> dict[str, str]:
    """The ``Http_*`` lines ``env`` printed: the request as the function saw it."""
    lines = body.decode().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("Http_"))


def _accepted(daemon: Daemon, name: str) -> float:
    return daemon.metric("faasd_async_calls_total", function_name=name, outcome="accepted") or 0.0


def test_invoke_async_is_called_back_with_the_openfaas_headers(
    faas: FaasCli, invoke_targets: dict[str, str], callback_server: CallbackServer
) -> None:
    accepted = _accepted(faas.daemon, "env")
    run = faas(
        "invoke",
        "env",
        "--async",
        "--query",
        "a=1",
        "-H",
        f"X-Callback-Url: {callback_server.url}/done",
        "-H",
        "X-Call-Id: cli-async-1",
        stdin="async body",
    )
    assert (run.out, run.err) == ("", SUBMITTED), run
    callback_server.wait_delivered({"cli-async-1"}, 20)
    [callback] = callback_server.calls("cli-async-1")
    assert callback.path == "/done"
    assert (callback.headers["x-function-name"], callback.headers["x-function-status"]) == ("env", "200")
    assert float(callback.headers["x-duration-seconds"]) > 0
    seen = _seen(callback.body)
    assert (seen["Http_Method"], seen["Http_Path"], seen["Http_Query"]) == ("POST", "/", "a=1"), seen
    assert seen["Http_User_Agent"].startswith("faas-cli/0.18.12") and seen["Http_X_Call_Id"] == "cli-async-1"

    # -n openfaas-fn is the same function; without a callback the call runs and its answer goes nowhere.
    assert faas("invoke", "env", "--async", "-n", "openfaas-fn", stdin="x").err == SUBMITTED
    wait_for(lambda: _accepted(faas.daemon, "env") - accepted == 2, 10, "both calls to be accepted")
    done = "the call without a callback to run"
    wait_for(lambda: faas.daemon.metric("faasd_async_calls_total", function_name="env", outcome="done"), 20, done)


def test_invoke_async_errors_as_faas_cli_prints_them(faas: FaasCli, invoke_targets: dict[str, str]) -> None:
    accepted = _accepted(faas.daemon, "env")
    other = faas("invoke", "env", "--async", "-n", "dev", stdin="x", code=1)
    expected = "namespace 'dev' does not exist: faasd has one namespace, openfaas-fn"
    assert other.output == f"Server returned unexpected status code: 400 - {expected}\n\n", other
    ghost = faas("invoke", "ghost", "--async", stdin="x", code=1)
    assert ghost.output == "Server returned unexpected status code: 404 - Function not found: ghost\n\n", ghost
    refused = faas("invoke", "env", "--async", "-H", "X-Callback-Url: http://169.254.169.254/latest", stdin="x", code=1)
    assert refused.output.startswith("Server returned unexpected status code: 400 - X-Callback-Url points at the")
    assert "link-local" in refused.output, refused
    get = faas("invoke", "env", "--async", "--method", "GET", stdin="x", code=1)
    assert get.output.startswith("Server returned unexpected status code: 405 - Method GET not allowed"), get
    assert _accepted(faas.daemon, "env") == accepted  # none of them was queued
