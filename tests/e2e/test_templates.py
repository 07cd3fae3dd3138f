"""Templates end to end: ``faasd new`` scaffolds, ``faasd deploy -f stack.yml`` deploys on the local
backend, each function answers; requirements.txt lands in the function's own .packages."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import PASSWORD, StartDaemon


def cli(faasd_pyz: Path, python: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(faasd_pyz), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_new_then_deploy_every_template(
    start_daemon: StartDaemon, faasd_pyz: Path, pyz_python: str, tmp_path: Path
) -> None:
    daemon = start_daemon()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FAASD_URL": daemon.url, "FAASD_PASSWORD": PASSWORD}
    work = tmp_path / "work"
    work.mkdir()
    for language in ("python", "python-http", "bash"):
        result = cli(faasd_pyz, pyz_python, "new", f"fn-{language}", "--lang", language, env=env, cwd=work)
        assert result.returncode == 0, result.stderr
    assert (work / "fn-bash" / "handler.sh").stat().st_mode & 0o111
    again = cli(faasd_pyz, pyz_python, "new", "fn-bash", "--lang", "bash", env=env, cwd=work)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr
    deployed = cli(faasd_pyz, pyz_python, "deploy", "-f", "stack.yml", env=env, cwd=work)
    assert deployed.returncode == 0, deployed.stderr
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        python = client.post("/function/fn-python", content=b"hi")
        assert python.status_code == 200 and python.text == "Hello from fn-python! You said: hi"
        http = client.post("/function/fn-python-http/some/path", content=b"12345")
        assert http.status_code == 200 and http.headers["x-function"] == "fn-python-http"
        assert http.json() == {"function": "fn-python-http", "method": "POST", "path": "/some/path", "bytes": 5}
        bash = client.post("/function/fn-bash", content=b"abc")
        assert bash.status_code == 200 and bash.text == "Hello from fn-bash! You sent 3 bytes with POST.\n"


def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel (``tinydep`` 1.0) built by hand, so the test needs no network."""
    path = directory / "tinydep-1.0-py3-none-any.whl"
    files = {
        "tinydep.py": b"ANSWER = 'from tinydep'\n",
        "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(content)}")
    record.append("tinydep-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)
        wheel.writestr("tinydep-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_requirements_are_installed_into_the_function_dir(
    start_daemon: StartDaemon, faasd_pyz: Path, tmp_path: Path
) -> None:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("this interpreter has no pip")
    # The daemon builds with its own interpreter's pip: run it with the test venv's (which has pip).
    daemon = start_daemon(python=sys.executable)
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAASD_URL": daemon.url,
        "FAASD_PASSWORD": PASSWORD,
    }
    work = tmp_path / "work"
    work.mkdir()
    result = cli(faasd_pyz, sys.executable, "new", "withdeps", "--lang", "python", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    # In the function's own directory: its build runs sandboxed, and sees nothing else of this machine.
    wheel = _wheel(work / "withdeps")
    (work / "withdeps" / "requirements.txt").write_text(f"./{wheel.name}\n")
    (work / "withdeps" / "handler.py").write_text("import tinydep\n\ndef handle(req):\n    return tinydep.ANSWER\n")
    deployed = cli(faasd_pyz, sys.executable, "deploy", "-f", "stack.yml", env=env, cwd=work)
    assert deployed.returncode == 0, deployed.stderr
    assert (daemon.state_dir / "functions" / "withdeps" / ".packages" / "tinydep.py").is_file()
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert client.post("/function/withdeps", content=b"x").text == "from tinydep"


def test_requirements_without_pip_is_a_clear_400(start_daemon: StartDaemon, pyz_python: str, tmp_path: Path) -> None:
    """A daemon whose interpreter has no pip (Debian's python3 before python3-pip; here a venv made
    --without-pip, which the zipapp needs nothing else from) refuses requirements.txt with a clear 400."""
    subprocess.run([pyz_python, "-m", "venv", "--without-pip", str(tmp_path / "nopip")], check=True, timeout=120)
    python = str(tmp_path / "nopip" / "bin" / "python")
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=False).returncode != 0
    daemon = start_daemon(python=python)
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in {
            "handler.py": b"def handle(req):\n    return req\n",
            "requirements.txt": b"six\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with daemon.client() as client:
        answer = client.post(
            "/system/functions",
            json={
                "service": "nopip",
                "envVars": {"mode": "python"},
                "handlerArchive": base64.b64encode(raw.getvalue()).decode(),
            },
        )
    assert answer.status_code == 400 and "pip" in answer.text
