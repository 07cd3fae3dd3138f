"""The local backend's sandbox against a real daemon (``python3 dist/faasd.pyz up``) and hostile functions.

For every sandbox mode this machine supports (``bwrap``; ``uid`` as root; bwrap under a daemon that is
not root, as under systemd's ``DynamicUser``), a function invoked anonymously tries to read the admin
password, the database (every secret value), another function's secret, the daemon's environment, to
connect to the docker socket, to signal the daemon and to write its own code; each must be denied, and
its answer must contain none of those values. ``none`` is the documented unsafe mode: the same probe
reads the password there (which shows the probe can see a leak), and the daemon warns in its log,
``/system/info`` and ``faasd status``.

Also: the state files' modes whatever the umask, a loose password file refused, the fallback when
bwrap is missing, replicas dying with a ``kill -9``'d daemon, and containment -- a fork bomb and a memory
hog in one function leave the daemon and another function serving (p99 within 2x of before).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from faasd.sandbox.files import work_root_for
from faasd.sandbox.uids import FUNCTION_UID_FIRST, FUNCTION_UID_LAST
from tests.daemon_fixtures import Daemon, MakeCli, StartDaemon
from tests.e2e.http_bomb import deploy_http_bomb
from tests.fault_load import ProcessLoad
from tests.helpers import in_thread, must_run_everything, parse_env, process_alive, scaled, wait_for
from tests.process_tree import orphans_to_init
from tests.reliability.ledger import Entry

HAVE_BWRAP = shutil.which("bwrap") is not None
ROOT = os.geteuid() == 0
MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")),
    pytest.param("uid", marks=pytest.mark.skipif(not ROOT, reason="uid mode needs root")),
]
ALL_MODES = [*MODES, pytest.param("none")]
"""For what needs no isolation: the limits of the p99 test (a cgroup per replica, docs/sandbox.md, "Limits"),
the function's environment."""
DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")
VICTIM_SECRET = "victim-secret-value-5b1f0c"
OWN_SECRET = "own-secret-value-93e2aa"
CANARY = "daemon-env-canary-7d4410"
"""Put in the daemon's environment: a function that reads the daemon's environ would see it."""

PROBE = r"""
import json, os, socket, sys

targets = json.loads(os.environ["TARGETS"])
found = {}
for label, path in targets["files"].items():
    try:
        with open(path, "rb") as file:
            found[label] = "READ " + file.read(65536).decode("latin-1")
    except OSError as exc:
        found[label] = f"denied: {type(exc).__name__}: {exc.strerror}"
for label, path in targets["sockets"].items():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        found[label] = "CONNECTED"
    except OSError as exc:
        found[label] = f"denied: {type(exc).__name__}: {exc.strerror}"
    finally:
        sock.close()
try:
    os.kill(targets["daemon_pid"], 0)
    found["signal the daemon"] = "allowed"
except OSError as exc:
    found["signal the daemon"] = f"denied: {type(exc).__name__}: {exc.strerror}"
try:
    with open("probe-was-here", "w") as file:
        file.write("x")
    found["write its own code"] = "allowed"
except OSError as exc:
    found["write its own code"] = f"denied: {type(exc).__name__}: {exc.strerror}"
with open(os.path.join(os.environ["secret_mount_path"], "own-token"), "rb") as file:
    found["own secret"] = file.read().decode()
found["uid"] = os.getuid()
print(json.dumps(found))
"""


# -- helpers ----------------------------------------------------------------------------------------


