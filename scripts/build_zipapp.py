#!/usr/bin/env python3
"""Build dist/faasd.pyz: the faasd package plus every locked wheel, in one executable zip.

Stdlib only on purpose: it must run on a fresh Debian 12 that has python3 and nothing else (no pip,
no venv). The wheels named in scripts/requirements.lock are downloaded once into a cache, checked
against their sha256, and unpacked into the zip's top level, so the zipapp needs no network and no
site-packages at runtime.

What goes in, and why:

* every ``.py`` gets a legacy-layout ``module.pyc`` beside it (zipimport never writes bytecode, so
  without them each start recompiles every imported module). The .pyc files are unchecked-hash
  pycs: no timestamp inside, and zipimport does not compare them with anything;
* compiled extensions are left out (zipimport cannot load them; markupsafe and pyyaml fall back to
  their pure-Python code), as are type stubs, ``__pycache__``, test suites shipped inside packages
  and ``*.dist-info/RECORD`` (it lists files that are no longer there);
* the rest of ``*.dist-info`` stays: importlib.metadata reads it from the zip, and licenses must ship;
* ``faasd/_codecache.marshal``: the methods dataclasses and attrs write, and the regular expressions
  compiled, while ``faasd up`` imports its start modules, compiled once here (:mod:`faasd.codecache`
  says why). They are learnt by importing those modules from the zipapp built so far in two child
  interpreters with different hash seeds (a text that differs between them, like attrs' ``__hash__``,
  is left out), and compiled in a third.

The output is deterministic: sorted entries, fixed timestamps, modes and compression, so the same
lock, sources and interpreter give a byte-identical file.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import io
import marshal
import os
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import _bootstrap_external  # type: ignore[attr-defined]
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "scripts" / "requirements.lock"
PACKAGE_DIR = ROOT / "faasd"
DEFAULT_OUTPUT = ROOT / "dist" / "faasd.pyz"

SHEBANG = b"#!/usr/bin/env python3\n"
MAIN_PY = b'"""Entry point of the faasd zipapp."""\nimport sys\n\nfrom faasd.__main__ import main\n\nsys.exit(main())\n'
# Baked into each code object's co_filename (zipimport does not fix it up at load time). A constant
# keeps the output independent of where it is built or written; tracebacks still show source lines
# because linecache asks the module's zipimporter for them.
CO_FILENAME_PREFIX = "faasd.pyz/"

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
FILE_ATTR = (stat.S_IFREG | 0o644) << 16
DIR_ATTR = ((stat.S_IFDIR | 0o755) << 16) | 0x10  # 0x10: MS-DOS directory bit
COMPRESSION = zipfile.ZIP_DEFLATED
COMPRESS_LEVEL = 6

CODE_CACHE = "faasd/_codecache.marshal"  # faasd.codecache.CACHE_FILE, inside the package
CODE_CACHE_SEEDS = ("1", "2")
CHILD_TIMEOUT = 120.0

DROPPED_SUFFIXES = (".so", ".pyd", ".pyi", ".pyc", ".pyo", ".c", ".h")
DROPPED_DIRS = frozenset({"__pycache__", "tests", "_tests"})
DOWNLOAD_TIMEOUT = 60.0
TARGET_PYTHON = (3, 11)  # Debian 12's python3; .pyc files only load on the interpreter that wrote them


class BuildError(Exception):
    """A failure worth one line on stderr (bad hash, network down, broken lock), not a traceback."""


@dataclass(frozen=True)
class LockedWheel:
    """One line of requirements.lock."""

    name: str
    version: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        """The wheel's file name, also its name in the cache."""
        return self.url.rsplit("/", 1)[1]


# --- lock and cache -------------------------------------------------------------------------------


