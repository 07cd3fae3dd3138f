"""Fuzz every operation of the daemon's own ``/openapi.json`` with schemathesis, against a real daemon
with auth on: schema-valid (positive) and schema-violating (negative) requests for each operation.

Every answer is checked for: no 5xx (``not_a_server_error``), a status the document lists for that
operation, a body and headers that match its schema and content type, and -- faasd's own rule -- every
error written by the gateway is one line of ``text/plain`` saying why. All failures are collected and
reported together (with the request that caused each), rather than stopping at the first.

The fuzzer is steered, never fenced off: a quarter of the generated function names are replaced by
the function deployed for the run (so the deep paths -- status, scaling, logs, invoke -- are reached,
not only their 404s); on the invoke paths half of those are spelt ``fuzzme.openfaas-fn``, OpenFaaS's
``name.namespace``. Likewise a quarter of the snippet ids on ``/api/*`` are the run's snippet (which
``DELETE /api/gen/{id}`` may delete: later cases then get its 404). Errors under ``/api/`` are JSON
(``{"error": "<one line>"}``), the rest one line of text. Two things are held back, because they would
make the run meaningless rather than harder: ``follow=true`` on ``/system/logs`` (a stream that ends
only when the client leaves) is sent as ``false``, and a scale of *that* function asks for at most 2
replicas (100 real processes of it would measure the machine, not the API). Every other field is fuzzed
as generated.

Every request goes on one keep-alive session (requests.Session): a connection answered before its
body was read must stay usable or be closed, never hang the next request. Bounded: ``FUZZ_EXAMPLES``
examples per operation and mode (30 operations x 2 modes: about 500 requests, 25-35 s on 2 cores, longer when the
machine is busy), each request with a 10 s timeout. ``FAASD_FUZZ_SEED`` replays a run (the seed is
printed, and is in the failure message).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.daemon_fixtures import StartDaemon, basic_auth
from tests.reliability.ledger import Entry

FUZZ_EXAMPLES = int(os.environ.get("FAASD_FUZZ_EXAMPLES", "10"))
"""Examples per operation and generation mode."""
REQUEST_TIMEOUT_S = 10.0
TARGET = "fuzzme"
"""The function deployed for the run; generated names are sometimes replaced by it."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]


@dataclass
class Findings:
    """What went wrong, per operation; a few examples each."""

    failures: dict[str, list[str]] = field(default_factory=dict)
    requests: int = 0
    """Requests answered."""
    unanswered: int = 0
    failed: int = 0
    """Answered requests with at least one problem."""
    negative: int = 0
    """Answered requests that violate the schema on purpose (the rest are valid but random)."""
    statuses: dict[int, int] = field(default_factory=dict)
    unsatisfiable: list[str] = field(default_factory=list)

    def add(self, label: str, problem: str) -> None:
        found = self.failures.setdefault(label, [])
        if len(found) < 3 and problem not in found:
            found.append(problem)


def summary_of(findings: Findings, seed: int, started: float) -> str:
    statuses = sorted(findings.statuses.items())
    return (
        f"seed {seed}: {findings.requests} requests in {time.monotonic() - started:.1f}s, statuses {statuses}; "
        f"no case to generate: {findings.unsatisfiable}"
    )


def _one_line_reason(response: Any, method: str, api: bool = False) -> str | None:
    """faasd's rule for its own errors: one line of text/plain that says something (under ``/api/``: a
    JSON object whose ``error`` is such a line). An answer to HEAD has no body (RFC 9110, 9.3.2): there
    the rule is the type and an empty body.

    ``response`` is schemathesis's (headers: lowercase names, list values; ``content``: bytes).
    """
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    text = response.content.decode("utf-8", "replace")
    if api:
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if not content_type.startswith("application/json") or not isinstance(error, str) or "\n" in error:
            return f"{response.status_code} is not a JSON one-line error: {content_type!r} {text[:300]!r}"
        return None
    if not content_type.startswith("text/plain"):
        return f"{response.status_code} with Content-Type {content_type!r} (want text/plain)"
    if method.upper() == "HEAD":
        return f"{response.status_code} to HEAD with a body: {text[:300]!r}" if text else None
    if not text.strip() or text.count("\n") != 1 or not text.endswith("\n"):
        return f"{response.status_code} reason is not one line: {text[:300]!r}"
    return None


