"""A snippet as a function (faasd.fob.spec) and the driver that runs it (faasd.fob.driver), outside a
daemon: the spec's name and archive, and every answer the driver gives, read the way the python-mode
worker reads them (its ``Event`` and ``encode_answer``). The timer tests run the driver in a child
interpreter: its SIGALRM would cut pytest-timeout's own alarm short here."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from faasd.fob.driver import load_callme, make_handle
from faasd.fob.spec import (
    LABEL_SNIPPET,
    driver_source,
    function_name,
    is_snippet_id,
    snippet_id_of,
    snippet_spec,
)
from faasd.providers.types import MAX_NAME_LENGTH, FunctionSpec, validate_function_name
from faasd.watchdog.pyworker import Event, encode_answer

REPO = Path(__file__).resolve().parents[2]


def _call(tmp_path: Path, snippet: str, query: str = "") -> tuple[int, Any]:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(snippet))
    handle = make_handle(load_callme(str(path)), timeout_s=0)
    meta, body = encode_answer(handle(Event({"method": "GET", "path": "/", "query": query, "headers": []}, b""), None))
    assert meta["content_type"] == "application/json"
    return meta["status"], json.loads(body)


def test_results_are_wrapped_as_the_seed_answers(tmp_path: Path) -> None:
    assert _call(tmp_path, "def callme():\n    return 42\n") == (200, {"result": 42})
    add = "def callme(param1, param2):\n    return int(param1) + int(param2)\n"
    assert _call(tmp_path, add, "param1=1&param2=1") == (200, {"result": 2})
    assert _call(tmp_path, "def callme(**kw):\n    return kw\n", "a=x%2Cy&b=") == (
        200,
        {"result": {"a": "x,y", "b": ""}},
    )
    assert _call(tmp_path, "def callme():\n    return None\n") == (200, {"result": None})


def test_arguments_that_do_not_fit_are_400(tmp_path: Path) -> None:
    add = "def callme(param1, param2):\n    return 0\n"
    status, answer = _call(tmp_path, add, "param1=1")
    assert status == 400 and "missing a required argument: 'param2'" in answer["error"]
    status, answer = _call(tmp_path, add, "param1=1&param2=2&param3=3")
    assert status == 400 and "callme(param1, param2)" in answer["error"]


def test_an_exception_is_500_with_type_and_message_and_no_traceback(tmp_path: Path, capsys: Any) -> None:
    status, answer = _call(tmp_path, "def callme(x):\n    raise ValueError('bad input: ' + x)\n", "x=7")
    assert status == 500
    assert answer == {"error": "ValueError: bad input: 7", "type": "ValueError", "message": "bad input: 7"}
    assert "Traceback" in capsys.readouterr().err  # In the function's log, not in the answer.
    status, answer = _call(tmp_path, "import sys\ndef callme():\n    sys.exit(3)\n")
    assert status == 500 and answer["type"] == "SystemExit"
    unprintable = (
        "class E(Exception):\n    def __str__(self):\n        raise RuntimeError\ndef callme():\n    raise E()\n"
    )
    status, answer = _call(tmp_path, unprintable)
    assert status == 500 and answer["type"] == "E"
    status, answer = _call(tmp_path, "def callme():\n    raise KeyError('k' * 5000)\n")
    assert status == 500 and len(answer["message"]) <= 1000


@pytest.mark.parametrize(
    ("result", "reason"),
    [("{1, 2}", "not JSON serializable"), ("float('nan')", "Out of range float"), ("10 ** 5000", "")],
)
def test_a_result_that_is_not_json_is_500_saying_so(tmp_path: Path, result: str, reason: str) -> None:
    status, answer = _call(
        tmp_path, f"import sys\nsys.set_int_max_str_digits(4300)\ndef callme():\n    return {result}\n"
    )
    assert status == 500 and answer["error"].startswith("the result of callme is not JSON-serialisable")
    assert reason in answer["error"]


def test_a_snippet_that_fails_at_import_or_has_no_callable_callme(tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text("x = 1\nraise ImportError('no such thing')\n")
    with pytest.raises(ImportError, match="no such thing"):
        load_callme(str(path))
    path.write_text("callme = 5\n")
    with pytest.raises(TypeError, match="not a function"):
        load_callme(str(path))


TIMER = """
import json, sys, time
sys.path.insert(0, {repo!r})
from faasd.fob.driver import load_callme, make_handle
from faasd.watchdog.pyworker import Event, encode_answer
handle = make_handle(load_callme({path!r}), timeout_s=0.3)
out = []
for query in ("n=0.05", "n=5", "n=0.01"):
    started = time.monotonic()
    event = Event({{"method": "GET", "path": "/", "query": query, "headers": []}}, b"")
    meta, body = encode_answer(handle(event, None))
    out.append([meta["status"], json.loads(body), round(time.monotonic() - started, 2)])
print(json.dumps(out))
"""


def test_a_call_past_the_timeout_is_408_and_the_next_call_works(tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text("import time\ndef callme(n):\n    time.sleep(float(n))\n    return n\n")
    done = subprocess.run(
        [sys.executable, "-c", TIMER.format(repo=str(REPO), path=str(path))], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    quick, slow, after = json.loads(done.stdout)
    assert quick[:2] == [200, {"result": "0.05"}]
    assert slow[0] == 408 and slow[1]["error"] == "the snippet did not finish within 0.3s" and slow[2] < 2
    assert after[:2] == [200, {"result": "0.01"}]


def test_the_function_of_a_snippet() -> None:
    snippet_id = str(uuid.uuid4())
    spec = snippet_spec(snippet_id, "python", b"def callme(): return 1\n", timeout_s=10)
    assert spec.name == function_name(snippet_id) == f"fob-{snippet_id}"
    assert len(spec.name) == 40 <= MAX_NAME_LENGTH and validate_function_name(spec.name) == spec.name
    assert is_snippet_id(snippet_id) and not is_snippet_id(snippet_id.upper()) and not is_snippet_id("x")
    assert snippet_id_of(spec) == spec.labels[LABEL_SNIPPET] == snippet_id
    assert spec.env_vars == {"mode": "python", "handler": "handler.py", "snippet_timeout": "10", "exec_timeout": "11s"}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(spec.handler_archive))) as tar:
        files = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}  # type: ignore[union-attr]
    assert files == {"handler.py": driver_source(), "snippet.py": b"def callme(): return 1\n"}
    assert driver_source() == (REPO / "faasd" / "fob" / "driver.py").read_bytes()


def test_a_snippet_makes_the_same_spec_every_time_and_through_the_store() -> None:
    """The start-up settling compares the stored spec with a fresh one: equal unless something changed."""
    snippet_id = str(uuid.uuid4())
    first = snippet_spec(snippet_id, "python", b"def callme(): pass\n", timeout_s=10)
    assert snippet_spec(snippet_id, "python", b"def callme(): pass\n", timeout_s=10) == first
    assert FunctionSpec.from_json(json.loads(json.dumps(first.to_json()))) == first
    assert snippet_spec(snippet_id, "python", b"def callme(): pass\n", timeout_s=5) != first
    assert snippet_spec(snippet_id, "python", b"def callme(): return 1\n", timeout_s=10) != first


def test_the_driver_imports_only_the_standard_library() -> None:
    """It runs in the replica, copied there: nothing of faasd may be imported by it."""
    source = driver_source().decode()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if "faasd" in line]
    modules = {line.split()[1].split(".")[0] for line in imports}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}
