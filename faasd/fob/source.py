"""Checking an uploaded snippet (``POST /api/gen``) in the daemon, without running any of it.

A snippet is someone else's code: the daemon never executes it. It only asks the interpreter to parse and
compile it (:func:`compile` -- which executes nothing) and looks at the syntax tree for a top-level
``callme``; the code first runs inside the snippet's sandboxed replica. What is refused here, each a 400
saying why (with the line and column where there is one):

* a language other than :data:`LANGUAGES` (``?lang=``; the answer lists the supported ones);
* an empty body, a NUL byte, bytes that are not UTF-8 (the body is the source as it is, not JSON, not a
  form: the seed's ``http POST host/api/gen < add.py``);
* a syntax error, and source nested too deeply for the parser or the compiler (``((((...``, ``-----1``:
  the interpreter's ``RecursionError``/``MemoryError``, never a crash);
* no top-level ``callme``: a ``def``, a class, an assignment or an import binding that name, directly in
  the module or inside a top-level ``if``/``try``/``with``/``for``/``while``/``match`` (an
  ``async def callme`` is refused: the driver calls it synchronously).

The size is bounded by the caller before this runs (``max_snippet_size``). A coding declaration
(``# -*- coding: latin-1 -*-``) is honoured as the import in the replica will honour it: the bytes are
compiled, not a decoded copy.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

from faasd.errors import InvalidRequest

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "CheckedSource",
    "SourceError",
    "check_bytes",
    "check_language",
    "check_source",
]

LANGUAGES = ("python",)
"""Languages ``?lang=`` may name (the seed's drivers: Python only)."""
DEFAULT_LANGUAGE = "python"
SNIPPET_FILE = "snippet.py"
"""The name the source is compiled under, and its file name in the replica (error messages show it)."""

_COMPOUND_BODIES = ("body", "orelse", "finalbody")
_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.TryStar, ast.Match)
"""Statements whose bodies run at the top level when the module does (a def's or a class's body does not)."""


class SourceError(InvalidRequest):
    """The snippet cannot be used (400); ``line``/``column`` (1-based) say where, when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class CheckedSource:
    """A snippet that compiles and defines ``callme``: its bytes as uploaded and its language."""

    source: bytes
    language: str


def check_language(language: str | None) -> str:
    """The language ``?lang=`` names (default :data:`DEFAULT_LANGUAGE`).

    Raises:
        SourceError: not one of :data:`LANGUAGES` (the message lists them).
    """
    if language is None or language == "":
        return DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        shown = language if len(language) <= 40 else language[:37] + "..."
        raise SourceError(f"unsupported lang {shown!r}; supported: {', '.join(LANGUAGES)}")
    return language


def check_source(source: bytes, language: str = DEFAULT_LANGUAGE) -> CheckedSource:
    """Check ``source`` as described in the module docstring.

    The compile costs memory and time in proportion to the source (256 KiB of ``1,1,1,...`` takes
    about a second and 150 MB here): the daemon runs this in a child process
    (:mod:`faasd.fob.checker`), after :func:`check_bytes` of its own.

    Raises:
        SourceError: why it cannot be used, with the line and column when there is one.
    """
    checked = check_bytes(source, language)
    tree = _compile(source)
    _find_callme(tree)
    return checked


def check_bytes(source: bytes, language: str = DEFAULT_LANGUAGE) -> CheckedSource:
    """The cheap checks of :func:`check_source` (a pass over the bytes: no parsing): the language, an
    empty body, a NUL byte, not UTF-8.

    Raises:
        SourceError: as :func:`check_source`.
    """
    language = check_language(language)
    if not source.strip():
        raise SourceError("the body is empty: send the snippet's Python source as the body, as it is")
    nul = source.find(b"\0")
    if nul >= 0:
        line, column = _position(source, nul)
        raise SourceError(f"line {line}, column {column}: the source contains a NUL byte", line, column)
    try:
        source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(source, exc.start)
        raise SourceError(f"line {line}, column {column}: the source is not UTF-8", line, column) from None
    return CheckedSource(source=source, language=language)


def _compile(source: bytes) -> ast.Module:
    """Parse and compile (compiling finds what parsing alone does not: ``return`` outside a function,
    ``nonlocal`` at module level, ...). Warnings (an invalid escape) are not errors and not logged."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=SNIPPET_FILE)
            compile(tree, SNIPPET_FILE, "exec", dont_inherit=True)
    except SyntaxError as exc:  # IndentationError and TabError included.
        line, column = exc.lineno, exc.offset
        where = f"line {line}, column {column}: " if line and column else f"line {line}: " if line else ""
        raise SourceError(f"{where}{type(exc).__name__}: {exc.msg}", line, column) from None
    except RecursionError:  # CPython's parser and compiler give up on deep nesting this way.
        raise SourceError("the source is nested too deeply to compile") from None
    except MemoryError:  # The same from the parser's own stack, or the checker's memory limit.
        raise SourceError("the source is nested too deeply or too large to compile") from None
    except ValueError as exc:  # e.g. a source the compiler refuses outright
        raise SourceError(f"the source cannot be compiled: {exc}") from None
    return tree


def _find_callme(tree: ast.Module) -> None:
    """Raise SourceError unless a top-level statement binds ``callme`` (see the module docstring).

    Iterative: a top-level ``if`` inside an ``if``... is walked without recursion."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "callme":
            line, column = node.lineno, node.col_offset + 1
            raise SourceError(f"line {line}, column {column}: callme must be a plain def, not async def", line, column)
        if _binds_callme(node):
            return
        if not isinstance(node, _COMPOUND):
            continue
        for field in _COMPOUND_BODIES:
            pending += getattr(node, field, None) or []
        for handler in getattr(node, "handlers", None) or []:  # try/except
            pending += handler.body
        for case in getattr(node, "cases", None) or []:  # match
            pending += case.body
    raise SourceError("the snippet defines no top-level callme: write def callme(...): ...", 1, 1)


def _binds_callme(node: ast.stmt) -> bool:
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return node.name == "callme"
    if isinstance(node, ast.Assign):
        return any(_names_callme(target) for target in node.targets)
    if isinstance(node, ast.AnnAssign):
        return node.value is not None and _names_callme(node.target)
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any((alias.asname or alias.name) == "callme" for alias in node.names)
    return False


def _names_callme(target: ast.expr) -> bool:
    """An assignment target that binds ``callme`` (``callme = f``, ``a, callme = ...``)."""
    pending = [target]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Name) and node.id == "callme":
            return True
        if isinstance(node, ast.Tuple | ast.List):
            pending += node.elts
        elif isinstance(node, ast.Starred):
            pending.append(node.value)
    return False


def _position(source: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column) of byte ``offset`` (the column counts bytes: the line may not decode)."""
    line_start = source.rfind(b"\n", 0, offset) + 1
    return source.count(b"\n", 0, offset) + 1, offset - line_start + 1
