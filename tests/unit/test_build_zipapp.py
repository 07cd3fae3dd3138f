"""scripts/build_zipapp.py: deterministic output, the right files inside, a .pyc for every module.

The builds reuse the wheel cache (``$FAASD_WHEEL_CACHE`` or ``~/.cache/faasd/wheels``), which the
session's ``dist/faasd.pyz`` build has filled, so nothing is downloaded here; the failure paths are
exercised in-process with a temporary cache and a fake download, so they need no network either.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_zipapp.py"
BUILD_TIMEOUT_S = 300


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the build script as the run/test commands do: a separate interpreter, any cwd."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two builds of the same tree into different paths (the output path must not leak into the bytes)."""
    outputs = (tmp_path_factory.mktemp("one") / "faasd.pyz", tmp_path_factory.mktemp("two") / "other-name.pyz")
    for output in outputs:
        result = run_build("--output", str(output))
        assert result.returncode == 0, result.stderr
        assert f"built {output}" in result.stdout
    return outputs


@pytest.fixture(scope="module")
def names(builds: tuple[Path, Path]) -> list[str]:
    """Entry names of the first build."""
    with zipfile.ZipFile(builds[0]) as archive:
        return archive.namelist()


@pytest.fixture
def build_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/build_zipapp.py imported as a module, to drive its pieces without the network.

    It must sit in sys.modules while it executes: dataclasses resolves string annotations through it.
    """
    spec = importlib.util.spec_from_file_location("build_zipapp_under_test", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_two_builds_are_byte_identical(builds: tuple[Path, Path]) -> None:
    first, second = builds
    assert first.read_bytes() == second.read_bytes()


def test_output_is_an_executable_script(builds: tuple[Path, Path]) -> None:
    output = builds[0]
    assert output.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert stat.S_IMODE(output.stat().st_mode) == 0o755


def test_entries_are_sorted_with_fixed_dates(builds: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(builds[0]) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_leaves_out_extensions_caches_stubs_and_test_suites(names: list[str]) -> None:
    for name in names:
        parts = PurePosixPath(name).parts
        assert not name.endswith((".so", ".pyd", ".pyi")), name
        assert "__pycache__" not in parts, name
        assert not {"tests", "_tests"} & set(parts), name
        assert not name.endswith(".dist-info/RECORD"), name


def test_ships_package_dependencies_metadata_and_licenses(names: list[str]) -> None:
    entries = set(names)
    assert {"__main__.py", "faasd/__init__.py", "faasd/__main__.py", "trio/__init__.py", "yaml/__init__.py"} <= entries
    assert any(n.startswith("trio-") and n.endswith(".dist-info/METADATA") for n in entries)
    assert any(".dist-info/" in n and "LICENSE" in n for n in entries)


def test_ships_the_web_ui_and_serves_it_from_inside_the_zip(
    builds: tuple[Path, Path], names: list[str], pyz_python: str, tmp_path: Path
) -> None:
    """The UI's static files are in the zip, and faasd reads them from there (importlib.resources), not from a
    checkout: an isolated interpreter in an empty directory, with only the zipapp on its path."""
    static = ROOT / "faasd" / "ui" / "static"
    shipped = sorted(path.name for path in static.iterdir())
    assert {f"faasd/ui/static/{name}" for name in shipped} <= set(names)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from faasd.ui.route import load_assets; "
        "import faasd; assert faasd.__file__.startswith(sys.argv[1]), faasd.__file__; "
        "print(' '.join(f'{n}:{len(a.body)}' for n, a in sorted(load_assets().items())))"
    )
    result = subprocess.run(
        [pyz_python, "-I", "-c", script, str(builds[0])], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{name}:{(static / name).stat().st_size}" for name in shipped]


def test_every_module_has_an_unchecked_hash_pyc_beside_it(builds: tuple[Path, Path], names: list[str]) -> None:
    sources = [n for n in names if n.endswith(".py")]
    assert len(sources) > 100
    missing = [n for n in sources if n + "c" not in set(names)]
    assert missing == []
    with zipfile.ZipFile(builds[0]) as archive:
        for source in ("__main__.py", "faasd/__main__.py", "trio/_core/_run.py"):
            header = archive.read(source + "c")[:8]
            assert header[:4] == importlib.util.MAGIC_NUMBER, source
            assert int.from_bytes(header[4:8], "little") == 0b01, f"{source}: not an unchecked-hash pyc"


def test_runs_from_any_directory(builds: tuple[Path, Path], pyz_python: str, tmp_path: Path) -> None:
    from faasd import __version__

    for args in (["--version"], ["--help"]):
        result = subprocess.run(
            [pyz_python, str(builds[0]), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        if args == ["--version"]:
            assert result.stdout.strip() == f"faasd {__version__}"


def test_if_stale_skips_a_fresh_output_and_rebuilds_an_old_one(builds: tuple[Path, Path], tmp_path: Path) -> None:
    output = builds[1]
    lock = tmp_path / "requirements.lock"
    lock.write_bytes((ROOT / "scripts" / "requirements.lock").read_bytes())
    built = output.stat().st_mtime
    os.utime(lock, (built - 3600, built - 3600))
    result = run_build("--if-stale", "--lock", str(lock), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    os.utime(lock, (built + 3600, built + 3600))
    result = run_build("--if-stale", "--lock", str(lock), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert f"built {output}" in result.stdout
    assert output.read_bytes() == builds[0].read_bytes()


def test_cached_wheel_with_the_right_hash_is_not_downloaded(
    build_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    locked = build_module.LockedWheel(
        "demo", "1.0", f"https://example.invalid/{wheel.name}", build_module.sha256_of(wheel)
    )

    def no_download(url: str, dest: Path) -> None:
        raise AssertionError(f"downloaded {url} although it was cached")

    monkeypatch.setattr(build_module, "download", no_download)
    assert build_module.fetch_wheel(locked, tmp_path) == wheel


def test_hash_mismatch_is_one_line_and_exit_1(
    build_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "demo-1.0-py3-none-any.whl"
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# test\ndemo 1.0 https://example.invalid/{name} {'0' * 64}\n")
    monkeypatch.setattr(build_module, "download", lambda url, dest: dest.write_bytes(b"tampered"))
    monkeypatch.setenv("FAASD_WHEEL_CACHE", str(tmp_path / "cache"))
    status = build_module.main(["--lock", str(lock), "--output", str(tmp_path / "out.pyz")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and "sha256 mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / name).exists()  # a bad download must not look cached next time
    assert not (tmp_path / "out.pyz").exists()


def test_network_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"demo 1.0 https://127.0.0.1:9/demo-1.0-py3-none-any.whl {'0' * 64}\n")
    env = {**os.environ, "FAASD_WHEEL_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--lock", str(lock), "--output", str(tmp_path / "out.pyz")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("build_zipapp: error: cannot download https://127.0.0.1:9/")
    assert result.stderr.count("\n") == 1


def test_ships_a_code_cache_that_covers_the_daemons_start_modules(builds: tuple[Path, Path]) -> None:
    """faasd.codecache: importing what ``faasd up`` imports before it serves compiles nothing the cache
    does not hold (no text, no regular expression) but attrs' ``__hash__`` texts, which hold a
    per-process hash -- run by the interpreter that built it (another patch release's standard library
    may compile a few other texts, which are then compiled as before)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from faasd import codecache; import importlib\n"
        "installed = codecache.install()\n"
        "for name in codecache.START_MODULES: importlib.import_module(name)\n"
        "missed = [m if len(m) == 3 else repr(m) for m in codecache.missed()]\n"
        "print(json.dumps([installed, codecache.stats(), missed]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(builds[0])], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    installed, counts, missed = json.loads(result.stdout)
    assert installed is True
    assert counts["hits"] > 100  # faasd's own dataclasses, hypercorn's, h11's, trio's attrs classes.
    assert [m for m in missed if not (isinstance(m, list) and "def __hash__" in m[0])] == []