def _archive(files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(raw.getvalue()).decode()


def _admin(daemon: Daemon) -> httpx.Client:
    """A client with the credentials the daemon uses: its password file, else the fixture's password."""
    password_file = daemon.state_dir / "password"
    password = password_file.read_text().strip() if password_file.exists() else daemon.env["FAASD_PASSWORD"]
    return httpx.Client(base_url=daemon.url, auth=("admin", password), timeout=60.0)


def _wait_ready(client: httpx.Client, name: str, timeout: float = 30.0) -> None:
    def ready() -> bool:
        response = client.get(f"/system/function/{name}")
        return response.status_code == 200 and response.json().get("availableReplicas", 0) >= 1

    wait_for(ready, timeout, f"{name} to have a ready replica")


@pytest.fixture
def stand_in_socket() -> Iterator[str]:
    """A unix socket like dockerd's (root:root 0660 under /run), listening: the docker socket's stand-in on a
    machine without dockerd, and a second target where there is one."""
    path = f"/run/faasd-test-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
    except OSError as exc:
        server.close()
        pytest.skip(f"cannot create a socket in /run: {exc}")
    os.chmod(path, 0o660)
    server.listen(8)
    try:
        yield path
    finally:
        server.close()
        os.unlink(path)


def _probe(daemon: Daemon, stand_in: str) -> dict[str, object]:
    """Deploy a victim (with a secret) and the probe (with its own), call the probe anonymously; its findings."""
    state = daemon.state_dir
    elsewhere = Path(work_root_for(str(state)))  # Where uid mode keeps the functions' directories.
    targets = {
        "files": {
            "password": str(state / "password"),
            "password (relative)": "../../password",
            "database": str(state / "faasd.db"),
            "database (relative)": "../../faasd.db",
            "database journal": str(state / "faasd.db-wal"),
            "other function's secret": str(state / "functions" / "victim" / ".secrets" / "victim-token"),
            "other function's secret (relative)": "../victim/.secrets/victim-token",
            "other function's secret (uid mode)": str(elsewhere / "functions" / "victim" / ".secrets" / "victim-token"),
            "daemon environ": f"/proc/{daemon.pid}/environ",
        },
        "sockets": {"docker socket stand-in": stand_in}
        | {f"docker socket {path}": path for path in DOCKER_SOCKETS if os.path.exists(path)},
        "daemon_pid": daemon.pid,
    }
    with _admin(daemon) as client:
        for name, value in (("victim-token", VICTIM_SECRET), ("own-token", OWN_SECRET)):
            response = client.post("/system/secrets", json={"name": name, "value": value})
            assert response.status_code in (200, 201, 202), response.text
        victim = {"service": "victim", "envProcess": "cat", "secrets": ["victim-token"]}
        assert client.post("/system/functions", json=victim).status_code == 202
        probe = {
            "service": "probe",
            "envProcess": "python3 probe.py",
            "envVars": {"TARGETS": json.dumps(targets)},
            "secrets": ["own-token"],
            "handlerArchive": _archive({"probe.py": PROBE.encode()}),
        }
        response = client.post("/system/functions", json=probe)
        assert response.status_code == 202, response.text
        _wait_ready(client, "victim")
        _wait_ready(client, "probe")
    answer = httpx.get(f"{daemon.url}/function/probe", timeout=30.0)  # Anonymous, as anyone may call it.
    assert answer.status_code == 200, answer.text
    return json.loads(answer.text)


def _assert_contained(found: dict[str, object], daemon: Daemon) -> None:
    text = json.dumps(found)
    password = (daemon.state_dir / "password").read_text().strip()
    shown = {label: str(outcome)[:100] for label, outcome in found.items()}  # A database is long.
    for value in (password, VICTIM_SECRET, CANARY):
        assert value not in text, f"{value!r} leaked: {shown}"
    for label, outcome in shown.items():
        if label not in ("own secret", "uid"):
            assert outcome.startswith("denied"), f"{label}: {outcome}"
    assert found["own secret"] == OWN_SECRET


# -- nothing to take --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_function_cannot_reach_the_daemon_or_other_functions(
    mode: str, start_daemon: StartDaemon, stand_in_socket: str, ledger: Entry
) -> None:
    daemon = start_daemon(args=("--sandbox", mode), FAASD_PASSWORD="", FAASD_TEST_CANARY=CANARY)
    found = _probe(daemon, stand_in_socket)
    _assert_contained(found, daemon)
    attempts = [label for label in found if label not in ("own secret", "uid")]
    ledger.fault(f"sandbox escape attempts ({mode}), each denied", len(attempts))
    assert FUNCTION_UID_FIRST <= int(found["uid"]) <= FUNCTION_UID_LAST  # type: ignore[call-overload]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_function_sees_the_environment_it_was_given_in_every_mode(mode: str, start_daemon: StartDaemon) -> None:
    # The daemon's environment sets no locale. Python started in the C locale adds LC_CTYPE=C.UTF-8 to its
    # own os.environ (PEP 538); the watchdog must pass on what it was given, not that. A replica that had
    # become another uid (uid and bwrap modes) could no longer read /proc/self/environ and passed on
    # os.environ: every cat then loaded a locale, ~8 % more CPU per fork-mode call than in none mode.
    daemon = start_daemon(args=("--sandbox", mode))
    assert not {"LANG", "LC_ALL", "LC_CTYPE"} & daemon.env.keys()
    daemon.deploy("env", "env")
    with daemon.client(auth=False) as client:
        answer = client.post("/function/env", content=b"")
    assert answer.status_code == 200, answer.text
    names = parse_env(answer.text).keys()
    assert "fprocess" in names and "Http_Method" in names
    assert not {"LANG", "LC_ALL", "LC_CTYPE"} & names, answer.text


