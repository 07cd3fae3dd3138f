"""``pip install`` for a function's requirements.txt sees none of the daemon's environment: the daemon
runs with FAASD_PASSWORD and other variables, the function requires a local package whose build
backend (run by pip, as a setup.py would be) writes down the environment it got -- into the module it
builds, since the build runs in the function's sandbox and sees no other place to write."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from faasd.providers.local.pip_env import PIP_ENV_NAMES
from tests.daemon_fixtures import PASSWORD, StartDaemon
from tests.e2e.test_daemon_api import _archive

BACKEND = '''
"""A PEP 517 build backend that builds a one-module wheel recording the environment it runs in."""
import base64, hashlib, json, os, zipfile


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "envrecorder-1.0-py3-none-any.whl"
    files = {{
        "envrecorder.py": ("RECORDED = " + repr(json.dumps(dict(os.environ))) + "\\n").encode(),
        "envrecorder-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: envrecorder\\nVersion: 1.0\\n",
        "envrecorder-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
        ),
    }}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, content in files.items():
            wheel.writestr(path, content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            record.append(f"{{path}},sha256={{digest}},{{len(content)}}")
        wheel.writestr("envrecorder-1.0.dist-info/RECORD", "\\n".join(record + ["envrecorder-1.0.dist-info/RECORD,,"]))
    return name
'''


def test_pip_runs_with_a_clean_environment(start_daemon: StartDaemon, tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("this interpreter has no pip")
    pyproject = textwrap.dedent(
        """\
        [build-system]
        requires = []
        build-backend = "recorder_backend"
        backend-path = ["."]
        """
    )
    # The daemon builds with its own interpreter's pip: the test venv's (which has pip).
    daemon = start_daemon(
        python=sys.executable,
        FAASD_LOG_LEVEL="info",
        DAEMON_ONLY_CANARY="must-not-reach-pip",
        LD_PRELOAD="",
        PYTHONPATH="/nonexistent/daemon-path",
    )
    handler = {  # The package travels with the function: its build sees nothing else of this machine.
        "requirements.txt": b"./envrecorder\n",
        "envrecorder/recorder_backend.py": BACKEND.format().encode(),
        "envrecorder/pyproject.toml": pyproject.encode(),
    }
    with daemon.client() as client:
        deployed = client.post(
            "/system/functions",
            json={"service": "withenv", "envProcess": "cat", "handlerArchive": _archive(handler)},
        )
        assert deployed.status_code == 202, deployed.text
    daemon.wait_available("withenv", 1)
    module = daemon.state_dir / "functions" / "withenv" / ".packages" / "envrecorder.py"
    namespace: dict[str, str] = {}
    exec(module.read_text(), namespace)  # The module the test's own backend wrote.
    seen = json.loads(namespace["RECORDED"])
    assert not [name for name in seen if name.startswith("FAASD_")], sorted(seen)
    assert PASSWORD not in json.dumps(seen)
    assert "DAEMON_ONLY_CANARY" not in seen and "LD_PRELOAD" not in seen
    assert seen.get("PYTHONPATH", "").find("/nonexistent/daemon-path") < 0
    assert seen["PATH"].endswith(":" + daemon.env["PATH"])  # pip puts its build env's bin dirs first.
    # Everything pip got from the daemon is on the documented list (pip adds its own build variables).
    from_daemon = {name for name, value in daemon.env.items() if seen.get(name) == value}
    assert from_daemon <= PIP_ENV_NAMES, from_daemon - PIP_ENV_NAMES
    assert httpx.post(f"{daemon.url}/function/withenv", content=b"x", timeout=30).text == "x"