def read_lock(path: Path) -> list[LockedWheel]:
    """Parse requirements.lock (``name version url sha256`` per line, ``#`` comments)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from exc
    wheels = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4 or not fields[2].startswith("https://") or not fields[2].endswith(".whl"):
            raise BuildError(f"{path}:{number}: expected 'name version https://...whl sha256'")
        wheels.append(LockedWheel(*fields))
    if not wheels:
        raise BuildError(f"{path}: no wheels listed")
    return wheels


def cache_dir() -> Path:
    """``$FAASD_WHEEL_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/faasd/wheels``."""
    if explicit := os.environ.get("FAASD_WHEEL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faasd" / "wheels"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (wheels can be a few MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path) -> None:
    """Fetch url into dest via a temporary file, so an interrupted download never looks cached."""
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "faasd-build_zipapp"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, part.open("wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise BuildError(f"cannot download {url}: {reason}") from exc


def fetch_wheel(wheel: LockedWheel, cache: Path) -> Path:
    """Return the cached wheel, downloading it only when missing or when its hash is wrong."""
    path = cache / wheel.filename
    if path.is_file() and sha256_of(path) == wheel.sha256:
        return path
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create wheel cache {cache}: {exc.strerror}") from exc
    download(wheel.url, path)
    actual = sha256_of(path)
    if actual != wheel.sha256:
        path.unlink(missing_ok=True)
        raise BuildError(f"sha256 mismatch for {wheel.filename}: expected {wheel.sha256}, got {actual} ({wheel.url})")
    return path


# --- choosing the zip's contents ------------------------------------------------------------------


def is_dist_info(parts: tuple[str, ...]) -> bool:
    """Whether a path lies inside a ``*.dist-info`` directory."""
    return bool(parts) and parts[0].endswith(".dist-info")


def keep(arcname: str) -> bool:
    """Whether a file belongs in the zipapp (see the module docstring for the reasons)."""
    path = PurePosixPath(arcname)
    parts = path.parts
    if is_dist_info(parts):
        return parts[1:] != ("RECORD",)
    if path.name.endswith(DROPPED_SUFFIXES) or path.name.endswith("~"):
        return False
    return not any(part in DROPPED_DIRS or part.startswith(".") for part in parts)


def wheel_arcname(member: str) -> str | None:
    """Where a wheel member lands in the zip: top level, or purelib/platlib data unpacked there too."""
    parts = PurePosixPath(member).parts
    if parts and parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None  # scripts, headers, data: nothing an import can use
    return member


def wheel_files(wheel_path: Path) -> Iterator[tuple[str, bytes]]:
    """(arcname, content) of every file of a wheel that the zipapp keeps."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for info in wheel.infolist():
                arcname = None if info.is_dir() else wheel_arcname(info.filename)
                if arcname and keep(arcname):
                    yield arcname, wheel.read(info)
    except zipfile.BadZipFile as exc:
        raise BuildError(f"{wheel_path}: not a valid wheel: {exc}") from exc


def package_files(package_dir: Path) -> Iterator[tuple[str, bytes]]:
    """(arcname, content) of the faasd package's own files."""
    for path in sorted(package_dir.rglob("*")):
        arcname = path.relative_to(package_dir.parent).as_posix()
        if path.is_file() and keep(arcname):
            yield arcname, path.read_bytes()


def collect(sources: Iterable[tuple[str, Iterable[tuple[str, bytes]]]]) -> dict[str, bytes]:
    """Merge files from all sources, refusing two different files at the same path."""
    files: dict[str, bytes] = {"__main__.py": MAIN_PY}
    origin: dict[str, str] = {"__main__.py": "build_zipapp"}
    for source, entries in sources:
        for arcname, data in entries:
            if arcname in files and files[arcname] != data:
                raise BuildError(f"{arcname} is shipped by both {origin[arcname]} and {source}")
            files[arcname] = data
            origin[arcname] = source
    return files


# --- bytecode -------------------------------------------------------------------------------------


def pyc_bytes(arcname: str, source: bytes) -> bytes:
    """An unchecked-hash .pyc for source: no mtime inside, so zipimport never revalidates it.

    ``dont_inherit`` keeps this script's own ``from __future__`` flags out of the compiled code.
    """
    code = compile(source, CO_FILENAME_PREFIX + arcname, "exec", dont_inherit=True, optimize=0)
    source_hash = importlib.util.source_hash(source)
    return bytes(_bootstrap_external._code_to_hash_pyc(code, source_hash, checked=False))


def add_bytecode(files: dict[str, bytes]) -> dict[str, bytes]:
    """Return files plus a ``module.pyc`` beside each ``module.py`` (legacy layout, what zipimport reads)."""
    out = dict(files)
    for arcname, data in files.items():
        if arcname.endswith(".py"):
            try:
                out[arcname + "c"] = pyc_bytes(arcname, data)
            except (SyntaxError, ValueError) as exc:
                raise BuildError(f"{arcname} does not compile: {exc}") from exc
    return out


# --- the code cache (faasd.codecache) -------------------------------------------------------------

_PRELUDE = "import marshal, sys; sys.path.insert(0, sys.argv[1]); from faasd import codecache; "
_COLLECT = _PRELUDE + "sys.stdout.buffer.write(marshal.dumps(codecache.collect()))"
_DUMP = _PRELUDE + "sys.stdout.buffer.write(codecache.dump(*marshal.loads(sys.stdin.buffer.read())))"