@pytest.mark.skipif(not ROOT, reason="the docker socket's stand-in is root's, in /run")
def test_none_is_unsafe_and_says_so(start_daemon: StartDaemon, faasd_cli: MakeCli, stand_in_socket: str) -> None:
    """The same probe, unsandboxed: it reads the password (so the probe does see leaks), and the daemon warns."""
    daemon = start_daemon(args=("--sandbox", "none"), FAASD_PASSWORD="", FAASD_TEST_CANARY=CANARY)
    found = _probe(daemon, stand_in_socket)
    password = (daemon.state_dir / "password").read_text().strip()
    assert found["password"] == f"READ {password}\n", found
    assert CANARY in str(found["daemon environ"]) and VICTIM_SECRET in str(found["other function's secret"])
    assert found["docker socket stand-in"] == "CONNECTED"
    _assert_warns_unsafe(daemon, faasd_cli)


def _assert_warns_unsafe(daemon: Daemon, faasd_cli: MakeCli) -> None:
    sandbox = daemon.sandbox()
    line = next(line for line in daemon.logs().splitlines() if "event=sandbox" in line)
    assert "level=warning" in line and "mode=none" in line and "read its state dir" in line, line
    assert sandbox["mode"] == "none" and sandbox["isolated"] is False, sandbox
    password = (daemon.state_dir / "password").read_text().strip()
    status = faasd_cli(daemon, FAASD_PASSWORD=password).run("status").ok()
    assert "Sandbox\tnone -- WARNING: " in status.out, status.out


@pytest.mark.skipif(not (ROOT and HAVE_BWRAP), reason="needs root (to become another user) and bwrap")
def test_bwrap_works_for_a_daemon_that_is_not_root(
    start_daemon: StartDaemon, faasd_pyz: Path, tmp_path: Path, stand_in_socket: str
) -> None:
    """As under systemd's DynamicUser (and the unit's NoNewPrivileges=yes): the daemon has no privilege,
    bwrap makes a user namespace, and the function -- which runs as the daemon's own uid -- still sees
    nothing of it: not its files (the mount namespace), not its environment (the PID namespace)."""
    uid = 1_899_990_000 + os.getpid() % 10_000  # No /etc/passwd entry needed, as with DynamicUser.
    with _world_readable_dir() as shared:
        state, wrapper = _as_unprivileged_user(uid, shared, faasd_pyz, tmp_path)
        daemon = start_daemon(state_dir=state, python=str(wrapper), FAASD_PASSWORD="", FAASD_TEST_CANARY=CANARY)
        sandbox = daemon.sandbox()
        assert sandbox["mode"] == "bwrap" and sandbox["function_uids"] is False, sandbox
        found = _probe(daemon, stand_in_socket)
        _assert_contained(found, daemon)
        assert found["uid"] == uid  # The daemon's own uid: only the namespaces stand between them.
        _check_processes_limit_per_sandbox(daemon, uid)
        daemon.stop()


