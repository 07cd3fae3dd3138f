"""The local backend in each sandbox mode this machine supports (``bwrap``, and ``uid`` as root).

The conformance suite again, sandboxed, then what only a sandbox shows: the replica's identity, files
and limits as the function itself sees them, a graceful stop delivered inside bubblewrap, and no
process outliving its sandbox. Replicas are real ``faasd watchdog`` processes from this checkout; the
attempts to read what a function must not (the admin password, other functions' secrets, the database,
the daemon's environment, the docker socket) run against a real daemon in tests/e2e/test_sandbox.py.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from faasd.errors import InvalidRequest
from faasd.providers import Provider
from faasd.providers.local import LocalProvider
from faasd.providers.types import FunctionSpec, LogRequest, Resources
from faasd.registry import EndpointRegistry
from faasd.sandbox import cgroups as sandbox_cgroups
from faasd.sandbox import host as sandbox_host
from faasd.sandbox.cgroups import REPLICA_NICE, V1_SHARES, Cgroups
from faasd.sandbox.plan import BWRAP_OWN_PROCESSES, Sandbox
from faasd.sandbox.uids import FUNCTION_UID_FIRST, FUNCTION_UID_LAST
from tests.helpers import process_alive
from tests.providers.conformance import CHECKS, ProviderFactory, call, ready_endpoints, running, wait_until

SECRETS = {"api-key": b"s3cr3t-value"}

MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed")),
    pytest.param("uid", marks=pytest.mark.skipif(os.geteuid() != 0, reason="uid mode needs root")),
]


async def lookup_secret(name: str) -> bytes | None:
    return SECRETS.get(name)


Maker = Callable[[str], ProviderFactory]


@pytest.fixture
def make_sandboxed(tmp_path: Path) -> Maker:
    """``make_sandboxed(mode)`` -> a factory of started LocalProviders sandboxed that way."""
    counter = itertools.count()

    def maker(mode: str) -> ProviderFactory:
        async def factory(nursery: trio.Nursery) -> tuple[Provider, EndpointRegistry]:
            registry = EndpointRegistry()
            provider = LocalProvider(
                state_dir=str(tmp_path / f"state-{next(counter)}"),
                registry=registry,
                secrets=lookup_secret,
                stop_grace_s=5.0,
                ready_timeout_s=15.0,
                sandbox=mode,
            )
            await nursery.start(provider.run)
            assert provider.sandbox_info()["mode"] == mode, provider.sandbox_info()
            return provider, registry

        return factory

    return maker


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: Callable[[ProviderFactory], Awaitable[None]], mode: str, make_sandboxed: Maker):
    await check(make_sandboxed(mode))


LOOK_AROUND = r"""sh -c '
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "cwd=$(pwd) home=$HOME tmp=$TMPDIR"
echo "secret=$(cat "$secret_mount_path/api-key")"
echo "code=$(cat ./data.txt)"
if echo x > ./written 2>/dev/null; then echo write=yes; else echo write=no; fi
if echo x > "$TMPDIR/scratch" 2>/dev/null; then echo tmp_write=yes; else echo tmp_write=no; fi
grep -E "^Max (processes|open files|address space)" /proc/self/limits
echo "oom=$(cat /proc/self/oom_score_adj) autogroup_nice=$(cut -d" " -f3 /proc/self/autogroup)"
grep NoNewPrivs /proc/self/status
'"""


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        for part in line.split():
            key, sep, value = part.partition("=")
            if sep:
                fields[key] = value
        if line.startswith("Max "):
            *name, soft, hard, _unit = line.split()
            fields["limit_" + name[-1]] = f"{soft}/{hard}"
        if line.startswith("NoNewPrivs:"):
            fields["nnp"] = line.split()[1]
    return fields


