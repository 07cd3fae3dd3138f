"""OpenFaaS's own CLI (faas-cli 0.18.12, the unmodified static binary) drives a real daemon, command by
command, as an OpenFaaS user would: login, deploy (flags, and ``-f stack.yml`` with ``--filter``),
list, describe, invoke, secrets, logs, ready, namespaces, remove -- with the API's auth, JSON-only
writes and throttle on. Each command's exit status and output are checked against what faas-cli prints
for OpenFaaS (its messages are quoted from its sources, github.com/openfaas/faas-cli ``commands/`` and
``proxy/``). faas-cli always invokes ``/function/<name>.<namespace>`` (namespace ``openfaas-fn`` by
default) and sends ``namespace`` wherever ``-n`` is given; faasd's one namespace is ``openfaas-fn``.

Where the binary comes from, when these tests skip, and how one daemon serves the module while each
test starts from an empty one: ``tests/compat/conftest.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.compat.conftest import FaasCli
from tests.daemon_fixtures import PASSWORD, Daemon
from tests.helpers import wait_for

NO_SUCH_NAMESPACE = "namespace 'dev' does not exist: faasd has one namespace, openfaas-fn"


def _table(text: str) -> list[list[str]]:
    """faas-cli's tab-and-space padded table as rows of cells."""
    return [line.split() for line in text.splitlines() if line.strip()]


