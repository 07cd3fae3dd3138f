"""``max_output_bytes`` in every mode (docs/watchdog.md): the most function output the watchdog holds
in memory for one call.

* fork: the whole answer is held -- past the limit the process group is killed, 502
  (``test_watchdog_errors.py`` floods stdout; here stderr with ``combine_output=false``);
* streaming: stdout is streamed, never held; what is held (stderr with ``combine_output=false``) is
  capped the same way;
* http: answers are held up to the limit (at most 1 MiB), bigger ones are relayed as they come;
* python: the handler's answer is held whole -- past the limit 502, whether the worker notices it
  (a returned value, an exception's message) or a handler writes a frame that claims more (killed).

Issue 11: python mode held whatever ``handle()`` returned.
"""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.test_watchdog_modes_http import start_http
from tests.e2e.test_watchdog_modes_python import pid_of, start_python
from tests.helpers import RawConnection, http_request, process_alive, read_pid_file, rss_bytes, scaled, wait_for

LIMIT = "1m"
LIMIT_BYTES = 1024 * 1024
OVER_MESSAGE = f"Function output exceeded max_output_bytes ({LIMIT_BYTES} bytes)"
RSS_BOUND_BYTES = 100 * 1024 * 1024


def sh(script: str) -> str:
    return "sh -c " + shlex.quote(script)


@pytest.mark.parametrize("mode", ["fork", "streaming"])
def test_stderr_flood_kept_apart_gives_502_in_fork_and_streaming(start_watchdog, tmp_path: Path, mode: str):
    pidfile = tmp_path / "pid"
    watchdog = start_watchdog(
        sh('echo $$ > "$PIDFILE"; exec cat /dev/zero >&2'),
        mode=mode,
        combine_output="false",
        max_output_bytes=LIMIT,
        PIDFILE=str(pidfile),
    )
    response = watchdog.request("GET", "/")
    assert response.status_code == 502, response.text[:300]
    assert response.text.strip() == OVER_MESSAGE + "; process killed"
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 2.0, f"flooding process {pid} still alive")
    assert rss_bytes(watchdog.pid) < RSS_BOUND_BYTES


def test_streaming_stdout_is_not_held_so_not_capped(start_watchdog):
    watchdog = start_watchdog("head -c 3000000 /dev/zero", mode="streaming", max_output_bytes=LIMIT)
    response = watchdog.request("GET", "/")
    assert (response.status_code, len(response.content)) == (200, 3_000_000)


def _head_arrives_before_the_upstream_finishes(port: int, size: int, pause_s: float) -> float:
    """Seconds from sending a /trickle call until the answer's head arrives (the upstream pauses
    ``pause_s`` halfway through the body)."""
    with RawConnection(port, timeout=10.0) as conn:
        started = time.monotonic()
        conn.send(http_request("GET", f"/trickle?n={size}&s={pause_s}"))
        conn.sock.recv(1, socket.MSG_PEEK)
        waited = time.monotonic() - started
        response = conn.read_response()
    assert (response.status, len(response.body)) == (200, size)
    return waited


def test_http_answers_over_the_limit_are_relayed_as_they_come(start_watchdog):
    pause_s = 2.0  # The bound tells two behaviours apart (head before or after the pause): not scaled.
    small_limit = start_http(start_watchdog, max_output_bytes="64k")
    waited = _head_arrives_before_the_upstream_finishes(small_limit.port, 300_000, pause_s)
    assert waited < pause_s / 2, f"an answer over max_output_bytes was held {waited:.2f}s instead of relayed"
    # Same answer, under the default limit: held whole, so its head waits for the end of the body.
    default_limit = start_http(start_watchdog)
    waited = _head_arrives_before_the_upstream_finishes(default_limit.port, 300_000, pause_s)
    assert waited >= pause_s * 0.9, f"an answer under max_output_bytes was answered after {waited:.2f}s"


def test_python_answer_over_the_limit_is_502_and_the_worker_stays(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_output_bytes=LIMIT)
    before = pid_of(watchdog)["pid"]
    at_limit = watchdog.request("GET", f"/big?bytes={LIMIT_BYTES}")
    assert (at_limit.status_code, len(at_limit.content)) == (200, LIMIT_BYTES)
    for path in (f"/big?bytes={LIMIT_BYTES + 1}", "/big?bytes=50000000", "/raise-big?bytes=50000000"):
        response = watchdog.request("GET", path)
        assert response.status_code == 502, (path, response.status_code, response.text[:200])
        assert response.text.strip() == OVER_MESSAGE, response.text[:200]
    assert rss_bytes(watchdog.pid) < RSS_BOUND_BYTES
    assert pid_of(watchdog)["pid"] == before, "the worker refused its own answer: no need to replace it"


def test_python_frame_claiming_more_than_the_limit_kills_the_worker(start_watchdog):
    watchdog = start_python(start_watchdog, workers="1", max_output_bytes=LIMIT)
    before = pid_of(watchdog)["pid"]
    started = time.monotonic()
    response = watchdog.request("GET", "/garbage")
    assert response.status_code == 502, response.text
    assert response.text.strip() == OVER_MESSAGE + "; worker killed"
    assert time.monotonic() - started < scaled(5.0), "the call waited for the handler instead of being cut"
    wait_for(lambda: not process_alive(before), 3.0, f"worker {before} still alive")
    wait_for(lambda: watchdog.request("GET", "/pid").status_code == 200, 10.0, "a replacement worker")
    assert pid_of(watchdog)["pid"] != before


@pytest.mark.parametrize(("code", "status", "body"), [(204, 204, b""), (99, 502, None), (1000, 502, None)])
def test_python_status_codes_that_cannot_carry_the_answer(start_watchdog, code: int, status: int, body):
    watchdog = start_python(start_watchdog, workers="1")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", f"/status?code={code}") + http_request("GET", "/return/str"))
        first = conn.read_response()
        second = conn.read_response()
    assert first.status == status, first.text
    if body is not None:
        assert first.body == body
    else:
        assert first.text.strip() == f"Function returned an invalid status code: {code}"
    assert (second.status, second.text) == (200, "plain text ✓"), "the connection's framing was broken"
