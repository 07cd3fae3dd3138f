"""The sandbox's pure parts -- spec, limits, uid pool, launch plans -- and its file helpers, on real files."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from faasd.config import ConfigError, DaemonConfig
from faasd.credentials import InsecurePasswordFile, load_or_create_password
from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec, Resources
from faasd.sandbox.cgroups import Cgroups, Hierarchy, Placement
from faasd.sandbox.enter import SandboxSpecError, format_spec, parse_spec
from faasd.sandbox.files import prepare_work_root, reachable_by_others, share_with_group
from faasd.sandbox.limits import DEFAULT_OPEN_FILES, DEFAULT_PROCESSES, DEFAULT_TMP_BYTES, Limits, limits_from_spec
from faasd.sandbox.plan import APP_DIR, SECRETS_MOUNT, ReplicaSandbox, Sandbox, plan_launch
from faasd.sandbox.uids import FUNCTION_UID_FIRST, PROBE_UID, UidPool, UidsExhausted
from faasd.store import Store

# -- the spec a replica is confined by ----------------------------------------------------------------


def test_spec_round_trip_in_key_order():
    text = format_spec(oom=1000, uid=5, gid=6, nofile=64, life=7, **{"as": 1 << 27})
    assert text == f"uid=5,gid=6,as={1 << 27},nofile=64,oom=1000,life=7"
    assert parse_spec(text) == {"uid": 5, "gid": 6, "as": 1 << 27, "nofile": 64, "oom": 1000, "life": 7}
    assert parse_spec("") == {}


@pytest.mark.parametrize("text", ["uid=5", "gid=5", "bogus=1", "uid=-1,gid=1", "as=1,as=2", "as", "as=1e6", "as=,"])
def test_bad_specs_are_refused(text: str):
    with pytest.raises(SandboxSpecError):
        parse_spec(text)


# -- limits -------------------------------------------------------------------------------------------


def test_limits_default_and_from_the_spec():
    assert limits_from_spec(FunctionSpec(name="f")) == Limits()
    assert Limits().tmp_bytes == DEFAULT_TMP_BYTES and (Limits().processes, Limits().open_files) == (
        DEFAULT_PROCESSES,
        DEFAULT_OPEN_FILES,
    )
    spec = FunctionSpec(
        name="f",
        limits=Resources(memory="128M", cpu="0.5"),
        requests=Resources(memory="4G"),  # A reservation: checked, not applied.
        labels={
            "com.faasd.limits.processes": "64",
            "com.faasd.limits.open_files": " 1024 ",
            "com.faasd.cpu-class": "batch",
        },
    )
    limits = limits_from_spec(spec)
    assert limits == Limits(
        memory_bytes=128 << 20, cpu_nanos=500_000_000, processes=64, open_files=1024, cpu_class="batch"
    )
    assert limits.tmp_bytes == 128 << 20
    assert limits_from_spec(FunctionSpec(name="f", limits=Resources(cpu="250m"))).cpu_nanos == 250_000_000


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (FunctionSpec(name="f", limits=Resources(memory="32M")), "limits.memory '32M' is below"),
        (FunctionSpec(name="f", limits=Resources(memory="lots")), "limits.memory 'lots' is not a memory size"),
        (FunctionSpec(name="f", requests=Resources(memory="x")), "requests.memory 'x'"),
        (FunctionSpec(name="f", limits=Resources(cpu="lots")), "limits.cpu 'lots' is not a CPU amount"),
        (FunctionSpec(name="f", limits=Resources(cpu="5m")), r"limits.cpu '5m' is below the minimum of 0.01"),
        (FunctionSpec(name="f", requests=Resources(cpu="-1")), "requests.cpu '-1'"),
        (FunctionSpec(name="f", labels={"com.faasd.limits.processes": "8"}), "from 16 to"),
        (FunctionSpec(name="f", labels={"com.faasd.cpu-class": "idle"}), "auto, batch, ordinary"),
        (FunctionSpec(name="f", labels={"com.faasd.limits.open_files": "many"}), "com.faasd.limits.open_files"),
    ],
)
def test_bad_limits_name_the_field(spec: FunctionSpec, words: str):
    with pytest.raises(InvalidRequest, match=words):
        limits_from_spec(spec)


# -- uids ---------------------------------------------------------------------------------------------


def test_uid_pool_hands_out_a_free_uid_once_per_function():
    pool = UidPool()
    a = pool.acquire("a")
    assert FUNCTION_UID_FIRST <= a < PROBE_UID and pool.acquire("a") == a and pool.get("a") == a
    others = {pool.acquire(f"f{i}") for i in range(50)}
    assert a not in others and len(others) == 50 and PROBE_UID not in others
    pool.release("a")
    assert pool.get("a") is None


def test_uid_pool_skips_busy_and_taken_uids():
    pool = UidPool(first=10, last=14)
    pool.acquire("a")
    busy = {uid for uid in range(10, 15) if uid != pool.get("a")}
    taken = pool.get("a")
    busy.discard(min(busy))  # One number free, the rest run processes (leftovers, another daemon's).
    assert pool.acquire("b", busy=busy) not in busy | {taken}


def test_uid_pool_says_when_it_is_full():
    pool = UidPool(first=10, last=11)
    pool.acquire("a")
    pool.acquire("b")
    with pytest.raises(UidsExhausted):
        pool.acquire("c")


# -- launch plans -------------------------------------------------------------------------------------

COMMAND = ("/usr/bin/python3", "-S", "/opt/faasd.pyz")
ENV = {"PATH": "/usr/bin", "USER": "root", "parent_pid": "42", "TMPDIR": "/state/replicas/r/tmp", "fprocess": "cat"}
SYSTEM = (("/usr", ""), ("/etc", ""), ("/bin", "usr/bin"))


def _replica(**changes: object) -> ReplicaSandbox:
    values: dict[str, object] = {
        "workdir": "/state/functions/f",
        "secrets": True,
        "uid": FUNCTION_UID_FIRST,
        "limits": Limits(memory_bytes=128 << 20),
        "name": "f-abc123",
    }
    values.update(changes)
    return ReplicaSandbox(**values)  # type: ignore[arg-type]


def test_none_only_applies_the_limits():
    sandbox = Sandbox(mode="none", requested="none", reason="", root=True)
    launch = plan_launch(sandbox, _replica(), COMMAND, ENV)
    spec = f"as={128 << 20},nofile={DEFAULT_OPEN_FILES},oom=1000,nice=10"  # No uid; no nproc: the daemon's uid.
    assert launch.argv == (*COMMAND, "_sandbox", spec, "watchdog")
    assert launch.env == ENV and launch.cwd == "/state/functions/f" and launch.pass_fds == ()


V1 = Cgroups("v1", (Hierarchy("/sys/fs/cgroup/cpu", "faasd-x", ("cpu",)), Hierarchy("/cg/pids", "faasd-x", ("pids",))))
V2 = Cgroups("v2", (Hierarchy("/sys/fs/cgroup/faasd.service", "faasd-x", ("cpu", "pids", "memory")),))


def test_a_replica_joins_its_cgroups_first_and_keeps_its_limits():
    """cgroup v1 (cpu, pids): a shell joins the cgroups, then becomes the replica; no autogroup nice value
    (the CPU cgroup's weight does that); memory stays RLIMIT_AS."""
    sandbox = Sandbox(mode="none", requested="none", reason="", root=True, cgroups=V1)
    launch = plan_launch(sandbox, _replica(cgroup=Placement(("/a/r", "/b c/r"))), COMMAND, ENV)
    spec = f"as={128 << 20},nofile={DEFAULT_OPEN_FILES},oom=1000"
    assert launch.argv[:2] == ("/bin/sh", "-c") and launch.argv[3] == "faasd-join"
    script = launch.argv[2]
    assert script.startswith("{ echo 0 > /a/r/cgroup.procs && echo 0 > '/b c/r/cgroup.procs'; } || {")
    assert script.endswith('exit 126; }; exec "$@"')
    assert launch.argv[4:] == (*COMMAND, "_sandbox", spec, "watchdog") and launch.pass_fds == ()


def test_a_cgroup_v2_memory_limit_replaces_rlimit_as():
    """cgroup v2 with memory.max: no RLIMIT_AS; the watchdog gets memory.events (mev) and the limit (mmax)."""
    sandbox = Sandbox(mode="uid", requested="uid", reason="", root=True, python="/usr/bin/python3", cgroups=V2)
    placement = Placement(("/a",), events_fd=12, memory_bytes=128 << 20)
    launch = plan_launch(sandbox, _replica(scratch="/tmp/r.home", cgroup=placement), COMMAND, ENV)
    spec = launch.argv[launch.argv.index("_sandbox") + 1]
    assert spec.startswith(f"mev=12,mmax={128 << 20},uid=") and "as=" not in spec and "nice=" not in spec
    assert f"nproc={DEFAULT_PROCESSES}" in spec and launch.pass_fds == (12,)


def test_in_bwrap_the_join_comes_before_bubblewrap():
    """bwrap's own processes (its init reaps the function's orphans) are in the replica's cgroup too."""
    sandbox = Sandbox(mode="bwrap", requested="bwrap", reason="", root=True, bwrap="bwrap", system=SYSTEM, cgroups=V1)
    sandbox = replace(sandbox, shim=("/usr/bin/setsid", "--wait"))
    launch = plan_launch(sandbox, _replica(cgroup=Placement(("/a/r",)), lifeline=9), COMMAND, ENV)
    assert launch.argv[:4] == ("/bin/sh", "-c", launch.argv[2], "faasd-join")
    assert launch.argv[4:7] == ("/usr/bin/setsid", "--wait", "bwrap") and launch.pass_fds == (9,)


def test_uid_mode_drops_to_the_function_uid_with_a_private_scratch():
    sandbox = Sandbox(mode="uid", requested="uid", reason="", root=True, python="/usr/bin/python3.11")
    launch = plan_launch(sandbox, _replica(scratch="/tmp/w/replicas/r.home", lifeline=9), COMMAND, ENV)
    uid = FUNCTION_UID_FIRST
    limits = f"as={128 << 20},nproc={DEFAULT_PROCESSES},nofile={DEFAULT_OPEN_FILES}"
    spec = f"uid={uid},gid={uid},{limits},nnp=1,oom=1000,nice=10"
    assert launch.argv == ("/usr/bin/python3.11", "-S", "/opt/faasd.pyz", "_sandbox", spec, "watchdog")
    assert launch.env["TMPDIR"] == launch.env["HOME"] == "/tmp/w/replicas/r.home"
    assert launch.env["lock_file"] == "/tmp/w/replicas/r.home/.lock"
    assert launch.env["parent_pid"] == "42" and "USER" not in launch.env  # The daemon is visible: watched.
    assert launch.pass_fds == ()  # No lifeline outside bwrap.


def test_bwrap_as_root_hides_the_host_and_drops_in_the_replica():
    sandbox = Sandbox(
        mode="bwrap",
        requested="auto",
        reason="",
        root=True,
        bwrap="/usr/bin/bwrap",
        shim=("/usr/bin/setsid", "--wait"),
        system=SYSTEM,
        binds=("/root/.pyenv/versions/3.11.7", "/opt/faasd.pyz"),
        hide=("/opt/state",),
    )
    launch = plan_launch(sandbox, _replica(lifeline=9), COMMAND, ENV)
    argv = list(launch.argv)
    assert argv[:3] == ["/usr/bin/setsid", "--wait", "/usr/bin/bwrap"]
    assert "--unshare-user" not in argv and {"--unshare-pid", "--unshare-ipc", "--die-with-parent"} <= set(argv)
    assert _pairs(argv, "--cap-add") == ["CAP_SETUID", "CAP_SETGID"] and _pairs(argv, "--cap-drop") == ["ALL"]
    binds = _pairs(argv, "--ro-bind", 2)
    assert ["/state/functions/f", APP_DIR] in binds and ["/state/functions/f/.secrets", SECRETS_MOUNT] in binds
    assert ["/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7"] in binds
    assert ["/usr", "/usr"] in binds and _pairs(argv, "--symlink", 2) == [["usr/bin", "/bin"]]
    assert _pairs(argv, "--tmpfs") == ["/tmp", "/opt/state"]
    assert argv[argv.index("--tmpfs") - 4 : argv.index("--tmpfs")] == ["--perms", "1777", "--size", str(128 << 20)]
    # Parents of the binds are made 0755 (bwrap would make them 0700), before the binds themselves.
    dirs = _pairs(argv, "--dir")
    assert dirs == ["/home", "/opt", "/root", "/root/.pyenv", "/root/.pyenv/versions", "/var", "/var/openfaas"]
    assert argv.index("/root/.pyenv/versions") < argv.index("/root/.pyenv/versions/3.11.7")
    assert argv.index("/tmp") < argv.index("/opt/faasd.pyz")  # A bind under /tmp survives the tmpfs.
    end = argv.index("--")
    spec = argv[end + 5]
    assert argv[end - 2 : end] == ["--chdir", APP_DIR] and argv[end + 1 : end + 4] == list(COMMAND)
    assert spec.startswith(f"uid={FUNCTION_UID_FIRST},gid={FUNCTION_UID_FIRST},") and "nnp" not in spec
    assert spec.endswith(",oom=1000,nice=10,life=9") and argv[end + 6 :] == ["watchdog"]
    assert launch.pass_fds == (9,)
    assert launch.env["secret_mount_path"] == SECRETS_MOUNT and launch.env["TMPDIR"] == launch.env["HOME"] == "/tmp"
    assert launch.env["lock_file"] == "/tmp/.lock-f-abc123" and "parent_pid" not in launch.env


def test_a_build_step_gets_its_directory_writable_and_runs_a_program():
    sandbox = Sandbox(mode="bwrap", requested="bwrap", reason="", root=True, bwrap="bwrap", system=SYSTEM)
    build = _replica(secrets=False, writable=True, limits=Limits())
    launch = plan_launch(sandbox, build, COMMAND, ENV, ("--", "/usr/bin/python3", "-m", "pip", "install"))
    argv = list(launch.argv)
    assert _pairs(argv, "--bind", 2) == [["/state/functions/f", APP_DIR]]
    assert [pair for pair in _pairs(argv, "--ro-bind", 2) if pair[1] in (APP_DIR, SECRETS_MOUNT)] == []
    at = argv.index("_sandbox")
    assert "as=" not in argv[at + 1] and argv[at + 2 :] == ["--", "/usr/bin/python3", "-m", "pip", "install"]


def test_bwrap_without_root_uses_a_user_namespace_and_keeps_the_uid():
    sandbox = Sandbox(mode="bwrap", requested="bwrap", reason="", root=False, bwrap="bwrap", system=SYSTEM)
    launch = plan_launch(sandbox, _replica(uid=None, secrets=False), COMMAND, ENV)
    argv = list(launch.argv)
    assert "--unshare-user" in argv and "--cap-add" not in argv
    assert [pair for pair in _pairs(argv, "--ro-bind", 2) if pair[1] == SECRETS_MOUNT] == []
    spec = argv[argv.index("_sandbox") + 1]
    assert "uid=" not in spec and f"nproc={DEFAULT_PROCESSES}" in spec  # Counted in its own user namespace.


def _pairs(argv: list[str], flag: str, width: int = 1) -> list:
    found = []
    for index, value in enumerate(argv):
        if value == flag:
            values = argv[index + 1 : index + 1 + width]
            found.append(values[0] if width == 1 else values)
    return found


# -- files --------------------------------------------------------------------------------------------


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A 0755 directory any user can enter (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="faasd-unit-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_reachable_by_others_names_what_stops_them(public_dir: Path):
    (public_dir / "open").mkdir(mode=0o755)
    (public_dir / "open" / "file").write_text("x")
    (public_dir / "open" / "file").chmod(0o644)
    assert reachable_by_others(str(public_dir / "open" / "file")) is None
    (public_dir / "open").chmod(0o750)
    assert reachable_by_others(str(public_dir / "open" / "file")) == (
        f"{public_dir}/open is mode 0750: other users cannot enter it"
    )
    (public_dir / "open").chmod(0o755)
    (public_dir / "open" / "file").chmod(0o640)
    assert "cannot read it" in str(reachable_by_others(str(public_dir / "open" / "file")))


def test_share_with_group_gives_the_group_read_and_nobody_else_anything(public_dir: Path):
    gid = 54321 if os.geteuid() == 0 else os.getgid()
    (public_dir / "sub").mkdir(mode=0o755)
    (public_dir / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (public_dir / "sub" / "run.sh").chmod(0o755)
    (public_dir / "data").write_text("x")
    (public_dir / "data").chmod(0o666)
    (public_dir / "link").symlink_to("/etc/passwd")
    share_with_group(str(public_dir), gid)
    modes = {
        path.name: (stat.S_IMODE(path.lstat().st_mode), path.lstat().st_gid)
        for path in (public_dir, public_dir / "sub", public_dir / "sub" / "run.sh", public_dir / "data")
    }
    assert modes == {
        public_dir.name: (0o750, gid),
        "sub": (0o750, gid),
        "run.sh": (0o750, gid),
        "data": (0o640, gid),
    }
    assert (public_dir / "link").lstat().st_gid == gid and Path("/etc/passwd").stat().st_gid != gid  # Not followed.


def test_the_work_root_is_ours_or_refused(public_dir: Path):
    root = public_dir / "work"
    prepare_work_root(str(root))
    (root / "functions" / "leftover").mkdir()
    prepare_work_root(str(root))  # Taken over, emptied, laid out again.
    assert sorted(p.name for p in root.iterdir()) == ["functions", "replicas", "staging"]
    assert stat.S_IMODE(root.stat().st_mode) == 0o711 and not list((root / "functions").iterdir())
    squatted = public_dir / "squatted"
    squatted.symlink_to(public_dir)
    with pytest.raises(OSError, match="not a directory owned by"):
        prepare_work_root(str(squatted))


# -- state files --------------------------------------------------------------------------------------


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_password_file_is_0600_whatever_the_umask(tmp_path: Path, wide_umask: None):
    password, path = load_or_create_password(str(tmp_path), {})
    assert path == str(tmp_path / "password") and len(password) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_password(str(tmp_path), {}) == (password, path)


def test_a_password_file_others_could_read_is_refused(tmp_path: Path):
    (tmp_path / "password").write_text("secret\n")
    (tmp_path / "password").chmod(0o640)
    with pytest.raises(InsecurePasswordFile) as caught:
        load_or_create_password(str(tmp_path), {})
    assert caught.value.strerror.startswith(f"password file {tmp_path / 'password'} has mode 0640")
    from_env = "from-the-environment-0123456789"
    assert load_or_create_password(str(tmp_path), {"FAASD_PASSWORD": from_env}) == (from_env, None)


def test_database_and_its_journal_are_0600_whatever_the_umask(tmp_path: Path, wide_umask: None):
    old = tmp_path / "faasd.db"
    old.write_bytes(b"")
    old.chmod(0o666)  # As an older faasd under a wide umask left it.
    store = Store.open(str(old))
    try:
        store.put_secret("s", b"v")
        files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    finally:
        store.close()
    assert files == {"faasd.db": 0o600, "faasd.db-wal": 0o600, "faasd.db-shm": 0o600}


# -- configuration ------------------------------------------------------------------------------------


def test_sandbox_setting_from_every_source():
    assert DaemonConfig.load(env={}).sandbox == "auto"
    assert DaemonConfig.load(env={"FAASD_SANDBOX": "uid"}).sandbox == "uid"
    assert DaemonConfig.load(env={"FAASD_SANDBOX": "uid"}, flags={"sandbox": "BWRAP"}).sandbox == "bwrap"
    with pytest.raises(ConfigError, match=r"invalid sandbox='chroot' .*use one of auto, bwrap, uid, none"):
        DaemonConfig.load(env={"FAASD_SANDBOX": "chroot"})