# -- login ----------------------------------------------------------------------------------------
def test_login_both_forms_and_a_wrong_password(
    faas_cli_for: Callable[[Daemon], FaasCli], compat_daemon: Daemon
) -> None:
    daemon = compat_daemon
    faas = faas_cli_for(daemon)
    refused = faas("login", "-u", "admin", "--password-stdin", stdin="not-the-password-at-all\n", code=1)
    assert "Unable to login, either username or password is incorrect" in refused.output, refused
    not_saved = faas("list", code=1)  # Nothing was saved: faas-cli sends no credentials.
    assert 'Unauthorized access, run "faas-cli login"' in not_saved.output, not_saved

    with_flag = faas("login", "--username", "admin", "--password", PASSWORD)
    assert "WARNING! Using --password is insecure" in with_flag.output
    assert f"credentials saved for admin {daemon.url}" in with_flag.out, with_flag
    config = (faas.home / ".openfaas" / "config.yml").read_text()
    assert daemon.url in config and "basic" in config

    from_stdin = faas("login", "-u", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert f"credentials saved for admin {daemon.url}" in from_stdin.out and "WARNING" not in from_stdin.output
    version = faas("version", "--warn-update=false")  # GET /system/info, with the saved credentials.
    assert "version: 0.18.12" in version.out
    assert " name:          faasd-local" in version.out and "orchestration: local" in version.out, version
    assert faas("logout").code == 0
    assert 'Unauthorized access, run "faas-cli login"' in faas("list", code=1).output


# -- deploy with flags, list, describe, remove ----------------------------------------------------
def test_deploy_with_flags_list_describe_update_remove(faas: FaasCli) -> None:
    url = faas.daemon.url
    deploy = ("deploy", "--image", "ignored:latest", "--name", "echo", "--fprocess", "cat")
    first = faas(*deploy, "--env", "greeting=hi", "--label", "team=a", "--annotation", "topic=t")
    assert "Deployed. 202 ." in first.out and f"URL: {url}/function/echo\n" in first.out, first
    # faas-cli PUTs first (404: not there yet), then POSTs; a second deploy is an update (PUT).
    faas("secret", "create", "api-key", "--from-literal", "k")
    more = ("--constraint", "node.platform.os==linux", "--readonly", "--memory-limit", "64Mi", "--secret", "api-key")
    again = faas(
        *deploy, "--env", "greeting=again", "--label", "team=b", "--annotation", "topic=t", *more, "-n", "openfaas-fn"
    )
    assert f"URL: {url}/function/echo.openfaas-fn\n" in again.out, again
    ready = faas("ready", "echo")
    assert "Function echo is ready" in ready.out, ready
    status = faas.daemon.status("echo")
    assert (status["envVars"], status["labels"], status["annotations"]) == (
        {"greeting": "again"},
        {"team": "b"},
        {"topic": "t"},
    )
    assert (status["constraints"], status["secrets"]) == (["node.platform.os==linux"], ["api-key"]), status
    assert (status["limits"], status["readOnlyRootFilesystem"]) == ({"memory": "64Mi"}, True), status
    # --replace: faas-cli removes the function, then deploys it anew (POST).
    replaced = faas(*deploy, *more, "--env", "greeting=replaced", "--replace", "--update=false")
    assert "Deployed. 202 ." in replaced.out, replaced
    faas("ready", "echo")
    status = faas.daemon.status("echo")
    assert (status["envVars"], status["secrets"]) == ({"greeting": "replaced"}, ["api-key"]) and "labels" not in status

    other = faas("deploy", "--image", "x", "--name", "bad", "--fprocess", "cat", "-n", "dev", code=1)
    assert f"Unexpected status: 400, message: {NO_SUCH_NAMESPACE}" in other.out, other
    assert "Function 'bad' failed to deploy with status code: 400" in other.output
    dotted = faas("deploy", "--image", "x", "--name", "a.b", "--fprocess", "cat", code=1)
    assert "service 'a.b' may not contain '.'" in dotted.out, dotted
    no_process = faas("deploy", "--image", "ghcr.io/openfaas/figlet:latest", "--name", "figlet", code=1)
    assert "envProcess is required on the local backend" in no_process.out, no_process

    assert faas("invoke", "echo", stdin="hi").out == "hi"
    listed = faas("list")
    assert _table(listed.out) == [["Function", "Invocations", "Replicas"], ["echo", "1", "1"]], listed
    assert faas("list", "-n", "openfaas-fn").out == listed.out
    assert faas("list", "-q").out == "echo\n"
    verbose = _table(faas("list", "-v").out)
    assert verbose[0] == ["Function", "Image", "Invocations", "Replicas", "CreatedAt"]
    assert verbose[1][:4] == ["echo", "ignored:latest", "1", "1"] and verbose[1][-1] == "UTC", verbose
    assert f"{NO_SUCH_NAMESPACE}" in faas("list", "-n", "dev", code=1).output

    described = faas("describe", "echo").out
    for line in (
        "Name:               echo",
        "Status:             Ready",
        "Replicas:           1",
        "Available Replicas: 1",
        "Invocations:        1",
        "Image:              ignored:latest",
        "Function Process:   cat",
        f"URL:                {url}/function/echo",
        f"Async URL:          {url}/async-function/echo",
        "Constraints:",
        " - node.platform.os==linux",
        "Environment:",
        " greeting: replaced",
        "Secrets:",
        " - api-key",
        "Limits:",
        " Memory: 64Mi",
    ):
        assert line in described.splitlines(), (line, described)
    as_json = json.loads(faas("describe", "echo", "--json", "-n", "openfaas-fn").out)
    assert (as_json["name"], as_json["namespace"], as_json["URL"]) == (
        "echo",
        "openfaas-fn",
        f"{url}/function/echo.openfaas-fn",
    )
    assert NO_SUCH_NAMESPACE in faas("describe", "echo", "-n", "dev", code=1).output
    assert "No such function: ghost" in faas("describe", "ghost", code=1).output

    assert NO_SUCH_NAMESPACE in faas("remove", "echo", "-n", "dev", code=1).output
    removed = faas("remove", "echo", "-n", "openfaas-fn")
    assert removed.out == "Deleting: echo.openfaas-fn\nRemoving old function.\n", removed
    assert "No existing function to remove" in faas("remove", "echo", code=1).output
    assert faas("list", "-q").out == ""


# -- deploy -f stack.yml ---------------------------------------------------------------------------
STACK = textwrap.dedent(
    """\
    version: 1.0
    provider:
      name: openfaas
      gateway: ${OPENFAAS_URL:-http://127.0.0.1:8080}
    functions:
      stack-echo:
        lang: dockerfile
        handler: ./stack-echo
        image: stack-echo:latest
        fprocess: cat
        environment:
          greeting: hi
        labels:
          com.openfaas.scale.min: "1"
      stack-wc:
        lang: dockerfile
        image: stack-wc:latest
        fprocess: wc -c
        namespace: openfaas-fn
      figlet:
        image: ghcr.io/openfaas/figlet:latest
    """
)


def test_deploy_a_stack_file_with_filter_then_list_invoke_remove_by_it(faas: FaasCli) -> None:
    """``lang: dockerfile``/``image:`` entries with ``fprocess`` deploy on the local backend (faas-cli sends
    the image and the fprocess; the image is not run here). An image-only entry cannot run here: a 400
    naming envProcess, and only that function fails."""
    (faas.cwd / "stack.yml").write_text(STACK)
    (faas.cwd / "stack-echo").mkdir()
    url = faas.daemon.url
    deployed = faas("deploy", "-f", "stack.yml", "--filter", "stack-*")
    assert deployed.out.count("Deployed. 202 .") == 2, deployed
    assert f"URL: {url}/function/stack-echo\n" in deployed.out
    assert f"URL: {url}/function/stack-wc.openfaas-fn\n" in deployed.out  # The entry's namespace: faasd's one.
    assert "figlet" not in deployed.output
    faas("ready", "stack-echo")
    faas("ready", "-f", "stack.yml", "stack-wc")
    assert faas.daemon.status("stack-echo")["envVars"] == {"greeting": "hi"}
    assert faas.daemon.status("stack-echo")["labels"] == {"com.openfaas.scale.min": "1"}

    image_only = faas("deploy", "-f", "stack.yml", "--filter", "figlet", code=1)
    assert "Unexpected status: 400, message: envProcess is required on the local backend" in image_only.out
    assert "Function 'figlet' failed to deploy with status code: 400" in image_only.output

    assert faas("invoke", "-f", "stack.yml", "stack-wc", stdin="hello").out.strip() == "5"
    assert faas("list", "-q", "-f", "stack.yml").out == "stack-echo\nstack-wc\n"
    removed = faas("remove", "-f", "stack.yml", "--filter", "stack-*")
    assert "Deleting: stack-echo.\nRemoving old function.\n" in removed.out, removed
    assert "Deleting: stack-wc.openfaas-fn\nRemoving old function.\n" in removed.out, removed
    assert faas("list", "-q").out == ""


# -- invoke (sync) --------------------------------------------------------------------------------
def _calls(daemon: Daemon, name: str) -> float:
    """The gateway's count of 200 answers from ``name`` (the daemon is the module's: read differences)."""
    return daemon.metric("gateway_function_invocation_total", function_name=name, code="200") or 0.0


def test_invoke_with_method_headers_query_namespace_and_errors(faas: FaasCli, invoke_targets: dict[str, str]) -> None:
    """faas-cli (through the OpenFaaS Go SDK) always calls ``/function/<name>.openfaas-fn``: with ``-n``
    or without, that is the function ``<name>``, and what faas-cli sends reaches it as sent."""
    calls = _calls(faas.daemon, "env")

    def request_seen(*args: str, stdin: str = "") -> dict[str, str]:
        out = faas("invoke", "env", *args, stdin=stdin).out
        return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("Http_"))

    seen = request_seen(stdin="body")
    assert seen["Http_Method"] == "POST" and seen["Http_Path"] == "/" and seen["Http_Content_Length"] == "4"
    assert seen["Http_User_Agent"] == "faas-cli/0.18.12 (openfaas; linux; amd64)"
    assert seen["Http_Content_Type"] == "text/plain"
    seen = request_seen("--method", "GET", "--query", "a=1", "--query", "b=two words", "-H", "X-Thing: yes")
    assert seen["Http_Method"] == "GET" and seen["Http_Query"] == "a=1&b=two+words", seen
    assert seen["Http_X_Thing"] == "yes"
    seen = request_seen("-m", "PUT", "--content-type", "application/json", "-n", "openfaas-fn", stdin='{"k": 1}')
    assert (seen["Http_Method"], seen["Http_Content_Type"]) == ("PUT", "application/json"), seen
    # --sign: an HMAC of the body in the header named, which the function can check with the key.
    seen = request_seen("--sign", "X-Signature", "--key", "shared-key", stdin="signed body")
    expected = hmac.new(b"shared-key", b"signed body", hashlib.sha256).hexdigest()
    assert seen["Http_X_Signature"] == f"sha256={expected}", seen
    # A stack file's namespace is where faas-cli looks for the function too.
    (faas.cwd / "invoke.yml").write_text(
        "provider:\n  name: openfaas\nfunctions:\n  env:\n    image: env:latest\n    namespace: openfaas-fn\n"
    )
    assert "Http_Method=POST" in faas("invoke", "-f", "invoke.yml", "env", stdin="x").out
    # Calls by faas-cli and by the plain path are calls of the one function.
    with faas.daemon.client(auth=False) as client:
        assert client.post("/function/env", content=b"x").status_code == 200
    assert _calls(faas.daemon, "env") - calls == 6

    other = faas("invoke", "env", "-n", "dev", stdin="x", code=1)
    assert other.output == f"Server returned unexpected status code: 400 - {NO_SUCH_NAMESPACE}\n\n", other
    ghost = faas("invoke", "ghost", stdin="x", code=1)
    assert ghost.output == "Server returned unexpected status code: 404 - Function not found: ghost\n\n", ghost
    failed = faas("invoke", "fail", stdin="x", code=1)
    assert failed.output == "Server returned unexpected status code: 500 - exit status 3\noops\n\n", failed
    assert _calls(faas.daemon, "env") - calls == 6


