"""Faults against a real daemon on the local backend: a replica killed under load, the daemon killed
with SIGKILL in the middle of writes, and functions that misbehave while others are called.

What each misbehaving function gets (docs/watchdog.md, "Responses"; the gateway's answers:
faasd/gateway/invoke.py), and the setting that bounds it:

=========================== ===================================== =========================================
the function                the call gets                         bounded by
=========================== ===================================== =========================================
hangs                       408 ``Killed process: exceeded        its ``exec_timeout`` (the watchdog kills
                            exec_timeout of 1s``                  its process group)
hangs, longer than the      502 ``Function replica ... did not    the daemon's ``upstream_timeout``
gateway waits               answer within 2s``                    (502, as the OpenFaaS gateway answers)
crashes (SIGSEGV)           500 ``killed by signal SIGSEGV``      --
floods stdout               502 ``Function output exceeded        its ``max_output_bytes`` (process killed)
                            max_output_bytes ...``
forks without end           with a pids cgroup: 500 ``Killed      ``com.faasd.limits.processes``
                            process: it filled its replica's      (the replica cgroup's pids.max; without
                            process limit ...``, then 429 while   one RLIMIT_NPROC with a uid of its own:
                            its replica cools down; else 408      needs one of them)
                            (its ``exec_timeout``) or 500
                            ``Cannot start process: ...``
eats memory                 500 ``exit status 1`` and its         ``limits.memory`` (RLIMIT_AS; on
                            ``MemoryError`` (on cgroup v2: 500    cgroup v2 the replica's memory.max)
                            ``killed by signal SIGKILL: out of
                            memory ...``)
kills its own watchdog      502 for that call; 503 for calls      the replica is replaced (backoff), calls
                            held past ``ready_timeout`` while     wait up to ``ready_timeout``
                            it restarts
=========================== ===================================== =========================================

In every case the other functions keep their latency: the p99 of calls to a reference function while
the fault runs stays within :data:`P99_FACTOR` of its p99 without it, measured in the same run over
:data:`ROUNDS` interleaved pairs of windows (calm, fault, calm, fault, ...; :data:`MORE_ROUNDS` more, judged
together with them, when those come out over the bound) so that a change in the
machine's load counts against both sides alike. The misbehaving function is called at a bounded rate
(:data:`FAULT_PAUSE_S`). On a loaded machine a p99 is noisy: rerun a failure alone before reading
anything into it (tests/README.md).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.fault_load import ProcessLoad
from tests.helpers import Load, in_thread, must_run_everything, process_alive, scaled, wait_for
from tests.process_tree import cmdline, proc_table
from tests.reliability.ledger import Entry

P99_FACTOR = 2.0
"""Issue 11: the others' p99 stays within 2x of before during the fault."""
REPLACED_S = 2.0
"""A killed replica is replaced (a new one ready) within this (scaled)."""
FAILED_SHARE = 0.01
"""At most 1 % of calls may fail while replicas are killed under them."""


# -- the process tree ---------------------------------------------------------------------------


def watchdogs(daemon: Daemon) -> list[int]:
    """The replica watchdogs: each child of the daemon, or in a sandbox (``setsid`` -> ``bwrap`` ->
    ...), the deepest process below it that runs ``faasd.pyz ... watchdog``."""
    table = proc_table()
    below: dict[int, list[int]] = {}
    for info in table.values():
        below.setdefault(info.ppid, []).append(info.pid)
    found = []
    for child in below.get(daemon.pid, []):
        chain, pid = [], child
        while True:
            if "watchdog" in cmdline(pid) and "faasd" in cmdline(pid):
                chain.append(pid)
            kids = [kid for kid in below.get(pid, []) if table[kid].alive]
            if len(kids) != 1:
                break
            pid = kids[0]
        if chain:
            found.append(chain[-1])
    return sorted(found)


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- a replica killed under load ------------------------------------------------------------------


def _echo(counter: itertools.count[int]) -> Callable[[httpx.Client], httpx.Response]:
    def call(client: httpx.Client) -> httpx.Response:
        body = f"call-{next(counter)}".encode()
        response = client.post("/function/echo", content=body)
        if response.status_code == 200 and response.content != body:
            response.status_code = 599  # Answered, but not with what was sent: a failure.
        return response

    return call