def _child(code: str, pyz: Path, seed: str, stdin: bytes = b"") -> bytes:
    """Run ``code`` in a child interpreter with ``pyz`` on its path; its stdout."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    try:
        result = subprocess.run(
            [sys.executable, "-s", "-c", code, str(pyz)],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=pyz.parent,
            timeout=CHILD_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"code cache: cannot run {sys.executable}: {exc}") from exc
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise BuildError(f"code cache: importing the start modules failed: {tail[0]}")
    return result.stdout


def code_cache(files: dict[str, bytes]) -> bytes:
    """The content of :data:`CODE_CACHE` for a zipapp holding ``files`` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="faasd-build-") as tmp:
        pyz = Path(tmp) / "stage.pyz"
        pyz.write_bytes(zip_bytes(files))
        runs = [marshal.loads(_child(_COLLECT, pyz, seed)) for seed in CODE_CACHE_SEEDS]
        keys = sorted(set.intersection(*(set(texts) for texts, _ in runs)))
        patterns = sorted(set.intersection(*(set(patterns) for _, patterns in runs)), key=repr)
        return _child(_DUMP, pyz, "0", marshal.dumps((keys, patterns)))


# --- writing --------------------------------------------------------------------------------------


def directories(arcnames: Iterable[str]) -> set[str]:
    """Every parent directory, as ``dir/`` entries: namespace packages and resource readers need them."""
    dirs = set()
    for arcname in arcnames:
        for parent in PurePosixPath(arcname).parents:
            if str(parent) != ".":
                dirs.add(f"{parent}/")
    return dirs


def zip_info(arcname: str) -> zipfile.ZipInfo:
    """A ZipInfo with every varying field pinned (date, mode, creator, compression)."""
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
    info.create_system = 3  # unix, so external_attr carries a mode
    if arcname.endswith("/"):
        info.external_attr = DIR_ATTR
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.external_attr = FILE_ATTR
        # Bytecode is stored, not deflated: zipimport reads each imported module's .pyc twice (once for its
        # spec, once to run it), and inflating was about a tenth of the daemon's import time. So is the code cache.
        info.compress_type = zipfile.ZIP_STORED if arcname.endswith((".pyc", ".marshal")) else COMPRESSION
    return info


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """The complete zipapp: shebang line, then the zip with entries in sorted order."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    entries = {**dict.fromkeys(directories(files), b""), **files}
    with zipfile.ZipFile(buffer, "w", compresslevel=COMPRESS_LEVEL) as archive:
        for arcname in sorted(entries):
            archive.writestr(zip_info(arcname), entries[arcname], compresslevel=COMPRESS_LEVEL)
    return buffer.getvalue()


def write_executable(path: Path, data: bytes) -> None:
    """Write atomically with mode 0755: a running daemon keeps its open file, new starts see the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"cannot write {path}: {exc.strerror}") from exc


# --- staleness ------------------------------------------------------------------------------------


def input_paths(lock: Path) -> list[Path]:
    """Everything the output depends on; directories too, so a deleted module counts as a change."""
    paths = [lock, Path(__file__).resolve(), PACKAGE_DIR]
    for path in PACKAGE_DIR.rglob("*"):
        if "__pycache__" not in path.parts and path.suffix != ".pyc":
            paths.append(path)
    return paths


def is_up_to_date(output: Path, lock: Path) -> bool:
    """Whether output exists and is newer than every input (a file vanishing meanwhile means: rebuild)."""
    try:
        built = output.stat().st_mtime
        return all(path.stat().st_mtime < built for path in input_paths(lock))
    except OSError:
        return False


# --- main -----------------------------------------------------------------------------------------


def build(output: Path, lock: Path = LOCK_FILE, cache: Path | None = None) -> int:
    """Download (or reuse) the wheels, assemble the zipapp and write it; return its size in bytes."""
    cache = cache_dir() if cache is None else cache
    wheels = [(w.filename, wheel_files(fetch_wheel(w, cache))) for w in read_lock(lock)]
    files = collect([("faasd", package_files(PACKAGE_DIR)), *wheels])
    files = add_bytecode(files)
    files[CODE_CACHE] = code_cache(files)
    data = zip_bytes(files)
    write_executable(output, data)
    return len(data)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``--output``, ``--if-stale`` and ``--lock`` (tests point it at a broken lock)."""
    parser = argparse.ArgumentParser(description="Build the faasd zipapp (stdlib only).")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: dist/faasd.pyz")
    parser.add_argument("--if-stale", action="store_true", help="skip the build if output is newer than inputs")
    parser.add_argument("--lock", type=Path, default=LOCK_FILE, help="default: scripts/requirements.lock")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build, print path/size/time; a failure becomes one line on stderr and exit status 1."""
    args = parse_args(argv)
    if args.if_stale and is_up_to_date(args.output, args.lock):
        print(f"{args.output}: up to date")
        return 0
    if sys.version_info[:2] != TARGET_PYTHON:
        print(
            f"build_zipapp: warning: building with Python {sys.version.split()[0]}; the .pyc files are"
            " ignored (and sources recompiled at each start) by any other minor version",
            file=sys.stderr,
        )
    started = time.monotonic()
    try:
        size = build(args.output, args.lock)
    except (BuildError, OSError) as exc:  # OSError: e.g. a source file removed while we read the tree
        print(f"build_zipapp: error: {exc}", file=sys.stderr)
        return 1
    print(f"built {args.output}: {size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