@pytest.fixture(params=["host", "none"])
def cgroups_here(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``host``: the control groups this machine gives replicas (faasd.sandbox.cgroups.setup), if any;
    ``none``: as on a host without usable ones -- setup's answer there, so the rlimit and autogroup
    fallbacks run here too (setup's own detection has its tests in tests/unit/test_cgroup_settings.py)."""
    if request.param == "none":
        monkeypatch.setattr(sandbox_cgroups, "setup", lambda state_dir: Cgroups("none", reason="none (the test's)"))
    return str(request.param)


@pytest.mark.parametrize("mode", MODES)
async def test_a_replica_sees_its_own_uid_files_and_limits(mode: str, make_sandboxed: Maker, cgroups_here: str):
    """Its uid, files and limits, as the function sees them. The process limit is the replica's cgroup's
    ``pids.max`` where it has one (then no ``RLIMIT_NPROC``), else ``RLIMIT_NPROC``; its CPU weight is
    its cgroup's where it has a CPU one, else its autogroup's nice value (10) -- set despite the kernel's
    rate limit on those writes (one per 100 ms system-wide), which replicas starting together meet."""
    spec = FunctionSpec(
        name="looker",
        env_process=LOOK_AROUND,
        secrets=("api-key",),
        handler_archive=_tar_gz({"data.txt": b"own-code"}),
        limits=Resources(memory="256M"),
        labels={"com.faasd.limits.processes": "100", "com.faasd.limits.open_files": "512"},
    )
    async with running(make_sandboxed(mode)) as (provider, registry):
        await provider.deploy(spec, 1)
        await provider.deploy(FunctionSpec(name="other", env_process="cat"), 1)
        (endpoint,) = await ready_endpoints(registry, "looker", 1)
        status, body = await call(endpoint)
        text = body.decode()
        assert status == 200, text
        seen = _fields(text)
        uid, gid = int(seen["uid"]), int(seen["gid"])
        assert isinstance(provider, LocalProvider)
        assert gid == provider._functions["looker"].gid and seen["groups"] == seen["gid"], text  # No others.
        assert FUNCTION_UID_FIRST <= uid <= FUNCTION_UID_LAST and uid != gid, text  # The replica's own uid.
        await ready_endpoints(registry, "other", 1)
        assert provider._functions["other"].gid not in (None, gid)  # Each function its own gid.
        await provider.scale("looker", 2)
        await ready_endpoints(registry, "looker", 2)
        uids = {int(_fields((await call(endpoint))[1].decode())["uid"]) for endpoint in registry.get("looker")}
        assert len(uids) == 2 and uid in uids  # Each replica its own uid: its own process count.
        assert seen["secret"] == "s3cr3t-value" and seen["code"] == "own-code", text
        assert seen["write"] == "no" and seen["tmp_write"] == "yes", text  # Code read-only, scratch writable.
        assert seen["limit_files"] == "512/512", text
        assert seen["limit_space"] == f"{256 << 20}/{256 << 20}", text
        assert seen["oom"] == "1000" and seen["nnp"] == "1", text
        assert provider._host.sandbox is not None
        cgroups = provider._host.sandbox.cgroups
        assert (cgroups.kind == "none") == (cgroups_here == "none"), cgroups
        if "pids" in cgroups.controllers:  # Counted in the replica's cgroup, with bwrap's own processes.
            assert seen["limit_processes"] != "100/100", text
            (pids,) = [hierarchy for hierarchy in cgroups.hierarchies if "pids" in hierarchy.controllers]
            mine = list(Path(pids.parent).glob(f"{pids.prefix}.looker-*"))  # Its two replicas.
            own = BWRAP_OWN_PROCESSES if mode == "bwrap" else 0
            assert len(mine) == 2 and {(path / "pids.max").read_text().strip() for path in mine} == {str(100 + own)}
        else:
            assert seen["limit_processes"] == "100/100", text
        if cgroups.cpu:  # Its CPU weight is its cgroup's, not its session's.
            assert seen["autogroup_nice"] == "0", text
            (cpu,) = [hierarchy for hierarchy in cgroups.hierarchies if "cpu" in hierarchy.controllers]
            mine = list(Path(cpu.parent).glob(f"{cpu.prefix}.looker-*"))
            weight, value = ("cpu.shares", V1_SHARES) if cgroups.kind == "v1" else ("cpu.weight.nice", REPLICA_NICE)
            assert len(mine) == 2 and all((path / weight).read_text().strip() == str(value) for path in mine), mine
        else:
            assert seen["autogroup_nice"] == "10", text
        if mode == "bwrap":
            assert seen["cwd"] == "/home/app" and seen["home"] == "/tmp" and seen["tmp"] == "/tmp", text
        else:
            scratch = Path(seen["tmp"])
            assert seen["home"] == str(scratch) and (scratch.stat().st_uid, scratch.stat().st_gid) == (uid, gid)
            assert Path(scratch).stat().st_mode & 0o777 == 0o700, text
            # Outside the state dir, which a function's uid cannot enter.
            assert seen["cwd"] == str(Path(provider._host.functions_dir) / "looker"), text
            assert not seen["cwd"].startswith(provider._state_dir), text
        # The function's files on the host: root-owned, its group may read, nobody else.
        workdir = Path(provider._host.functions_dir) / "looker"
        for path in (workdir, workdir / "data.txt", workdir / ".secrets", workdir / ".secrets" / "api-key"):
            info = path.stat()
            assert (info.st_uid, info.st_gid) == (0, gid), path
            assert info.st_mode & 0o027 == 0 and info.st_mode & 0o040, f"{path}: {info.st_mode:o}"


@pytest.mark.parametrize("mode", MODES)
async def test_bad_limits_are_refused_at_deploy(mode: str, make_sandboxed: Maker):
    async with running(make_sandboxed(mode)) as (provider, _):
        for spec, words in (
            (FunctionSpec(name="tiny", env_process="cat", limits=Resources(memory="1M")), "below"),
            (FunctionSpec(name="tiny", env_process="cat", limits=Resources(memory="lots")), "not a memory size"),
            (FunctionSpec(name="tiny", env_process="cat", labels={"com.faasd.limits.processes": "-3"}), "processes"),
        ):
            with pytest.raises(InvalidRequest, match=words):
                await provider.deploy(spec, 1)
        assert await provider.list() == []


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed")
async def test_a_stop_drains_calls_inside_bwrap(make_sandboxed: Maker):
    """SIGTERM reaches the watchdog inside the sandbox (bwrap does not pass signals on): the call in flight
    is answered before the replica ends, and the watchdog logs its own shutdown."""
    spec = FunctionSpec(name="slow", env_process="sh -c 'sleep 1; echo done'", env_vars={"healthcheck_interval": "0"})
    async with running(make_sandboxed("bwrap")) as (provider, registry):
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "slow", 1)
        answers: list[tuple[int, bytes]] = []

        async def slow_call() -> None:
            answers.append(await call(endpoint))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            await trio.sleep(0.3)
            await provider.scale("slow", 0)
        assert answers == [(200, b"done\n")]
        await wait_until(lambda: not provider.replicas("slow"), "the replica to end")
        lines = [m.text async for m in provider.logs(LogRequest(name="slow"))]
        assert any("shutting down" in line and "SIGTERM" in line for line in lines), lines


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed")
async def test_a_stop_finds_the_watchdog_among_its_cgroups_members_not_every_process(
    make_sandboxed: Maker, monkeypatch: pytest.MonkeyPatch
):
    """Where replicas have cgroups, the SIGTERM's target inside bwrap is looked for among the replica's cgroup's
    members: no read of every process on the host per replica stopped (docs/coldstart.md). The stop still
    drains: the watchdog logs its own SIGTERM."""
    scans: list[str] = []
    every_pid = sandbox_host._pids

    def counted() -> list[int]:
        scans.append(sys._getframe(1).f_code.co_name)
        return every_pid()

    monkeypatch.setattr(sandbox_host, "_pids", counted)
    async with running(make_sandboxed("bwrap")) as (provider, registry):
        if provider.sandbox_info()["cgroups"] == "none":
            pytest.skip("no control groups for replicas on this host")
        spec = FunctionSpec(name="stopped", env_process="cat", env_vars={"healthcheck_interval": "0"})
        await provider.deploy(spec, 1)
        await ready_endpoints(registry, "stopped", 1)
        await provider.scale("stopped", 0)
        await wait_until(lambda: not provider.replicas("stopped"), "the replica to end")
        lines: list[str] = []
        with trio.move_on_after(5):
            while not any("SIGTERM" in line for line in lines):
                lines = await _log_lines(provider, "stopped")
                await trio.sleep(0.05)
    assert any("shutting down" in line and "SIGTERM" in line for line in lines), lines
    assert "sandboxed_pid" not in scans, scans


async def _log_lines(provider: Provider, name: str) -> list[str]:
    return [m.text async for m in provider.logs(LogRequest(name=name))]


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed")
async def test_killing_a_sandbox_ends_every_process_in_it(make_sandboxed: Maker, tmp_path: Path):
    """A function process that left its session and process group still dies with its sandbox."""
    marker = f"faasd-escape-{os.getpid()}"
    spec = FunctionSpec(name="escaper", env_process=ESCAPE % marker)
    async with running(make_sandboxed("bwrap")) as (provider, registry):
        assert isinstance(provider, LocalProvider)
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "escaper", 1)
        assert await call(endpoint) == (200, b"ok\n")
        (escaped,) = await wait_until(lambda: _escaped(marker), "the escaped process")
        (info,) = provider.replicas("escaper")
        assert info.pid is not None
        os.kill(info.pid, signal.SIGKILL)
        await wait_until(lambda: not process_alive(escaped), "the escaped process to die with its sandbox")
        await wait_until(lambda: [e for e in registry.get("escaper") if e.replica != info.replica], "a new replica")


