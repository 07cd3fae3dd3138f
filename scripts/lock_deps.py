#!/usr/bin/env python3
"""Pin faasd's runtime dependencies to exact PyPI wheels: writes requirements.lock and constraints.txt.

Developer tool (needs pip; run it from the dev virtualenv: ``python scripts/lock_deps.py``). The zipapp
build (scripts/build_zipapp.py) is stdlib-only and downloads exactly the wheels listed in
scripts/requirements.lock, so the lock must name public https URLs with their sha256. The test
virtualenv installs ``-c scripts/constraints.txt`` so tests run against the versions the zipapp vendors.

Why the two-pass resolution: pip prefers platform wheels over pure ones, but the zipapp cannot load
compiled extensions (zipimport only imports .py/.pyc) and the build strips them. A ``py3-none-any``
wheel of the same version is therefore the honest choice when it exists; only projects without one
(markupsafe, pyyaml) keep the cp311 manylinux wheel, whose pure-Python fallbacks are what runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK_FILE = ROOT / "scripts" / "requirements.lock"
CONSTRAINTS_FILE = ROOT / "scripts" / "constraints.txt"

INDEX_URL = "https://pypi.org/simple"
URL_PREFIX = "https://files.pythonhosted.org/"
# Target interpreter: Debian 12's python3 (CPython 3.11, glibc 2.36, x86_64).
PLATFORM_ARGS = (
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64",
)  # fmt: skip
PURE_ARGS = ("--python-version", "3.11", "--implementation", "py", "--abi", "none", "--platform", "any")
# Settings that only concern transport may stay; everything else (find-links, extra indexes,
# constraints, no-index, ...) would let local mirrors leak into a lock meant for everybody.
TEST_PINS_MARKER = "# Test tools (pyproject [test] extras), pinned by hand; lock_deps.py keeps this section:"
KEPT_PIP_ENV = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES"}


class LockError(Exception):
    """A problem worth one line on stderr, not a traceback."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution: the exact wheel the zipapp build will download."""

    name: str
    version: str
    url: str
    sha256: str

    @property
    def is_pure(self) -> bool:
        """Whether the wheel is ``py3-none-any``/``py2.py3-none-any`` (nothing stripped at build time)."""
        python, abi, platform = self.url.rsplit("/", 1)[1].removesuffix(".whl").split("-")[-3:]
        return "py3" in python.split(".") and abi == "none" and platform == "any"


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, so sorting and comparisons ignore ``Foo_Bar`` vs ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> list[str]:
    """The ``[project] dependencies`` of pyproject.toml (pyyaml included there)."""
    with PYPROJECT.open("rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    if not deps:
        raise LockError(f"{PYPROJECT}: [project] dependencies is empty")
    return list(deps)


def pip_env() -> dict[str, str]:
    """Environment that makes pip see pypi.org only: no config files, no PIP_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in KEPT_PIP_ENV}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_report(requirements: list[str], extra_args: tuple[str, ...]) -> list[dict]:
    """Run ``pip install --dry-run --report`` and return its ``install`` list.

    ``--target`` is what pip requires before it accepts --platform/--abi; with --dry-run nothing
    is written there.
    """
    with tempfile.TemporaryDirectory(prefix="faasd-lock-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--only-binary=:all:", "--index-url", INDEX_URL, "--target", str(Path(tmp) / "target"),
            "--report", str(report), *extra_args, *requirements,
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LockError(f"pip failed for {' '.join(requirements)}: {proc.stderr.strip()}")
        return json.loads(report.read_text())["install"]


def pin_from_report(item: dict) -> Pin:
    """Turn one ``install`` entry of a pip report into a Pin, refusing anything but a PyPI wheel."""
    meta, info = item["metadata"], item["download_info"]
    url = info["url"]
    sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
    if not url.startswith(URL_PREFIX) or not url.endswith(".whl") or not sha256:
        raise LockError(f"{meta['name']}: not a PyPI wheel with a sha256: {url}")
    return Pin(canonical_name(meta["name"]), meta["version"], url, sha256)


def prefer_pure(pin: Pin) -> Pin:
    """Swap a platform wheel for the same version's ``py3-none-any`` wheel when PyPI has one."""
    if pin.is_pure:
        return pin
    try:
        items = pip_report([f"{pin.name}=={pin.version}"], ("--no-deps", *PURE_ARGS))
    except LockError:
        return pin  # no pure wheel: keep the manylinux one, its extension gets stripped at build time
    return pin_from_report(items[0])


def resolve() -> list[Pin]:
    """Resolve the runtime requirements for the target interpreter, sorted by name."""
    items = pip_report(runtime_requirements(), PLATFORM_ARGS)
    return sorted((prefer_pure(pin_from_report(item)) for item in items), key=lambda p: p.name)


def check_interpreter() -> None:
    """Environment markers are evaluated against the running interpreter, so it must be the target."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) or sys.platform != "linux":
        raise LockError(
            "run this with CPython 3.11 on Linux: pip evaluates environment markers against the"
            f" running interpreter (this is {sys.implementation.name} {sys.version.split()[0]}"
            f" on {sys.platform})"
        )


def write_lock(pins: list[Pin]) -> None:
    """Write requirements.lock (read by build_zipapp.py) and constraints.txt (read by pip)."""
    header = (
        "# Generated by scripts/lock_deps.py from pyproject.toml [project] dependencies. Do not edit.\n"
        "# Resolved on pypi.org for CPython 3.11, linux x86_64; pure py3-none-any wheels preferred.\n"
        "# Consumed by scripts/build_zipapp.py (stdlib only). Format: name version url sha256\n"
    )
    LOCK_FILE.write_text(header + "".join(f"{p.name} {p.version} {p.url} {p.sha256}\n" for p in pins))
    CONSTRAINTS_FILE.write_text(
        "# Generated by scripts/lock_deps.py: the versions vendored into dist/faasd.pyz.\n"
        "# Use: pip install -c scripts/constraints.txt ...\n"
        + "".join(f"{p.name}=={p.version}\n" for p in pins)
        + kept_test_pins()
    )


def kept_test_pins() -> str:
    """The hand-pinned test tools section of constraints.txt (from its marker to the end), kept as it is:
    they are not vendored, so they are not resolved here, but regenerating must not drop them."""
    try:
        text = CONSTRAINTS_FILE.read_text()
    except FileNotFoundError:
        return ""
    index = text.find(TEST_PINS_MARKER)
    return "" if index < 0 else "\n" + text[index:]


def main() -> int:
    """Resolve, write both files, and say which wheels will lose compiled extensions."""
    try:
        check_interpreter()
        pins = resolve()
    except LockError as exc:
        print(f"lock_deps: error: {exc}", file=sys.stderr)
        return 1
    write_lock(pins)
    for pin in pins:
        note = "" if pin.is_pure else "  (platform wheel: compiled extension stripped at build)"
        print(f"{pin.name}=={pin.version}{note}")
    lock, constraints = LOCK_FILE.relative_to(ROOT), CONSTRAINTS_FILE.relative_to(ROOT)
    print(f"wrote {lock} and {constraints} ({len(pins)} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