def _as_unprivileged_user(uid: int, shared: Path, faasd_pyz: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A state dir for ``uid`` and a ``python`` stand-in for :func:`start_daemon` that runs the zipapp as
    that uid, with no capabilities, no groups and no_new_privs set -- what the shipped unit's
    ``DynamicUser=yes`` and ``NoNewPrivileges=yes`` give the daemon."""
    pyz = shared / "faasd.pyz"
    shutil.copyfile(faasd_pyz, pyz)
    os.chmod(pyz, 0o644)
    state = shared / "state"
    state.mkdir(mode=0o700)
    os.chown(state, uid, uid)
    wrapper = tmp_path / "as-daemon-user.sh"
    wrapper.write_text(
        f"#!/bin/sh\nshift\nexec setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all "
        f'--no-new-privs /usr/bin/python3 {pyz} "$@"\n'
    )
    wrapper.chmod(0o755)
    return state, wrapper


@pytest.mark.skipif(not ROOT, reason="needs root (to start the daemon as another user)")
def test_a_daemon_that_is_not_root_without_bwrap_falls_back_to_none_and_says_so(
    start_daemon: StartDaemon, faasd_cli: MakeCli, faasd_pyz: Path, tmp_path: Path
) -> None:
    """``auto`` with neither bubblewrap nor root: no sandbox, and the log, ``faasd status`` and
    ``/system/info`` say so (and why)."""
    uid = 1_899_980_000 + os.getpid() % 10_000
    with _world_readable_dir() as shared:
        state, wrapper = _as_unprivileged_user(uid, shared, faasd_pyz, tmp_path)
        path = shared / "bin"
        path.mkdir(mode=0o755)
        for tool in ("sh", "cat", "python3", "setsid", "setpriv"):
            os.symlink(shutil.which(tool, path="/usr/bin:/bin"), path / tool)  # type: ignore[arg-type]
        daemon = start_daemon(state_dir=state, python=str(wrapper), FAASD_PASSWORD="", PATH=str(path))
        wait_for(lambda: "event=sandbox" in daemon.logs(), 15, "the backend's sandbox line (after the ready line)")
        line = next(line for line in daemon.logs().splitlines() if "event=sandbox" in line)
        assert "bwrap is not installed" in line and "uid mode needs root" in line, line
        _assert_warns_unsafe(daemon, faasd_cli)
        with _admin(daemon) as client:
            assert client.post("/system/functions", json={"service": "echo", "envProcess": "cat"}).status_code == 202
            _wait_ready(client, "echo")
        assert httpx.post(f"{daemon.url}/function/echo", content=b"still works").text == "still works"
        daemon.stop()


FORKER = """python3 -c '
import os, time
pids = []
try:
    for _ in range(int(os.environ["Http_X_Forks"])):
        pid = os.fork()
        if pid == 0:
            time.sleep(2)
            os._exit(0)
        pids.append(pid)
except OSError as exc:
    print(len(pids), "then", exc.strerror)
else:
    print(len(pids))
'"""


def _check_processes_limit_per_sandbox(daemon: Daemon, uid: int) -> None:
    """The process limit holds in a sandbox, and is counted per sandbox (user namespace), not against the
    daemon's uid as a whole: with 40 processes of that uid outside, a sandbox limited to 32 still forks
    its own 10 -- and not 40."""
    outside = [
        subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "60"])
        for _ in range(40)
    ]
    try:
        spec = {
            "service": "forker",
            "envProcess": FORKER,
            "labels": {"com.faasd.limits.processes": "32"},
            "envVars": {"exec_timeout": "20s"},
        }
        with _admin(daemon) as client:
            assert client.post("/system/functions", json=spec).status_code == 202
            _wait_ready(client, "forker")
        for forks, expected in (("10", "10\n"), ("40", "then Resource temporarily unavailable\n")):
            answer = httpx.post(f"{daemon.url}/function/forker", headers={"X-Forks": forks}, timeout=30.0)
            assert answer.status_code == 200 and answer.text.endswith(expected), (forks, answer.text)
    finally:
        for process in outside:
            process.kill()
            process.wait()


