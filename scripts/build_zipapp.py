#!/usr/bin/env python3
"""Build dist/faasd.pyz: the faasd package plus every runtime dependency, in one executable file.

Stdlib only, so it runs on a fresh Debian 12 that has nothing but ``python3``: the wheels named in
scripts/requirements.lock are downloaded from PyPI (verified by sha256, cached), unpacked into the
archive beside the faasd package, and everything is precompiled.

Why precompile: zipimport never writes bytecode caches, so without ``.pyc`` files inside the archive
every start recompiles every module (measured: trio + h11 took 0.45 s instead of 0.2 s). The ``.pyc``
files sit beside their ``.py`` (the legacy layout zipimport reads) and are unchecked-hash pycs, so they
hold no timestamp and zipimport does not compare them with the source's mtime.

Deterministic: the same inputs give the same bytes (sorted entries, fixed timestamps and modes, fixed
compression). Compiled extensions (``.so``) are left out: zipimport cannot load them, and every
dependency used here has a pure-Python fallback.

Usage: python3 scripts/build_zipapp.py [--output dist/faasd.pyz] [--if-stale]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "scripts" / "requirements.lock"
DEFAULT_OUTPUT = ROOT / "dist" / "faasd.pyz"
PACKAGE_DIR = ROOT / "faasd"
SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
DOWNLOAD_TIMEOUT_S = 120
MAIN = b"import sys\nfrom faasd.__main__ import main\nsys.exit(main())\n"

_SKIP_SUFFIXES = (".so", ".pyd", ".pyi", ".c", ".h", ".pyx", ".pxd")
_SKIP_PARTS = frozenset({"__pycache__", "_tests", "tests", "test"})


class BuildError(Exception):
    """The build cannot go on; the message is one line for the user."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build dist/faasd.pyz (all dependencies inside).")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the zipapp")
    parser.add_argument("--if-stale", action="store_true", help="do nothing when the output is newer than its inputs")
    args = parser.parse_args(argv)
    try:
        if args.if_stale and not is_stale(args.output):
            print(f"{display(args.output)} is up to date")
            return 0
        started = time.monotonic()
        build(args.output)
    except BuildError as exc:
        print(f"build_zipapp: {exc}", file=sys.stderr)
        return 1
    size = args.output.stat().st_size
    print(f"built {display(args.output)}: {size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s")
    return 0


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def inputs() -> Iterator[Path]:
    """Every file whose change must rebuild the zipapp."""
    yield LOCK_FILE
    yield Path(__file__).resolve()
    for path in PACKAGE_DIR.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def is_stale(output: Path) -> bool:
    if not output.exists():
        return True
    built = output.stat().st_mtime
    return any(path.stat().st_mtime > built for path in inputs())


# -- wheels ----------------------------------------------------------------------------------------
def read_lock() -> list[tuple[str, str, str, str]]:
    """(name, version, url, sha256) for every locked distribution."""
    entries = []
    for number, line in enumerate(LOCK_FILE.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4:
            raise BuildError(f"{LOCK_FILE.name}:{number}: expected 'name version url sha256'")
        entries.append((parts[0], parts[1], parts[2], parts[3]))
    return entries


def cache_dir() -> Path:
    if os.environ.get("FAASD_WHEEL_CACHE"):
        return Path(os.environ["FAASD_WHEEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "faasd" / "wheels"


def fetch_wheel(name: str, url: str, sha256: str) -> bytes:
    """The wheel's bytes, from the cache or PyPI, verified against ``sha256``."""
    path = cache_dir() / url.rsplit("/", 1)[-1]
    if path.exists():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BuildError(f"cannot download {name} from {url}: {reason}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BuildError(f"{name}: sha256 mismatch for {url} (got {digest}, locked {sha256})")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(path)
    return data


def wheel_files(data: bytes) -> Iterator[tuple[str, bytes, bool]]:
    """(archive path, content, executable) of every file of a wheel worth shipping."""
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        for info in wheel.infolist():
            name = info.filename
            if info.is_dir() or not keep(name):
                continue
            executable = bool((info.external_attr >> 16) & 0o111)
            yield name, wheel.read(info), executable


def keep(name: str) -> bool:
    parts = name.split("/")
    if parts[0].endswith(".data"):
        return False  # Scripts and headers: not importable.
    if parts[0].endswith(".dist-info"):
        return parts[-1] != "RECORD"
    if any(part in _SKIP_PARTS for part in parts[:-1]):
        return False
    return not name.endswith(_SKIP_SUFFIXES)


# -- the archive -----------------------------------------------------------------------------------
def package_files() -> Iterator[tuple[str, bytes, bool]]:
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            relative = path.relative_to(ROOT).as_posix()
            yield relative, path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR)


def compile_source(name: str, source: bytes) -> bytes:
    """Unchecked-hash .pyc bytes for module source ``source`` at archive path ``name``."""
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    source_hash = importlib.util.source_hash(source)
    return bytes(_code_to_hash_pyc(code, source_hash, checked=False))


def build(output: Path) -> None:
    files: dict[str, tuple[bytes, bool]] = {"__main__.py": (MAIN, False)}
    for name, content, executable in package_files():
        files[name] = (content, executable)
    for dist_name, _version, url, sha256 in read_lock():
        for name, content, executable in wheel_files(fetch_wheel(dist_name, url, sha256)):
            if name in files and not name.endswith(".dist-info/LICENSE"):
                raise BuildError(f"{dist_name}: {name} is also provided by another distribution")
            files[name] = (content, executable)
    for name in [n for n in files if n.endswith(".py")]:
        try:
            files[name[:-3] + ".pyc"] = (compile_source(name, files[name][0]), False)
        except SyntaxError as exc:
            raise BuildError(f"{name} does not compile with Python {sys.version.split()[0]}: {exc}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")
    with open(partial, "wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            # Directory entries: zipimport finds namespace packages (e.g. flask/sansio) only through them.
            directories = {name.rsplit("/", i)[0] + "/" for name in files for i in range(1, name.count("/") + 1)}
            for directory in sorted(directories):
                info = zipfile.ZipInfo(directory, date_time=FIXED_TIME)
                info.external_attr = (0o755 | stat.S_IFDIR) << 16 | 0x10
                info.create_system = 3
                archive.writestr(info, b"")
            for name in sorted(files):
                content, executable = files[name]
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
                info.create_system = 3  # Unix, whatever the build host.
                archive.writestr(info, content)
    os.chmod(partial, 0o755)
    partial.replace(output)


if __name__ == "__main__":
    sys.exit(main())