# -- invoke --async: tests/compat/test_faas_cli_async.py, on ``invoke_targets`` with a callback server.


# -- secrets ---------------------------------------------------------------------------------------
def test_secret_create_list_update_remove(faas: FaasCli) -> None:
    (faas.cwd / "key.txt").write_text("from-a-file")
    created = faas("secret", "create", "token", stdin="s3cret")
    assert created.out == "Creating secret: token.\nCreated: 201 \n", created
    assert "Created: 201" in faas("secret", "create", "literal", "--from-literal", "lit", "-n", "openfaas-fn").out
    assert "Created: 201" in faas("secret", "create", "aws.key", "--from-file", "key.txt").out
    # faas-cli prints the server's answer and exits 0 for these (as it does against OpenFaaS).
    exists = faas("secret", "create", "token", "--from-literal", "again")
    assert 'secret with the name "token" already exists' in exists.out, exists
    other = faas("secret", "create", "other", "--from-literal", "x", "-n", "dev")
    assert f"server returned unexpected status code: 400 - {NO_SUCH_NAMESPACE}" in other.out, other

    listed = faas("secret", "list")
    assert _table(listed.out) == [["NAME"], ["aws.key"], ["literal"], ["token"]], listed
    assert faas("secret", "ls", "-n", "openfaas-fn").out == listed.out
    assert NO_SUCH_NAMESPACE in faas("secret", "list", "-n", "dev", code=1).output

    assert faas("secret", "update", "token", "--from-literal", "n3w").out == "Updating secret: token\nUpdated: 200 \n"
    assert "unable to find secret: ghost" in faas("secret", "update", "ghost", "--from-literal", "x").out

    # A function sees the secret's current value as a file.
    reader = "sh -c 'cat \"$secret_mount_path/token\"'"  # Local replicas: the secrets' folder is $secret_mount_path.
    faas("deploy", "--image", "x", "--name", "reader", "--fprocess", reader, "--secret", "token")
    faas("ready", "reader")
    assert faas("invoke", "reader", stdin="").out == "n3w"
    in_use = faas("secret", "remove", "token", code=1)
    assert "secret token is used by reader: remove it from them first" in in_use.output, in_use
    faas("remove", "reader")

    assert faas("secret", "remove", "token").out == "Removed.. OK.\n"
    assert faas("secret", "remove", "literal", "-n", "openfaas-fn").out == "Removed.. OK.\n"
    assert NO_SUCH_NAMESPACE in faas("secret", "remove", "aws.key", "-n", "dev", code=1).output
    assert "Unable to find secret: ghost" in faas("secret", "remove", "ghost", code=1).output
    assert _table(faas("secret", "list").out) == [["NAME"], ["aws.key"]]