@pytest.mark.slow
def test_killed_replicas_are_replaced_under_load(start_daemon: StartDaemon, ledger: Entry) -> None:
    """Three times, a replica's watchdog is killed (SIGKILL) under load: a new one is ready within
    REPLACED_S, at most 1 % of all calls fail, and every call gets an answer."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat", labels={"com.openfaas.scale.min": "2"})
    daemon.wait_available("echo", 2)
    took: list[float] = []
    with Load(lambda: daemon.client(auth=False), _echo(itertools.count()), workers=4) as load:
        load.wait_ok(100, timeout=30)
        for _ in range(3):
            [victim, *_] = watchdogs(daemon)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            ledger.fault("replica killed (SIGKILL) under load")

            def replaced(victim: int = victim) -> bool:
                current = watchdogs(daemon)
                return (
                    not process_alive(victim)
                    and len(current) == 2
                    and victim not in current
                    and daemon.status("echo")["availableReplicas"] == 2
                )

            wait_for(replaced, 10, lambda v=victim: f"a replica to replace {v}: {watchdogs(daemon)}", 0.01)
            took.append(time.monotonic() - killed)
            load.wait_ok(300, timeout=30)
    ledger.load(load)
    print(f"replaced in {[f'{t:.2f}s' for t in took]}; {load.summary()}")
    assert max(took) <= scaled(REPLACED_S), f"a replica took {max(took):.2f}s to be replaced: {took}"
    unanswered = {outcome: n for outcome, n in load.outcomes.items() if not outcome.isdigit()}
    assert not unanswered, f"calls with no answer: {load.summary()}"
    assert load.failed <= FAILED_SHARE * load.calls, load.summary()


# -- the daemon killed with SIGKILL in the middle of writes ---------------------------------------


@dataclass
class Writes:
    """The writes made, in order: each acknowledged one, and the one cut by the kill (if any)."""

    acked: list[tuple[str, ...]] = field(default_factory=list)
    cut: tuple[str, ...] | None = None
    error: str = ""


def _write_plan(functions: int) -> list[tuple[str, ...]]:
    """Deploy, create a secret, scale, update, update the secret -- per function, interleaved."""
    plan: list[tuple[str, ...]] = []
    for step in ("deploy", "secret", "scale", "update", "secret-update"):
        for n in range(functions):
            plan.append((step, str(n)))
    return plan


def _write(client: httpx.Client, step: str, n: str) -> httpx.Response:
    if step == "deploy":
        return client.post("/system/functions", json={"service": f"f{n}", "envProcess": "cat"})
    if step == "update":
        spec = {"service": f"f{n}", "envProcess": "cat", "envVars": {"generation": "2"}}
        return client.put("/system/functions", json=spec)
    if step == "scale":
        return client.post(f"/system/scale-function/f{n}", json={"serviceName": f"f{n}", "replicas": 2})
    if step == "secret":
        return client.post("/system/secrets", json={"name": f"s{n}", "value": f"value-{n}-1"})
    assert step == "secret-update"
    return client.put("/system/secrets", json={"name": f"s{n}", "value": f"value-{n}-2"})


def _writer(daemon: Daemon, plan: list[tuple[str, ...]], writes: Writes) -> None:
    """Make the writes in order until one gets no answer (the daemon is gone)."""
    with daemon.client(timeout=30) as client:
        for step, n in plan:
            try:
                response = _write(client, step, n)
            except httpx.HTTPError as exc:
                writes.cut, writes.error = (step, n), repr(exc)
                return
            assert response.status_code in (200, 201, 202), f"{step} {n}: {response.status_code} {response.text}"
            writes.acked.append((step, n))


@pytest.mark.slow
def test_sigkill_of_the_daemon_mid_writes_loses_no_acknowledged_write(
    start_daemon: StartDaemon, tmp_path: Path, ledger: Entry
) -> None:
    """Deploys, updates, scales and secret writes go on while the daemon is killed with SIGKILL at a
    random point; after a restart on the same state dir every acknowledged write is there (a function's
    spec and replicas, a secret's latest value), and every function is back and answers."""
    seed = int(os.environ.get("FAASD_RELIABILITY_SEED") or random.randrange(2**32))
    kill_after = random.Random(seed).randrange(8, 26)
    print(f"seed {seed}: SIGKILL after {kill_after} acknowledged writes")
    functions = 6
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    writes = Writes()
    done = in_thread(lambda: _writer(daemon, _write_plan(functions), writes), "writer")
    wait_for(lambda: len(writes.acked) >= kill_after or done.done(), 60, lambda: f"{kill_after} writes: {writes}")
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    ledger.fault("daemon killed (SIGKILL) mid-writes")
    done.result(timeout=scaled(30))
    acked = list(writes.acked)
    assert len(acked) < 5 * functions, f"the writer finished before the kill (seed {seed})"
    print(f"{len(acked)} writes acknowledged; cut by the kill: {writes.cut} ({writes.error})")

    restarted = start_daemon(state_dir=state)
    lost = _vanished(restarted, acked, writes.cut)
    ledger.calls(len(acked) + 1, failed=1 if writes.cut else 0)  # The write in flight had no answer: the fault.
    ledger.lost(len(lost), "acknowledged writes gone after the restart")
    assert not lost, f"seed {seed}: acknowledged before the SIGKILL, gone after the restart: {lost}"


def _vanished(daemon: Daemon, acked: list[tuple[str, ...]], cut: tuple[str, ...] | None) -> list[str]:
    """Every acknowledged write that the restarted ``daemon`` does not show; also checks that every
    function is back (its replicas ready, answering)."""
    done = {write for write in acked}
    maybe = {cut} if cut else set()
    lost: list[str] = []
    deployed = sorted(n for step, n in done if step == "deploy")
    with daemon.client() as client:
        listed = {item["name"]: item for item in client.get("/system/functions").json()}
        for n in deployed:
            name = f"f{n}"
            if name not in listed:
                lost.append(f"deploy of {name}")
                continue
            status = listed[name]
            if ("update", n) in done and status.get("envVars", {}).get("generation") != "2":
                lost.append(f"update of {name}: envVars {status.get('envVars')}")
            if ("update", n) not in done | maybe and status.get("envVars"):
                lost.append(f"{name} has envVars nobody acknowledged: {status.get('envVars')}")
            if ("scale", n) in done and status["replicas"] != 2:
                lost.append(f"scale of {name} to 2: replicas {status['replicas']}")
            if ("scale", n) not in done | maybe and status["replicas"] != 1:
                lost.append(f"{name} has {status['replicas']} replicas; nobody asked for more than 1")
            replicas = status["replicas"]
            daemon.wait_available(name, replicas, timeout=30)
            answer = client.post(f"/function/{name}", content=f"back-{n}".encode())
            if (answer.status_code, answer.text) != (200, f"back-{n}"):
                lost.append(f"{name} does not answer after the restart: {answer.status_code} {answer.text[:200]}")
        secrets = sorted(n for step, n in done if step == "secret")
        listed_secrets = {item["name"] for item in client.get("/system/secrets").json()}
        lost += [f"secret s{n}" for n in secrets if f"s{n}" not in listed_secrets]
        present = [n for n in secrets if f"s{n}" in listed_secrets]
        if present:  # Their values, as a function sees them.
            names = [f"s{n}" for n in present]
            script = 'for s in "$@"; do printf "%s=%s\\n" "$s" "$(cat "$secret_mount_path/$s")"; done'
            daemon.deploy("reader", f"sh -c '{script}' reader {' '.join(names)}", secrets=names)
            text = client.post("/function/reader").text
            values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            for n in present:
                want = {f"value-{n}-2"} if ("secret-update", n) in done else {f"value-{n}-1"}
                if ("secret-update", n) == cut:
                    want.add(f"value-{n}-2")  # Made or not: its answer never came.
                if values.get(f"s{n}") not in want:
                    lost.append(f"secret s{n}: {values.get(f's{n}')!r}, want one of {sorted(want)}")
    return lost


# -- functions that misbehave while others are called ---------------------------------------------


@dataclass(frozen=True)
class Misbehaviour:
    """A function that misbehaves: its spec, and the statuses its calls must get."""

    spec: dict[str, Any]
    expect: frozenset[int]
    needs_process_limit: bool = False


KILL_OWN_WATCHDOG = (
    """sh -c 'case "$(tr "\\0" " " < /proc/$PPID/cmdline)" in """
    """*faasd.pyz*" watchdog ") kill -9 $PPID;; esac'"""
)
"""``kill -9 $PPID`` only while the parent is still the watchdog: once it is dead the shell's parent is
whoever adopted it -- init, or (without a PID namespace, sandbox=none) the test process itself, which is
a child subreaper while a daemon fixture is active (tests/process_tree.py)."""

MISBEHAVIOURS = {
    "hangs": Misbehaviour({"envProcess": "sleep 3600", "envVars": {"exec_timeout": "1s"}}, frozenset({408})),
    "hangs past the gateway's timeout": Misbehaviour(
        # No timeout of its own, so the gateway waits upstream_timeout (2 s) and answers 502 while the
        # watchdog's default bound (write_timeout, 30 s) still runs; one of its own would raise the wait.
        {"envProcess": "sleep 3600"},
        frozenset({502}),
    ),
    "crashes": Misbehaviour({"envProcess": "sh -c 'kill -SEGV $$'"}, frozenset({500})),
    "floods stdout": Misbehaviour({"envProcess": "yes", "envVars": {"max_output_bytes": "1m"}}, frozenset({502})),
    "forks without end": Misbehaviour(
        {
            "envProcess": "sh -c 'while :; do sleep 100 & done'",
            "envVars": {"exec_timeout": "1s"},  # The gateway waits 1 s + ANSWER_GRACE_S: 408, not 502.
            "labels": {"com.faasd.limits.processes": "64"},
        },
        frozenset({408, 429, 500}),
        needs_process_limit=True,
    ),
    "eats memory": Misbehaviour(
        {
            # At most 1 GB even where no limit applies: the test fails then, the machine survives.
            "envProcess": "python3 -c 'a = [bytearray(10**7) for _ in range(100)]'",
            "envVars": {"exec_timeout": "10s"},
            "limits": {"memory": "128M"},
        },
        frozenset({500}),
    ),
    "kills its own watchdog": Misbehaviour({"envProcess": KILL_OWN_WATCHDOG}, frozenset({502, 503})),
}
WINDOW_CALLS = 75
"""Calls to the reference function per window."""
ROUNDS = 4
"""Interleaved (calm, fault) window pairs: the p99s compared are over ROUNDS x WINDOW_CALLS calls each."""
MORE_ROUNDS = 8
"""When the first ROUNDS come out over the bound, this many more pairs, and the bound is judged on all of
them: over 300 calls a side the p99 is the third slowest call, and on a shared machine the slowest come
in bursts that land in one window or the other (the memory hog: 2.32x in one whole-suite run, 1.84-1.93x
in four runs alone on the same quiet machine minutes later). The first rounds stay in the pool: a fault
that really costs more than P99_FACTOR still fails, on three times the evidence."""
FAULT_CALLERS = 2
FAULT_PAUSE_S = 0.1
"""Bounded load: each caller of the misbehaving function waits this long between its calls (at most
~20 calls a second in all). A tight loop of calls to *any* function would measure the load, not the
fault. The callers run in a process of their own (:class:`tests.fault_load.ProcessLoad`, which says
why): threads of this one would take the GIL from the reference function's calls being timed."""
PROCESS_LIMIT = 64


def _process_limit(daemon: Daemon) -> str:
    """How the daemon bounds a replica's processes ("" when it cannot): a cgroup's pids.max in any
    sandbox mode, else RLIMIT_NPROC, which needs a uid of its own (bwrap, uid)."""
    sandbox = daemon.sandbox()  # Once decided: the local backend starts after the ready line.
    if "pids" in (sandbox.get("cgroups") or {}).get("controllers", ()):
        return "pids.max"
    return "RLIMIT_NPROC" if sandbox.get("mode") in ("bwrap", "uid") else ""


def _latencies(client: httpx.Client, count: int) -> list[float]:
    """``count`` calls to ``ref`` in a row: their latencies (each must echo its body)."""
    took = []
    for n in range(count):
        body = f"ref-{n}".encode()
        started = time.perf_counter()
        answer = client.post("/function/ref", content=body)
        took.append(time.perf_counter() - started)
        assert (answer.status_code, answer.content) == (200, body), f"ref during a fault: {answer.status_code}"
    return took


def _sleepers() -> int:
    return sum(1 for pid in proc_table() if cmdline(pid) == "sleep 100")


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MISBEHAVIOURS))
def test_a_misbehaving_function(kind: str, start_daemon: StartDaemon, ledger: Entry) -> None:
    """Called at a bounded rate, the function gets its documented status every time (MISBEHAVIOURS),
    while a reference function's p99 stays within P99_FACTOR of its p99 without the fault."""
    bad = MISBEHAVIOURS[kind]
    daemon = start_daemon(FAASD_UPSTREAM_TIMEOUT="2s", FAASD_READY_TIMEOUT="3s")
    if bad.needs_process_limit and not _process_limit(daemon):
        reason = "no process limit per function here (needs cgroups, or sandbox bwrap or uid: docs/sandbox.md)"
        if must_run_everything():
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)
    daemon.deploy("ref", "cat")
    daemon.deploy("bad", bad.spec["envProcess"], **{k: v for k, v in bad.spec.items() if k != "envProcess"})
    calm: list[float] = []
    during: list[float] = []
    most_sleepers = 0
    stop_counting = threading.Event()

    def count_sleepers() -> None:
        nonlocal most_sleepers
        while not stop_counting.is_set():
            most_sleepers = max(most_sleepers, _sleepers())
            stop_counting.wait(0.05)

    counter = in_thread(count_sleepers, "sleepers") if bad.needs_process_limit else None
    try:
        with daemon.client(auth=False, timeout=30) as client:

            def rounds(count: int) -> None:
                for _ in range(count):
                    calm.extend(_latencies(client, WINDOW_CALLS))
                    with ProcessLoad(
                        daemon.url,
                        "/function/bad",
                        workers=FAULT_CALLERS,
                        pause=FAULT_PAUSE_S,
                        timeout=30,
                        ok=lambda response: response.status_code in bad.expect,
                    ) as fault:
                        fault.wait_ok(1, timeout=30)  # The fault is happening: one call has run into it.
                        during.extend(_latencies(client, WINDOW_CALLS))
                    ledger.load(fault)
                    ledger.fault(f"a function that {kind}")
                    assert fault.failed == 0, f"{kind}: {fault.summary()}"

            _latencies(client, 20)  # Warm.
            rounds(ROUNDS)
            if _p99(during) > P99_FACTOR * _p99(calm):
                print(
                    f"{kind}: over {ROUNDS} rounds, ref p99 {_p99(calm) * 1000:.1f} ms calm, "
                    f"{_p99(during) * 1000:.1f} ms during: {MORE_ROUNDS} more rounds, judged with these"
                )
                rounds(MORE_ROUNDS)
    finally:
        stop_counting.set()
        if counter is not None:
            counter.result(timeout=scaled(10))
    ledger.calls(len(calm) + len(during) + 20)
    before, under = _p99(calm), _p99(during)
    print(f"{kind}: ref p99 {before * 1000:.1f} ms calm, {under * 1000:.1f} ms during ({under / before:.2f}x)")
    with daemon.client(auth=False) as client:
        assert client.get("/healthz").status_code == 200
    assert daemon.proc.poll() is None and "Traceback" not in daemon.logs(), daemon.logs()[-3000:]
    if bad.needs_process_limit:
        assert most_sleepers <= PROCESS_LIMIT, f"{most_sleepers} processes of a function limited to {PROCESS_LIMIT}"
    assert under <= P99_FACTOR * before, (
        f"{kind}: the reference function's p99 went from {before * 1000:.1f} ms to {under * 1000:.1f} ms"
    )