def _steer(case: Any, use_target: bool, qualified: bool, snippet: str) -> None:
    """Point a share of cases at the deployed function (by its name, or on the invoke paths as often as
    ``name.openfaas-fn``) and at the run's snippet; keep streams finite and scales small."""
    if use_target and "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = snippet
    if use_target and "functionName" in (case.path_parameters or {}):
        invoke = case.operation.path.startswith("/function/")
        case.path_parameters["functionName"] = f"{TARGET}.openfaas-fn" if invoke and qualified else TARGET
    query = case.query if isinstance(case.query, dict) else None
    if query is not None and "follow" in query:
        query["follow"] = "false"
    if query is not None and use_target and case.operation.path == "/system/logs":
        query["name"] = TARGET
    if (
        case.operation.path == "/system/scale-function/{functionName}"
        and (case.path_parameters or {}).get("functionName") == TARGET
        and isinstance(case.body, dict)
        and isinstance(case.body.get("replicas"), int)
        and not isinstance(case.body.get("replicas"), bool)
    ):
        case.body["replicas"] = case.body["replicas"] % 3


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    *,
    seed: int,
    session: requests.Session,
    headers: dict[str, str],
    findings: Findings,
    snippet: str,
) -> None:
    """Run FUZZ_EXAMPLES generated cases of one operation; record every problem in ``findings``."""

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(
        case=operation.as_strategy(mode),
        use_target=st.integers(0, 3).map(lambda n: n == 0),
        qualified=st.booleans(),
    )
    def fuzz(case: Any, use_target: bool, qualified: bool) -> None:
        _steer(case, use_target, qualified, snippet)
        label = f"{case.operation.label} [{mode.value}]"
        try:
            response = case.call(session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            findings.add(label, f"no answer: {type(exc).__name__}: {exc}\n{case.as_curl_command()}")
            findings.unanswered += 1
            return
        findings.requests += 1
        findings.negative += mode is GenerationMode.NEGATIVE
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        failed = False
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup of its checks.
            findings.add(label, f"{str(exc).strip()[:1500]}\n{case.as_curl_command()}")
            failed = True
        # The fuzzed function (cat) never answers >= 400 itself, nor does the snippet (it returns its arguments).
        problem = _one_line_reason(response, case.method, api=case.operation.path.startswith("/api/"))
        if problem:
            findings.add(label, f"{problem}\n{case.as_curl_command()}")
            failed = True
        findings.failed += failed

    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        findings.unsatisfiable.append(f"{operation.label} [{mode.value}]")  # e.g. nothing to negate in GET /


@pytest.mark.slow
def test_fuzz_every_operation(start_daemon: StartDaemon, ledger: Entry) -> None:
    daemon = start_daemon()
    daemon.deploy(TARGET, "cat")
    with daemon.client() as client:
        assert client.post("/system/secrets", json={"name": "fuzz-secret", "value": "v"}).status_code == 201
        uploaded = client.post("/api/gen", content=b"def callme(**kwargs):\n    return sorted(kwargs)\n")
        assert uploaded.status_code == 200, uploaded.text
        snippet = uploaded.json()["id"]
    schema = schemathesis.openapi.from_url(f"{daemon.url}/openapi.json", timeout=10)
    seed = int(os.environ.get("FAASD_FUZZ_SEED") or random.randrange(2**32))
    findings = Findings()
    auth = {"Authorization": basic_auth()}
    session = requests.Session()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    with daemon.client() as client:
        documented = sum(len(item) for item in client.get("/openapi.json").json()["paths"].values())
    # schemathesis leaves out the document's own route (GET /openapi.json); every other one is fuzzed.
    assert len(operations) == documented - 1, sorted(operation.label for operation in operations)
    print(f"fuzzing {len(operations)} operations with seed {seed}")
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if daemon.proc.poll() is None:
                _fuzz(operation, mode, seed=seed, session=session, headers=auth, findings=findings, snippet=snippet)
    session.close()
    ledger.bad_input(findings.negative)
    ledger.calls(findings.requests + findings.unanswered, findings.failed + findings.unanswered, findings.unanswered)
    report = "\n\n".join(f"== {label}\n" + "\n--\n".join(problems) for label, problems in findings.failures.items())
    if daemon.proc.poll() is not None:
        pytest.fail(f"the daemon died during the fuzz run:\n{daemon.logs()[-3000:]}\nFound before:\n{report}")
    with daemon.client() as client:
        assert client.get("/healthz").status_code == 200
    tracebacks = daemon.logs().count("Traceback")
    summary = summary_of(findings, seed, started)
    print(summary)
    assert not findings.failures, f"{summary}\n{report}"
    assert tracebacks == 0, f"{summary}: the daemon logged {tracebacks} tracebacks:\n{daemon.logs()[-5000:]}"