@pytest.mark.skipif(os.geteuid() != 0, reason="uid mode needs root")
async def test_what_a_replica_leaves_running_ends_with_it_in_uid_mode(make_sandboxed: Maker):
    """uid mode has no PID namespace: a process that left its replica's session is found by the replica's uid."""
    marker = f"faasd-escape-{os.getpid()}"
    spec = FunctionSpec(name="escaper", env_process=ESCAPE % marker)
    async with running(make_sandboxed("uid")) as (provider, registry):
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "escaper", 1)
        assert await call(endpoint) == (200, b"ok\n")
        (escaped,) = await wait_until(lambda: _escaped(marker), "the escaped process")
        await provider.remove("escaper")
        await wait_until(lambda: not process_alive(escaped), "the escaped process to be killed")


ESCAPE = """sh -c 'setsid sh -c "sleep 1000; : %s" >/dev/null 2>&1 & echo ok'"""
"""A function that leaves a process behind in a session of its own, named by a marker."""


def _escaped(marker: str) -> list[int] | None:
    """The process :data:`ESCAPE` left, once there is exactly one (its shell's child has the same command
    line between its fork and its exec of sleep)."""
    found = _processes_with(marker)
    return found if len(found) == 1 else None


def _processes_with(marker: str) -> list[int]:
    """Live processes :data:`ESCAPE` left with ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == b"sh\x00-c\x00sleep 1000; : %b\x00" % marker.encode():
                    found.append(int(entry))
            except OSError:
                continue
    return [pid for pid in found if process_alive(pid)]


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- the build step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_requirements_are_installed_by_the_function_itself(mode: str, make_sandboxed: Maker):
    """pip runs in the function's sandbox, as its uid; what it installed ends up root-owned, group-readable."""
    wheel = _wheel()
    spec = FunctionSpec(
        name="withdeps",
        env_vars={"mode": "python"},
        handler_archive=_tar_gz(
            {
                "handler.py": b"import tinydep\n\ndef handle(req):\n    return tinydep.ANSWER\n",
                "requirements.txt": b"./tinydep-1.0-py3-none-any.whl\n",
                "tinydep-1.0-py3-none-any.whl": wheel,
            }
        ),
    )
    async with running(make_sandboxed(mode)) as (provider, registry):
        assert isinstance(provider, LocalProvider)
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "withdeps", 1)
        assert await call(endpoint) == (200, b"from tinydep")
        gid = provider._functions["withdeps"].gid
        installed = Path(provider._host.functions_dir) / "withdeps" / ".packages" / "tinydep.py"
        info = installed.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, gid, 0o640)


