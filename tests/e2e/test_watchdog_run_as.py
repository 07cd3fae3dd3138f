"""``run_as`` at the watchdog (faasd/watchdog/privileges.py): started as root, as a Swarm task's entrypoint
is, the watchdog reads its call token (a file only root may read, as Swarm mounts it) and unpacks its
handler archive, then serves as the unprivileged user: the function's processes -- forked per call or
python mode's workers -- run as that uid with no new privileges, cannot read the token file, and
still work (``/tmp``, the unpacked code). No Docker here: the test is root and starts the watchdog.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.watchdog.config import ConfigError, WatchdogConfig
from tests.e2e.conftest import CLEAN_PATH
from tests.helpers import parse_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the watchdog starts as root and drops")

NOBODY = 65534
HEADER = "X-Faasd-Call-Token"

FORK_PROBE = (
    'sh -c \'id -u; id -g; cat "$token_path" 2>&1; echo; grep -E "^(Uid|Gid|Groups|NoNewPrivs|CapEff):" '
    "/proc/self/status; echo hi > /tmp/run-as-$$ && cat /tmp/run-as-$$ && rm /tmp/run-as-$$; cat'"
)

PYTHON_HANDLER = """\
import os


def handle(event, context):
    try:
        with open(os.environ["token_path"]) as file:
            token = file.read()
    except PermissionError as exc:
        token = "denied: " + exc.strerror
    with open("/tmp/run-as-python", "w") as file:
        file.write("written")
    os.unlink("/tmp/run-as-python")
    with open("data.txt") as file:
        data = file.read()
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "token": token, "data": data}
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody may enter (0755, root's), holding the token file (0400, root's) -- so only the
    file's own mode keeps the function out, as with Swarm's secret mount."""
    path = Path(tempfile.mkdtemp(prefix="faasd-run-as-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def token_file(directory: Path) -> tuple[Path, str]:
    token = secrets.token_urlsafe(32)
    path = directory / "call-token"
    path.write_text(token + "\n")
    path.chmod(0o400)
    return path, token


def archive_file(directory: Path, files: dict[str, str]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    path = directory / "handler.tgz"
    path.write_bytes(raw.getvalue())
    path.chmod(0o400)  # Root's only: the watchdog unpacks it before it drops.
    return path


def lock_dir(directory: Path) -> Path:
    """Where the watchdog, once ``nobody``, writes its lock file."""
    path = directory / "lock"
    path.mkdir(mode=0o1777)
    path.chmod(0o1777)
    return path


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_fork_mode_functions_run_as_nobody_and_cannot_read_the_token(start_watchdog, shared_dir: Path) -> None:
    path, token = token_file(shared_dir)
    watchdog = start_watchdog(
        FORK_PROBE,
        call_token_file=str(path),
        token_path=str(path),
        run_as=f"{NOBODY}:{NOBODY}",
        lock_file=str(lock_dir(shared_dir) / ".lock"),
        cwd=shared_dir,
    )
    answer = watchdog.request("POST", "/", content=b"body", headers={HEADER: token})
    assert answer.status_code == 200, answer.text
    lines = answer.text.splitlines()
    assert lines[:2] == [str(NOBODY), str(NOBODY)], answer.text
    assert "Permission denied" in lines[2] and token not in answer.text, answer.text
    status = dict(line.split(":\t", 1) for line in lines[4:9])
    assert status["Uid"].split() == [str(NOBODY)] * 4 and status["Gid"].split() == [str(NOBODY)] * 4, status
    assert status["Groups"].strip() == "" and status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0, status
    assert lines[9:] == ["hi", "body"], answer.text  # /tmp is writable; stdin still reaches the function.
    # The watchdog itself serves as nobody too (it parses untrusted HTTP), for good.
    status = proc_status(watchdog.pid)
    assert status["Uid"].split() == [str(NOBODY)] * 4 and status["NoNewPrivs"] == "1", status
    assert watchdog.request("POST", "/", content=b"x").status_code == 403  # The token is still checked.


def test_a_function_run_as_nobody_gets_the_environment_the_watchdog_was_given(start_watchdog, shared_dir: Path) -> None:
    # Once nobody (and non-dumpable) the watchdog cannot read /proc/self/environ: read before it drops, or
    # the function would get os.environ with Python's LC_CTYPE=C.UTF-8 (PEP 538), which nobody set.
    path, token = token_file(shared_dir)
    watchdog = start_watchdog(
        "env", call_token_file=str(path), run_as=f"{NOBODY}:{NOBODY}", lock_file=str(lock_dir(shared_dir) / ".lock")
    )
    answer = watchdog.request("POST", "/", content=b"", headers={HEADER: token})
    assert answer.status_code == 200, answer.text
    names = parse_env(answer.text).keys()
    assert "fprocess" in names and not {"LANG", "LC_ALL", "LC_CTYPE"} & names, answer.text


def test_python_mode_workers_from_an_archive_run_as_nobody(start_watchdog, shared_dir: Path) -> None:
    path, token = token_file(shared_dir)
    app = shared_dir / "app"
    app.mkdir(mode=0o755)
    archive = archive_file(shared_dir, {"handler.py": PYTHON_HANDLER, "data.txt": "from the archive"})
    watchdog = start_watchdog(
        None,
        mode="python",
        workers="1",
        handler="handler.py",
        handler_archive=str(archive),
        call_token_file=str(path),
        token_path=str(path),
        run_as="nobody",
        lock_file=str(lock_dir(shared_dir) / ".lock"),
        cwd=app,
    )
    answer = watchdog.request("POST", "/", content=b"{}", headers={HEADER: token})
    assert answer.status_code == 200, answer.text
    document = json.loads(answer.text)
    assert document == {
        "uid": NOBODY,
        "euid": NOBODY,
        "gid": NOBODY,
        "token": "denied: Permission denied",
        "data": "from the archive",
    }, document
    assert (app / "handler.py").stat().st_uid == 0  # Unpacked as root, before the drop: read-only code.


def test_run_as_is_validated_at_start(tmp_path: Path) -> None:
    base = {"PATH": CLEAN_PATH, "fprocess": "cat"}
    for value, needle in (("no-such-user", "no user"), ("nobody:no-such-group", "no group"), (":1", "use UID")):
        with pytest.raises(ConfigError, match=needle) as caught:
            WatchdogConfig.from_env({**base, "run_as": value})
        assert caught.value.name == "run_as"
    config = WatchdogConfig.from_env({**base, "run_as": "nobody"})
    assert config.run_as is not None and (config.run_as.uid, config.run_as.gid) == (NOBODY, NOBODY)
    assert WatchdogConfig.from_env({**base, "run_as": "root"}).run_as.is_root  # type: ignore[union-attr]
    assert WatchdogConfig.from_env(base).run_as is None


def test_a_watchdog_that_is_not_root_cannot_switch(watchdog_env, pyz_python, faasd_pyz) -> None:
    """Started as nobody with run_as=1234: one line, exit 2, nothing served (never silently as the wrong user)."""
    env = watchdog_env(fprocess="cat", run_as="1234", metrics_port="0", suppress_lock="true")
    result = subprocess.run(
        [pyz_python, str(faasd_pyz), "watchdog"],
        env=env,
        cwd="/",
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result
    assert "run_as=1234: cannot switch to uid 1234" in result.stderr, result.stderr
