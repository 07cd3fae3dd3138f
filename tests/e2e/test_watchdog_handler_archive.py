"""``handler_archive``: the watchdog unpacks a function's code into its working directory before it starts
(docs/watchdog.md; how the Swarm backend runs a handler archive). The archive is hostile input: a bad
one stops the watchdog with one line naming the variable, before anything runs, and writes nothing
outside the directory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.helpers import free_port


def _tar_gz(
    files: dict[str, bytes], *, modes: dict[str, int] | None = None, links: dict[str, str] | None = None
) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = (modes or {}).get(name, 0o644)
            tar.addfile(member, io.BytesIO(data))
        for name, target in (links or {}).items():
            member = tarfile.TarInfo(name)
            member.type = tarfile.SYMTYPE
            member.linkname = target
            tar.addfile(member)
    return raw.getvalue()


def _archive_file(tmp_path: Path, data: bytes) -> str:
    """The archive lives outside the working directory (on Swarm: a read-only Docker config)."""
    holder = tmp_path.parent / f"{tmp_path.name}-archive"
    holder.mkdir(exist_ok=True)
    path = holder / "handler-archive"
    path.write_bytes(data)
    return str(path)


def test_python_mode_runs_the_handler_from_the_archive(start_watchdog, tmp_path: Path) -> None:
    archive = _tar_gz(
        {
            "handler.py": b"from lib.words import shout\n\ndef handle(req):\n    return shout(req)\n",
            "lib/__init__.py": b"",
            "lib/words.py": b"def shout(text):\n    return text.upper() + '!'\n",
        }
    )
    assert not (tmp_path / "handler.py").exists()
    watchdog = start_watchdog(None, mode="python", workers="1", handler_archive=_archive_file(tmp_path, archive))
    response = watchdog.request("POST", "/", content=b"from the archive")
    assert (response.status_code, response.text) == (200, "FROM THE ARCHIVE!")
    assert (tmp_path / "lib" / "words.py").read_bytes().startswith(b"def shout")
    assert "handler unpacked" in watchdog.logs()


def test_fork_mode_runs_an_executable_of_the_archive(start_watchdog, tmp_path: Path) -> None:
    """``fprocess`` is looked up after the archive is unpacked, and execute bits are kept."""
    archive = _tar_gz({"run.sh": b'#!/bin/sh\nprintf "sh:%s" "$(cat)"\n'}, modes={"run.sh": 0o755})
    watchdog = start_watchdog("./run.sh", handler_archive=_archive_file(tmp_path, archive))
    response = watchdog.request("POST", "/", content=b"x")
    assert (response.status_code, response.text) == (200, "sh:x")


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        pytest.param(_tar_gz({"../escaped.py": b"x = 1\n"}), "contains '..'", id="dot-dot"),
        pytest.param(_tar_gz({"/abs.py": b"x = 1\n"}), "absolute path", id="absolute"),
        pytest.param(_tar_gz({}, links={"out": "../../etc"}), "outside the function directory", id="link-out"),
        pytest.param(b"not a tar archive at all", "not a readable tar archive", id="garbage"),
    ],
)
def test_a_hostile_archive_stops_the_watchdog_with_one_line(
    run_watchdog, watchdog_env, tmp_path: Path, archive: bytes, reason: str
) -> None:
    path = _archive_file(tmp_path, archive)
    env = watchdog_env(fprocess="cat", port=str(free_port()), metrics_port="0", handler_archive=path)
    result = run_watchdog(env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"faasd watchdog: invalid handler_archive='{path}': handlerArchive"), lines[0]
    assert reason in lines[0]
    assert not (tmp_path.parent / "escaped.py").exists() and not (tmp_path / "out").exists()


def test_a_missing_archive_file_is_one_line(run_watchdog, watchdog_env, tmp_path: Path) -> None:
    env = watchdog_env(fprocess="cat", port=str(free_port()), handler_archive=str(tmp_path / "absent"))
    result = run_watchdog(env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"faasd watchdog: invalid handler_archive='{tmp_path / 'absent'}': cannot read it: No such file or directory"
    )