@pytest.mark.parametrize("mode", MODES)
def test_the_build_step_is_confined(mode: str, tmp_path: Path):
    """A build step is the function's code too: it sees what a replica sees, as the function's uid, and
    what it leaves -- files, a directory, a link to a file it may not read -- is taken back safely."""
    from faasd.runtime import self_command
    from faasd.sandbox.host import resolve

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "password").write_text("the-admin-password\n")
    (state / "password").chmod(0o600)
    sandbox = resolve(mode, state_dir=str(state), command=self_command())
    try:
        _check_build(sandbox, state)
    finally:
        if sandbox.work_root:
            shutil.rmtree(sandbox.work_root)


def _check_build(sandbox: Sandbox, state: Path) -> None:
    from faasd.runtime import self_command
    from faasd.sandbox.build import Build

    root = Path(sandbox.work_root or state) / "staging"
    root.mkdir(exist_ok=True)
    workdir = root / "build-test"
    workdir.mkdir(mode=0o700)
    uid = FUNCTION_UID_FIRST + 4242
    script = (
        f"id -u > who; cat {state}/password > stolen 2>&1 || echo denied >> stolen; "
        "mkdir sub; echo hi > sub/file; ln -s /etc/shadow link; ln -s sub linked-dir"
    )
    build = Build(sandbox, workdir=str(workdir), uid=uid, faasd=self_command().argv, env={"PATH": "/usr/bin:/bin"})
    build.prepare()
    try:
        launch = build.launch(["/bin/sh", "-c", script])
        done = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, capture_output=True, text=True, timeout=60)
    finally:
        build.finish()
    assert done.returncode == 0, done.stderr
    assert (workdir / "who").read_text() == f"{uid}\n"
    stolen = (workdir / "stolen").read_text()
    assert "the-admin-password" not in stolen and stolen.endswith("denied\n"), stolen
    for path, mode_bits in ((workdir, 0o750), (workdir / "sub", 0o750), (workdir / "sub" / "file", 0o640)):
        info = path.lstat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, uid, mode_bits), path
    assert (workdir / "link").lstat().st_uid == 0 and Path("/etc/shadow").stat().st_gid != uid  # Not followed.


def _wheel() -> bytes:
    """A minimal pure-Python wheel (``tinydep`` 1.0), built by hand: no index needed."""
    import base64
    import hashlib
    import zipfile

    files = {
        "tinydep.py": b"ANSWER = 'from tinydep'\n",
        "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("tinydep-1.0.dist-info/RECORD", "\n".join([*record, "tinydep-1.0.dist-info/RECORD,,"]) + "\n")
    return buffer.getvalue()