# -- logs ------------------------------------------------------------------------------------------
def test_logs_lines_json_and_follow(faas: FaasCli, tmp_path: Path) -> None:
    """``--tail=false`` prints what is kept and exits; ``--lines N`` the last N; by default faas-cli follows
    (``--tail``): a line a call writes after it started arrives, and the command runs until stopped."""
    fprocess = "sh -c 'cat; echo called-$Http_Query >&2'"  # stderr goes to the log with combine_output=false.
    faas("deploy", "--image", "x", "--name", "talk", "--fprocess", fprocess, "--env", "combine_output=false")
    faas("ready", "talk")
    faas("invoke", "talk", "--query", "n=1", stdin="x")
    faas("invoke", "talk", "--query", "n=2", stdin="x")

    def called(text: str) -> list[str]:
        return re.findall(r"called-n=\d", text)

    wait_for(lambda: called(faas("logs", "talk", "--tail=false").out) == ["called-n=1", "called-n=2"], 10, "2 calls")
    everything = faas("logs", "talk", "--tail=false").out.splitlines()
    last = faas("logs", "talk", "--tail=false", "--lines", "1").out.splitlines()
    assert len(everything) >= 3 and last == everything[-1:] and "called-n=2" in last[0], (everything, last)
    # Each line: the time it was read, then the text; with --name and --instance, who wrote it.
    named = faas("logs", "talk", "--tail=false", "--lines", "1", "--name", "--instance", "--time-format", "")
    assert named.out.startswith("talk (talk-") and called(named.out) == ["called-n=2"], named
    entry = json.loads(faas("logs", "talk", "--tail=false", "--lines", "1", "--output", "json").out)
    assert (entry["name"], entry["namespace"]) == ("talk", "openfaas-fn") and called(entry["text"]) == ["called-n=2"]
    assert faas("logs", "talk", "--tail=false", "-n", "openfaas-fn", "--lines", "1").out == last[0] + "\n"
    assert called(faas("logs", "talk", "--tail=false", "--since", "10m").out) == ["called-n=1", "called-n=2"]
    assert faas("logs", "talk", "--tail=false", "--since-time", "2999-01-01T00:00:00Z").out == ""
    assert NO_SUCH_NAMESPACE in faas("logs", "talk", "--tail=false", "-n", "dev", code=1).output
    assert "No such function: ghost" in faas("logs", "ghost", "--tail=false", code=1).output

    output = tmp_path / "follow.txt"
    follower = faas.start("logs", "talk", "--lines", "1", output=output)
    wait_for(lambda: "called-n=2" in output.read_text(), 10, "the last line before following")
    faas("invoke", "talk", "--query", "n=3", stdin="x")
    wait_for(lambda: "called-n=3" in output.read_text(), 10, "a new line while following")
    assert follower.poll() is None  # Still following: faasd streams until the client leaves.
    follower.terminate()
    follower.wait(10)
    assert called(output.read_text()) == ["called-n=2", "called-n=3"]