class _world_readable_dir:
    """A fresh 0755 directory under /tmp that any user can enter (pytest's tmp_path is root-only), removed after."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="faasd-sandbox-test-", dir="/tmp"))
        self.path.chmod(0o755)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- files and start-up -----------------------------------------------------------------------------


def test_state_files_are_private_whatever_the_umask(start_daemon: StartDaemon, tmp_path: Path) -> None:
    wrapper = tmp_path / "umask-000.sh"
    wrapper.write_text('#!/bin/sh\numask 000\nexec /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    daemon = start_daemon(python=str(wrapper), FAASD_PASSWORD="")
    with _admin(daemon) as client:
        assert client.post("/system/secrets", json={"name": "token", "value": "v"}).status_code in (200, 201, 202)
        response = client.post("/system/functions", json={"service": "f", "envProcess": "cat", "secrets": ["token"]})
        assert response.status_code == 202, response.text
        _wait_ready(client, "f")
    state = daemon.state_dir
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in state.iterdir()}
    assert modes["password"] == 0o600 and modes["faasd.db"] == 0o600, modes
    assert modes["faasd.db-wal"] == 0o600 and modes["faasd.db-shm"] == 0o600, modes
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and modes["functions"] == 0o700, modes
    secret = state / "functions" / "f" / ".secrets" / "token"
    assert stat.S_IMODE(secret.stat().st_mode) & 0o077 in (0, 0o040), oct(secret.stat().st_mode)  # Its group at most.


def test_a_password_file_others_can_read_is_refused(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "loose-state"
    state.mkdir(mode=0o700)
    password = state / "password"
    password.write_text("a-password-somebody-else-may-have-read\n")
    password.chmod(0o644)
    daemon = start_daemon(state_dir=state, wait_ready=False, FAASD_PASSWORD="")
    assert daemon.proc.wait(30) == 1
    errors = [line for line in daemon.logs().splitlines() if "level=error" in line]
    assert len(errors) == 1 and "Traceback" not in daemon.logs(), daemon.logs()
    assert f"password file {password} has mode 0644" in errors[0] and f"chmod 600 {password}" in errors[0]


@pytest.mark.skipif(not ROOT, reason="the fallback to uid mode needs root")
def test_without_bwrap_auto_falls_back_to_uid_and_says_so(
    start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path
) -> None:
    with _world_readable_dir() as shared:
        path = shared / "bin"
        path.mkdir(mode=0o755)
        for tool in ("sh", "cat", "python3", "setsid"):
            os.symlink(shutil.which(tool, path="/usr/bin:/bin"), path / tool)  # type: ignore[arg-type]
        daemon = start_daemon(PATH=str(path))
        wait_for(lambda: "event=sandbox" in daemon.logs(), 15, "the backend's sandbox line (after the ready line)")
        line = next(line for line in daemon.logs().splitlines() if "event=sandbox" in line)
        assert "level=warning" in line and "mode=uid" in line and "bwrap is not installed" in line, line
        daemon.deploy("echo", "cat")
        assert httpx.post(f"{daemon.url}/function/echo", content=b"still works").text == "still works"
        status = faasd_cli(daemon).run("status").ok()
        assert "Sandbox\tuid: per-function uids (bubblewrap is better: bwrap is not installed" in status.out
        with daemon.client() as client:
            assert client.get("/system/info").json()["faasd"]["sandbox"]["mode"] == "uid"
        daemon.stop()

        refused = start_daemon(args=("--sandbox", "bwrap"), wait_ready=False, PATH=str(path))
        assert refused.proc.wait(30) == 1
        errors = [line for line in refused.logs().splitlines() if "level=error" in line]
        assert len(errors) == 1 and "sandbox=bwrap: bwrap is not installed" in errors[0], refused.logs()
        # A mode asked for by name is checked before the daemon says it is ready (faasd.daemon._provider).
        assert "event=ready" not in refused.logs(), refused.logs()


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_replicas_die_with_a_killed_daemon(start_daemon: StartDaemon) -> None:
    """``kill -9`` of the daemon: its sandboxes notice (the lifeline pipe) and end, every process in them."""
    daemon = start_daemon(args=("--sandbox", "bwrap"))
    daemon.deploy("echo", "sh -c 'setsid sleep 300 >/dev/null 2>&1 & cat'", labels={"com.openfaas.scale.min": "2"})
    daemon.wait_available("echo", 2)
    httpx.post(f"{daemon.url}/function/echo", content=b"x", timeout=10.0)  # Leaves a sleep 300 behind.
    inside = _descendants(daemon.pid)
    assert len(inside) >= 8, inside  # 2 x (setsid, bwrap, its init, the watchdog) and the sleep.
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    _wait_all_ended(inside)


def _wait_all_ended(pids: list[int]) -> None:
    """Until none of ``pids`` is alive (a killed daemon's processes), 10 s at most."""
    wait_for(
        lambda: not [pid for pid in pids if process_alive(pid)],
        10.0,
        lambda: f"processes that outlived their daemon: {[pid for pid in pids if process_alive(pid)]}",
    )


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            children.setdefault(int(data[data.rindex(b")") + 2 :].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# -- containment ------------------------------------------------------------------------------------

BOMB = """sh -c 'case "$Http_Query" in
bomb) f() { f | f & }; f & exec sleep 30;;
*) echo fine;;
esac'"""
"""The shell's fork bomb; the call itself lasts until it is killed (``sleep``, in the call's process group)."""
PY_BOMB = b"""import os


def handle(event, context):
    if "bomb" not in event.path:
        return "fine"
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""
"""A python-mode fork bomb that lasts: every process forks for ever, in the worker's process group."""
HOG = """python3 -c 'b = []
while True: b.append(bytearray(1 << 20))'"""
BASELINE_CALLS = 200
KILLED = "Killed process: it filled its replica's process limit of 128 (com.faasd.limits.processes)\n"
COOLING = "Function cooling down: a call filled its replica's process limit of 128\n"

ROUNDS = 12
"""Interleaved (calm, fault) window pairs of the p99 test: a change in the machine's load (it is shared)
counts against both sides alike, as in tests/reliability/test_faults.py; many short pairs rather than a
few long ones, so that it does on a machine whose load changes by the second."""
MORE_ROUNDS = 12
"""When the pooled ratio of the first :data:`ROUNDS` is over the bound, this many more pairs are run and the
bound is judged on all of them together. A p99 is set by the slowest 1 % of calls, which on a shared
machine come in bursts (another process's second of work lands in one window or the other), so a
dozen seconds a side estimate it loosely: measured on main for the memory hog, identical runs gave
1.29-2.13x. More pairs estimate it better; they are not a second try -- the first rounds' calls stay in
the pool, so a fault that really costs over the bound still fails, with twice the evidence."""
FAULT_WINDOW_S = 1.0
"""A fault window: a client calls the misbehaving function in a loop for this long, from a process of its
own (:class:`tests.fault_load.ProcessLoad`, which says why)."""
FAULT_PAUSE_S = 0.05
"""Between two calls of that client: at most 20 calls a second (a tight loop of calls to *any* function,
429s included, would measure the load, not the fault)."""
MIN_CALM_CALLS = 30
"""A calm window has as many calls as the fault window before it (each side weighs the same), at least this."""
P99_FACTOR = 2.0
"""Issue 11: the others' p99 within 2x of before during the fault."""


def _latencies(url: str, *, count: int = 0, until: Callable[[], bool] | None = None) -> list[float]:
    """Sequential POSTs on one keep-alive connection: ``count`` of them, or until ``until()``; each 200."""
    times = []
    with httpx.Client(timeout=30.0) as client:
        while (count and len(times) < count) or (until is not None and not until()):
            started = time.perf_counter()
            response = client.post(url, content=b"x" * 100)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.content == b"x" * 100, response.text
    return times


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, round(len(ordered) * 0.99) - 1)]


def _memory_hog(url: str, calls: int = 5) -> list[tuple[int, str]]:
    outcomes = []
    for _ in range(calls):
        response = httpx.post(f"{url}/function/hog", timeout=60.0)
        outcomes.append((response.status_code, response.text))
    return outcomes


def _start_faults(start_daemon: StartDaemon, mode: str) -> tuple[Daemon, str]:
    """A daemon in sandbox ``mode`` with ``steady`` (cat), ``bomb`` and ``hog``, all ready, and steady's
    invoke URL, warmed up."""
    daemon = start_daemon(args=("--sandbox", mode))
    with daemon.client() as client:
        for spec in (
            {"service": "steady", "envProcess": "cat"},
            {"service": "bomb", "envProcess": BOMB, "envVars": {"exec_timeout": "20s"}},
            {"service": "hog", "envProcess": HOG, "limits": {"memory": "128M"}},
        ):
            assert client.post("/system/functions", json=spec).status_code == 202
    for name in ("steady", "bomb", "hog"):
        daemon.wait_available(name, 1)
    steady = f"{daemon.url}/function/steady"
    _latencies(steady, count=50)
    return daemon, steady


@pytest.fixture
def faults(start_daemon: StartDaemon, request: pytest.FixtureRequest) -> tuple[Daemon, str]:
    """:func:`_start_faults` in the requested sandbox mode."""
    return _start_faults(start_daemon, request.param)


def _during(steady: str, fault: Callable[[], list[tuple[int, str]]]) -> tuple[list[float], list[float], list]:
    """Steady's latencies just before and while ``fault`` runs (every call must answer 200), and the fault's
    outcomes."""
    before = _latencies(steady, count=BASELINE_CALLS)
    calls = in_thread(fault, "fault")
    during = _latencies(steady, until=calls.done)
    outcomes = calls.result(timeout=scaled(60.0))
    p99s = f"{_p99(before) * 1000:.1f} ms before, {_p99(during) * 1000:.1f} ms during"
    print(f"steady's p99: {p99s} ({len(during)} calls)")
    return before, during, outcomes


def _cgroups(daemon: Daemon) -> dict[str, object]:
    return daemon.sandbox()["cgroups"]


def _needs(daemon: Daemon, controller: str) -> None:
    """Skip (fail under CI) unless the daemon gives replicas a cgroup with ``controller``."""
    cgroups = _cgroups(daemon)
    if controller not in cgroups["controllers"]:  # type: ignore[operator]
        reason = f"no {controller} cgroup for replicas here: {cgroups['reason']}"
        if must_run_everything():
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)


