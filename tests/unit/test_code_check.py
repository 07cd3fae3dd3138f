"""faasd/providers/local/code_check.py: which files a local function's command needs from its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.providers.local.code_check import missing_code


@pytest.mark.parametrize(
    ("argv", "env", "needs"),
    [
        (["python3", "index.py"], {}, "index.py"),
        (["python3.12", "app/main.py"], {}, "app/main.py"),
        (["node", "index.js"], {}, "index.js"),
        (["sh", "greet.sh"], {}, "greet.sh"),
        (["./handler"], {}, "./handler"),
        ([], {"mode": "python"}, "handler.py"),
        ([], {"mode": "python", "handler": "fn.py"}, "fn.py"),
    ],
)
def test_missing_code_is_named_with_what_to_do(
    tmp_path: Path, argv: list[str], env: dict[str, str], needs: str
) -> None:
    reason = missing_code(argv, env, str(tmp_path), uploaded=False)
    assert reason is not None and needs in reason
    assert "faas-cli never uploads a handler folder" in reason and "faasd deploy -f stack.yml" in reason
    uploaded = missing_code(argv, env, str(tmp_path), uploaded=True)
    assert uploaded is not None and "is not in the uploaded handler folder" in uploaded


@pytest.mark.parametrize(
    "argv",
    [
        ["cat"],
        ["wc", "-l"],
        ["sh", "-c", "echo hi"],
        ["python3", "-c", "print(1)"],
        ["python3", "-m", "http.server"],
        ["python3", "-u", "unchecked.py"],  # An option first: not looked into.
        ["python3", "/usr/lib/python3/dist-packages/x.py"],  # Absolute: not the function's code.
        ["grep", "pattern"],  # Not an interpreter: its argument is not a file.
        ["deno", "run", "main.ts"],  # A subcommand first, not a script.
    ],
)
def test_commands_that_need_no_code_pass(tmp_path: Path, argv: list[str]) -> None:
    assert missing_code(argv, {}, str(tmp_path), uploaded=False) is None


def test_present_code_passes(tmp_path: Path) -> None:
    (tmp_path / "index.py").write_text("")
    (tmp_path / "handler.py").write_text("")
    assert missing_code(["python3", "index.py"], {}, str(tmp_path), uploaded=True) is None
    assert missing_code([], {"mode": "python"}, str(tmp_path), uploaded=True) is None
