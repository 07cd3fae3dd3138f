"""Checking an uploaded snippet without running it (faasd.fob.source): what compiles and binds ``callme``
passes; everything else is a 400 with a line and column where there is one -- hostile input included
(NUL, not UTF-8, nesting that makes the parser or compiler give up), and none of it is executed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faasd.fob.source import LANGUAGES, SourceError, check_language, check_source

GOOD = {
    "def": b"def callme():\n    return 42\n",
    "args": b"def callme(param1, param2):\n    return int(param1) + int(param2)\n",
    "assignment": b"def f(**kw):\n    return kw\ncallme = f\n",
    "annotated": b"from typing import Any\ncallme: Any = len\n",
    "tuple target": b"a, callme = 1, print\n",
    "import as": b"from os.path import basename as callme\n",
    "import": b"import callme\n",  # Binds the name (the import itself fails in the replica).
    "class": b"class callme:\n    pass\n",
    "under if": b"import sys\nif sys.version_info >= (3,):\n    def callme():\n        return 3\n",
    "under try": b"try:\n    import json\nexcept ImportError:\n    pass\nelse:\n    def callme():\n        return 1\n",
    "under match": b"match 1:\n    case 1:\n        def callme(): return 1\n",
    "crlf": b"def callme():\r\n    return 1\r\n",
    "bom": b"\xef\xbb\xbfdef callme():\n    return 1\n",
    "coding cookie": b"# -*- coding: latin-1 -*-\ndef callme():\n    return 'x'\n",
    "invalid escape": b"def callme():\n    return '\\d'\n",  # A warning, not an error (and not logged).
    "runs nothing": b"import os\nos._exit(3)\ndef callme(): pass\n",  # Compiling never executes it.
}

BAD = [
    ("empty", b"", "the body is empty", None),
    ("blank", b"  \n\t\n", "the body is empty", None),
    ("syntax", b"def callme(:\n    pass\n", "SyntaxError", (1, 12)),
    ("indentation", b"def callme():\nreturn 1\n", "IndentationError", (2, 1)),
    ("tabs", b"def callme():\n\tif 1:\n        return 1\n", "TabError", (3, None)),
    ("return outside", b"return 1\ndef callme(): pass\n", "SyntaxError", (1, None)),
    ("nonlocal at top", b"nonlocal x\ndef callme(): pass\n", "SyntaxError", (1, None)),
    ("no callme", b"def callm():\n    return 1\n", "defines no top-level callme", (1, 1)),
    ("callme in a def", b"def outer():\n    def callme(): pass\n", "defines no top-level callme", (1, 1)),
    ("callme only read", b"print(callme)\n", "defines no top-level callme", (1, 1)),
    ("async", b"x = 1\nasync def callme():\n    return 1\n", "not async def", (2, 1)),
    ("nul", b"def callme():\n    return '\x00'\n", "NUL byte", (2, 13)),
    ("not utf-8", b"def callme():\n    return '\xff'\n", "not UTF-8", (2, 13)),
    ("bad cookie", b"# -*- coding: no-such-codec -*-\ndef callme(): pass\n", "SyntaxError", None),
]

DEEP = [
    ("parentheses", b"x = " + b"(" * 100_000 + b")" * 100_000),
    ("unary minus", b"x = " + b"-" * 100_000 + b"1"),
    ("not", b"x = " + b"not " * 50_000 + b"1"),
    ("sums", b"x = " + b"1+" * 100_000 + b"1"),
    ("attributes", b"x = a" + b".b" * 100_000),
    ("calls", b"x = f" + b"()" * 100_000),
    ("lambdas", b"x = " + b"lambda: " * 30_000 + b"1"),
    ("lists", b"x = " + b"[" * 100_000 + b"]" * 100_000),
    ("indentation", b"".join(b" " * i + b"if x:\n" for i in range(200)) + b" " * 200 + b"pass\n"),
    ("sums, just past the compiler", b"x = " + b"1+" * 3_000 + b"1"),
]


@pytest.mark.parametrize("source", GOOD.values(), ids=GOOD.keys())
def test_sources_that_bind_callme_pass(source: bytes) -> None:
    checked = check_source(source)
    assert checked.source == source and checked.language == "python"


@pytest.mark.parametrize(("what", "source", "reason", "where"), BAD, ids=[case[0] for case in BAD])
def test_unusable_sources_are_400_with_line_and_column(
    what: str, source: bytes, reason: str, where: tuple[int, int | None] | None
) -> None:
    with pytest.raises(SourceError) as caught:
        check_source(source)
    error = caught.value
    assert error.http_status == 400
    assert reason in error.message, error.message
    assert "\n" not in error.message
    if where is not None:
        line, column = where
        assert error.line == line
        if column is not None:
            assert error.column == column
        assert f"line {line}" in error.message or what in ("no callme", "callme in a def", "callme only read")


@pytest.mark.parametrize(("what", "source"), DEEP, ids=[case[0] for case in DEEP])
def test_deep_nesting_is_a_400_not_a_crash(what: str, source: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        check_source(source + b"\ndef callme(): pass\n")
    assert caught.value.http_status == 400
    assert time.monotonic() - started < 5


def test_a_large_plain_source_checks_fast() -> None:
    """256 KiB (max_snippet_size's default) of ordinary code: the compile is bounded by the size."""
    source = b"def callme():\n    return 1\n" + b"x = [1, 2, 3, 'abc', {'k': (4, 5)}]\n" * 7_000
    assert len(source) > 250_000
    started = time.monotonic()
    check_source(source)
    assert time.monotonic() - started < 5


def test_checking_executes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    check_source(f"open({str(marker)!r}, 'w').close()\ndef callme(): pass\n".encode())
    assert not marker.exists()


def test_languages() -> None:
    assert LANGUAGES == ("python",)
    assert check_language(None) == check_language("") == check_language("python") == "python"
    for other in ("js", "Python", "python3 ", "x" * 5_000):
        with pytest.raises(SourceError) as caught:
            check_language(other)
        assert "supported: python" in caught.value.message and len(caught.value.message) < 120
    with pytest.raises(SourceError, match="supported: python"):
        check_source(b"def callme(): pass\n", "ruby")