@pytest.mark.slow
@pytest.mark.parametrize("faults", MODES, indirect=True)
def test_a_memory_hog_stays_in_its_function(faults: tuple[Daemon, str]) -> None:
    """Each call of the hog fails at its memory limit with a clear 500 (MemoryError); every call to another
    function is answered meanwhile and the daemon stays healthy."""
    daemon, steady = faults
    _, _, outcomes = _during(steady, lambda: _memory_hog(daemon.url))
    assert [status for status, _ in outcomes] == [500] * 5 and all("MemoryError" in text for _, text in outcomes)
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("watchdog", ["fork", "streaming", "python", "http"])
def test_a_fork_bomb_is_stopped_at_its_process_limit(watchdog: str, mode: str, start_daemon: StartDaemon) -> None:
    """The bomb (a call's process -- fork or streaming mode --, a python worker's handler, or an http-mode
    server's handler) fills its replica's process limit and is killed at once, long before its
    exec_timeout, with a 500 that names the limit; its replica then cools down (429 with Retry-After)
    and answers again after it (http mode: its server restarted, a process forked per call again); every
    call to another function is answered meanwhile, the daemon stays healthy."""
    daemon, steady = _start_faults(start_daemon, mode)
    _needs(daemon, "pids")
    bomb, fine = f"{daemon.url}/function/bomb?bomb", f"{daemon.url}/function/bomb?fine"
    if watchdog == "python":
        python = {"mode": "python", "exec_timeout": "20s"}
        daemon.deploy("pybomb", "", envVars=python, handlerArchive=_archive({"handler.py": PY_BOMB}))
        daemon.wait_available("pybomb", 1)
        bomb, fine = f"{daemon.url}/function/pybomb/bomb", f"{daemon.url}/function/pybomb/fine"
    elif watchdog == "streaming":  # Nothing streamed yet (the shell's fork errors kept off stdout): a 500.
        env = {"mode": "streaming", "combine_output": "false", "exec_timeout": "20s"}
        daemon.deploy("streambomb", BOMB, envVars=env)
        bomb, fine = f"{daemon.url}/function/streambomb?bomb", f"{daemon.url}/function/streambomb?fine"
    elif watchdog == "http":
        url = deploy_http_bomb(daemon, "httpbomb", exec_timeout="20s")
        bomb, fine = f"{url}/bomb", f"{url}/fine"
    took: list[float] = []
    after: list[httpx.Response] = []

    def fault() -> list[tuple[int, str]]:
        started = time.monotonic()
        response = httpx.post(bomb, timeout=60.0)
        took.append(time.monotonic() - started)
        after.append(httpx.post(fine, timeout=10.0))  # At once: within the first cooldown.
        return [(response.status_code, response.text)]

    with orphans_to_init():  # Without a PID namespace the bomb's orphans would be ours: zombies, in its pids.max.
        _, _, outcomes = _during(steady, fault)
        assert outcomes == [(500, KILLED)] and took[0] < scaled(20.0) / 2, (outcomes, took)
        [cooling] = after
        assert (cooling.status_code, cooling.text) == (429, COOLING) and int(cooling.headers["Retry-After"]) >= 1
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        seen: list[str] = []

        def fine_again() -> bool:
            try:
                seen.append(httpx.post(fine, timeout=10.0).text.strip())
            except httpx.TimeoutException as exc:
                seen.append(repr(exc))
            return seen[-1] == "fine"

        def why() -> str:
            with daemon.client() as client:
                logs = client.get("/system/logs", params={"name": fine.split("/")[4].split("?")[0]}).text
            return f"the bomb function to answer normally again: {seen[-3:]}\n{logs[-3000:]}"

        wait_for(fine_again, 10.0, why, interval=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("fault", ["fork-bomb", "memory-hog"])
def test_other_functions_p99_stays_within_2x_during_a_fault(
    mode: str, fault: str, start_daemon: StartDaemon, ledger: Entry
) -> None:
    """The issue's target: another function's p99 within 2x of its p99 without the fault, while a client
    keeps calling a function that fork-bombs, or allocates up to its memory limit in a loop -- over
    ROUNDS interleaved (calm, fault) windows, pooled, and MORE_ROUNDS more when those come out over the
    bound (all judged together).

    What bounds it: the replica's cgroup (docs/sandbox.md, "Limits"), in every mode, ``none`` included --
    its CPU weight and quota, and its pids.max, at which the watchdog kills the bomb and lets its
    replica cool down. The test needs a CPU and a pids cgroup and says so.
    """
    daemon, steady = _start_faults(start_daemon, mode)
    _needs(daemon, "cpu")
    _needs(daemon, "pids")
    if fault == "fork-bomb":
        path, answered = "/function/bomb?bomb", lambda a: (a.status_code, a.text) in {(500, KILLED), (429, COOLING)}
    else:
        path, answered = "/function/hog", lambda a: a.status_code == 500 and "MemoryError" in a.text
    calm: list[float] = []
    during: list[float] = []
    outcomes: list[tuple[int, str]] = []
    window = MIN_CALM_CALLS

    def rounds(count: int) -> str:
        """``count`` more (calm, fault) pairs into the pools; the pooled p99s so far, as text."""
        nonlocal window
        for _ in range(count):
            calm.extend(_latencies(steady, count=window))
            with ProcessLoad(daemon.url, path, pause=FAULT_PAUSE_S, seconds=FAULT_WINDOW_S, ok=answered) as load:
                faulty = _latencies(steady, until=load.done)
            assert load.failed == 0, f"{fault}: {load.summary()}"
            during.extend(faulty)
            outcomes.extend(load.responses)
            window = max(MIN_CALM_CALLS, len(faulty))
        before, under = _p99(calm), _p99(during)
        return f"{before * 1000:.1f} ms calm, {under * 1000:.1f} ms during ({under / before:.2f}x)"

    with orphans_to_init():  # Without a PID namespace the bomb's orphans would be ours, unreaped.
        print(f"{fault} ({mode}): steady's p99 over {ROUNDS} rounds: {rounds(ROUNDS)}")
        if _p99(during) > P99_FACTOR * _p99(calm):
            print(f"{fault} ({mode}): over {ROUNDS + MORE_ROUNDS} rounds: {rounds(MORE_ROUNDS)}")
    ledger.fault(f"a function that {'fork-bombs' if fault == 'fork-bomb' else 'eats memory'} ({mode})", len(outcomes))
    ledger.calls(len(calm) + len(during))
    if fault == "fork-bomb":
        assert (500, KILLED) in outcomes, Counter(outcomes)
    before, under = _p99(calm), _p99(during)
    assert len(during) >= 10 * ROUNDS, f"only {len(during)} calls to steady during {ROUNDS} faults"
    assert under <= P99_FACTOR * before, (
        f"{fault} ({mode}): steady's p99 went from {before * 1000:.1f} ms to {under * 1000:.1f} ms"
    )
