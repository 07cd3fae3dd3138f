"""faasd.execenv: the environment as exec'd, remembered before a process loses the right to read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faasd import execenv

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, os
from faasd import execenv
execenv.remember()
os.environ["ADDED_LATER"] = "1"
real_open = open
def no_proc(path, *args, **kwargs):  # What a process that became another uid meets: EACCES.
    if str(path).startswith("/proc/self"):
        raise PermissionError(13, "Permission denied", path)
    return real_open(path, *args, **kwargs)
import builtins
builtins.open = no_proc
print(json.dumps(execenv.exec_environ()))
"""


def test_what_was_remembered_survives_losing_proc_and_ignores_later_changes() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ODD": "a=b\u00e9"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    seen = json.loads(out)
    assert seen == env  # Not LC_CTYPE (PEP 538 coercion in the C locale), not ADDED_LATER.


def test_without_proc_it_falls_back_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execenv, "_remembered", None)
    monkeypatch.setattr(execenv, "_read", lambda: None)
    assert execenv.exec_environ() == dict(os.environ)
