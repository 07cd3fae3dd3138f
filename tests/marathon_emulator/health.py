"""Health checks, actually probed, with the documented timing and kill rules.

From `Health Checks and Task Termination <https://mesosphere.github.io/marathon/docs/health-checks.html>`_
and healthCheck.raml:

* ``HTTP``/``HTTPS``/``MESOS_HTTP``/``MESOS_HTTPS``: ``GET <path>`` on ``127.0.0.1`` at the task's host
  port ``portIndex`` (or ``port``); passing means a status 200-399 within ``timeoutSeconds``.
  ``ignoreHttp1xx`` (HTTP/HTTPS) discards a 1xx answer. HTTPS does not verify the certificate.
* ``TCP``/``MESOS_TCP``: a connection within ``timeoutSeconds``.
* ``COMMAND``: ``/bin/sh -c <command.value>`` with the task's environment exits 0 within ``timeoutSeconds``.
* First probe: Marathon-level kinds (HTTP, HTTPS, TCP) after ``min(intervalSeconds, 5)`` s (their
  ``delaySeconds`` "has NOT been implemented"); Mesos-level kinds after ``delaySeconds``; then every
  ``intervalSeconds`` (at least :data:`MIN_INTERVAL_S` here, so ``0`` cannot spin).
* Failures are ignored (not counted, no result) within ``gracePeriodSeconds`` of the task's start
  until its first success.
* Killing: Marathon-level kinds kill after ``maxConsecutiveFailures`` consecutive failures, ``0``
  meaning never; Mesos-level kinds kill once failures reach ``maxConsecutiveFailures``, so ``0`` kills
  on the first failure (the documented difference).

A result has the documented ``Health`` fields: ``alive``, ``consecutiveFailures``, ``firstSuccess``,
``lastSuccess``, ``lastFailure``, ``lastFailureCause``, ``instanceId``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from tests.marathon_emulator.clock import iso_now
from tests.marathon_emulator.tasks import Task

__all__ = ["MIN_INTERVAL_S", "Outcome", "check_loop", "probe", "should_kill"]

MIN_INTERVAL_S = 0.1
MARATHON_LEVEL = ("HTTP", "HTTPS", "TCP")
FIRST_CHECK_AFTER_MAX_S = 5.0
_MAX_STATUS_LINE = 1024


@dataclass(frozen=True)
class Outcome:
    """One probe: passed, failed (with the cause), or ignored (a discarded 1xx)."""

    passed: bool
    cause: str = ""
    ignored: bool = False


def _port(check: dict[str, Any], task: Task) -> int | None:
    if check.get("port"):
        return int(check["port"])
    index = check.get("portIndex", 0)
    return task.ports[index] if index < len(task.ports) else None


async def _http(check: dict[str, Any], host: str, port: int, tls: bool) -> Outcome:
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            stream = trio.SSLStream(stream, context, server_hostname=host)
        path = check.get("path") or "/"
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head and len(head) < _MAX_STATUS_LINE:
            chunk = await stream.receive_some(_MAX_STATUS_LINE)
            if not chunk:
                break
            head += chunk
    finally:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.aclose()
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return Outcome(False, "no HTTP status line in the answer")
    status = int(parts[1])
    if 100 <= status < 200 and check.get("ignoreHttp1xx"):
        return Outcome(False, ignored=True)
    if 200 <= status < 400:
        return Outcome(True)
    return Outcome(False, f"HTTP status {status}")


async def _command(check: dict[str, Any], env: dict[str, str], cwd: str | None) -> Outcome:
    process = await trio.lowlevel.open_process(
        ["/bin/sh", "-c", check["command"]["value"]],
        env=env,
        cwd=cwd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()
    return Outcome(True) if code == 0 else Outcome(False, f"command exited with status {code}")


async def probe(check: dict[str, Any], task: Task, env: dict[str, str]) -> Outcome:
    """Run one check against ``task`` within its ``timeoutSeconds``."""
    protocol = check["protocol"]
    timeout = max(float(check.get("timeoutSeconds", 20)), 0.001)
    try:
        with trio.fail_after(timeout):
            if protocol == "COMMAND":
                return await _command(check, env, str(task.sandbox) if task.sandbox else None)
            port = _port(check, task)
            if port is None:
                return Outcome(False, f"the task has no port index {check.get('portIndex', 0)}")
            if protocol in ("TCP", "MESOS_TCP"):
                stream = await trio.open_tcp_stream(task.host, port)
                await stream.aclose()
                return Outcome(True)
            return await _http(check, task.host, port, tls=protocol in ("HTTPS", "MESOS_HTTPS"))
    except trio.TooSlowError:
        return Outcome(False, f"no answer within {timeout:g}s")
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}")


def _record(result: dict[str, Any] | None, outcome: Outcome, instance_id: str) -> dict[str, Any]:
    now = iso_now()
    result = dict(result) if result else {"alive": False, "consecutiveFailures": 0, "instanceId": instance_id}
    if outcome.passed:
        result.update(alive=True, consecutiveFailures=0, lastSuccess=now)
        result.setdefault("firstSuccess", now)
    else:
        result.update(alive=False, lastFailure=now, lastFailureCause=outcome.cause)
        result["consecutiveFailures"] += 1
    return result


def should_kill(check: dict[str, Any], failures: int) -> bool:
    """The documented kill rule after ``failures`` consecutive failures."""
    limit = int(check.get("maxConsecutiveFailures", 3))
    if check["protocol"] in MARATHON_LEVEL:
        return limit > 0 and failures >= limit
    return failures >= limit


async def check_loop(
    task: Task,
    index: int,
    env: dict[str, str],
    on_result: Callable[[Task, int, dict[str, Any] | None, bool], None],
) -> None:
    """Probe check ``index`` of ``task``'s app for as long as the task runs (cancel to stop).

    After each counted probe the new result is in ``task.health[index]`` and ``on_result(task, index,
    previous, kill)`` is called with the result before it; ``kill`` tells that the kill rule fired.
    """
    check = task.app["healthChecks"][index]
    interval = max(float(check.get("intervalSeconds", 60)), MIN_INTERVAL_S)
    if check["protocol"] in MARATHON_LEVEL:
        first = min(interval, FIRST_CHECK_AFTER_MAX_S)
    else:
        first = float(check.get("delaySeconds", 15))
    started = trio.current_time()
    grace = float(check.get("gracePeriodSeconds", 300))
    await trio.sleep(first)
    while True:
        outcome = await probe(check, task, env)
        result = task.health[index]
        in_grace = trio.current_time() - started < grace and not (result or {}).get("firstSuccess")
        if not outcome.ignored and (outcome.passed or not in_grace):
            recorded = task.health[index] = _record(result, outcome, task.instance_id)
            kill = not outcome.passed and should_kill(check, recorded["consecutiveFailures"])
            on_result(task, index, result, kill)
        await trio.sleep(interval)