# -- ready, namespaces -----------------------------------------------------------------------------
def test_ready_for_the_gateway_and_for_functions(faas: FaasCli) -> None:
    gateway = faas("ready")
    assert "OpenFaaS gateway is ready" in gateway.out, gateway
    faas("deploy", "--image", "x", "--name", "waited", "--fprocess", "cat")
    ready = faas("ready", "waited", "-n", "openfaas-fn", "--attempts", "100", "--interval", "100ms")
    assert "Waiting for function waited.openfaas-fn" in ready.out and "Function waited is ready" in ready.out
    other = faas("ready", "waited", "-n", "dev", "--attempts", "1", "--interval", "100ms", code=1)
    assert (
        f"[1/1] Error getting function info: server returned unexpected status code: 400 - {NO_SUCH_NAMESPACE}"
        in other.output
    ), other
    missing = faas("ready", "ghost", "--attempts", "2", "--interval", "100ms", code=1)
    assert "[2/2] Error getting function info: no such function: ghost" in missing.output, missing
    assert "Function ghost not ready after:" in missing.output


def test_namespaces(faas: FaasCli) -> None:
    assert faas("namespace", "list").out == "Namespaces:\n - openfaas-fn\n"
    assert faas("namespaces").out == "Namespaces:\n - openfaas-fn\n"  # Deprecated spelling, same answer.
    assert json.loads(faas("namespace", "list", "--json").out) == ["openfaas-fn"]
    assert faas("namespace", "get", "openfaas-fn").out.strip() == "Name: openfaas-fn"
    assert faas("namespace", "get", "dev", code=1).output == "Namespace dev not found\n"
    refusal = "faasd has one namespace, openfaas-fn: namespaces cannot be created, changed or removed"
    for args in (("create", "dev"), ("update", "openfaas-fn", "--label", "a=b"), ("remove", "openfaas-fn")):
        answer = faas("namespace", *args, code=1)
        assert f"Unexpected status code: 400, message: {json.dumps(refusal + chr(10))}" in answer.output, answer
    assert faas("namespace", "list").out == "Namespaces:\n - openfaas-fn\n"
