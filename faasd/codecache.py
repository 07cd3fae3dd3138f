"""Compiled code for the methods that dataclasses and attrs write at import time, and the regular
expressions modules compile at import, shipped in the zipapp.

Why: a ``@dataclass`` (and an attrs class: trio's) is built at import by writing its ``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``... as source text and compiling it. ``faasd up``
builds about 80 dataclasses (41 of them faasd's own, the rest hypercorn's, h11's, h2's, wsproto's) and
about 60 attrs classes before its first ``/healthz``: some 480 compiles, about an eighth of the daemon's
CPU to that point (docs/coldstart.md). The texts are the same at every start -- they depend only on the
classes' fields -- so ``scripts/build_zipapp.py`` compiles them once and ships the code objects in
``faasd/_codecache.marshal``; :func:`install` makes dataclasses' ``exec`` and attrs' ``compile`` look a
text up there first (a module-level name shadows the builtin for that module only: both call the
builtin by its plain name, at the time of the call).

Regular expressions likewise: the 76 that ``faasd up``'s imports compile (h11's grammar, hypercorn's,
faasd's own) took another 20-26 ms; their compiled form (the arguments of ``_sre.compile``: the
pattern's code, flags and groups) is cached too, and :func:`install` makes ``re``'s compiler use it.

Nothing else changes: a cached code object is what compiling the same text with the same flags gives
(the build does exactly that), and a text that is not in the cache -- a class outside the start path,
or attrs' ``__hash__``, whose text holds a per-process hash -- is compiled as before. Without the file
(a source checkout) or with one written for another interpreter (marshal format, bytecode and the regular
expression engine's codes are per Python version), :func:`install` does nothing.

The build runs :func:`collect` in a child process, importing :data:`START_MODULES` from the freshly
built zipapp, to learn the texts (``python3 -c`` with the zipapp on ``sys.path``; see the build script).
"""

from __future__ import annotations
import __future__

import builtins
import importlib.util
import marshal
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CACHE_FILE", "START_MODULES", "Key", "collect", "dump", "install", "missed", "stats"]

CACHE_FILE = "_codecache.marshal"
"""Its name inside the ``faasd`` package."""

START_MODULES = ("faasd.upargs", "faasd.sandbox.host", "faasd.daemon")
"""What ``faasd up`` imports before it serves: the build caches the texts their classes compile."""

Key = tuple[str, str, int]
"""(source text, file name, compiler flags) of one compile."""

Pattern = tuple["str | bytes", int]
"""(pattern, flags) of one regular expression compile."""

_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag

_table: dict[Key, Any] = {}
_patterns: dict[Pattern, tuple[Any, ...]] = {}
_re_compile = re._compiler.compile  # type: ignore[attr-defined]
_counts = {"hits": 0, "misses": 0}
_missed: list[Key | Pattern] = []


def stats() -> dict[str, int]:
    """How many compiles the cache answered (``hits``) and how many it did not (``misses``) so far."""
    return dict(_counts)


def missed() -> list[Key | Pattern]:
    """The texts and patterns compiled since :func:`install` that the cache did not hold, in order."""
    return list(_missed)


def _caller_flags() -> int:
    """The ``from __future__`` flags of the code calling ``exec``/``compile``: what the builtin would
    have inherited had it been called directly (attrs' module uses ``annotations``, dataclasses' none)."""
    return sys._getframe(2).f_code.co_flags & _FUTURE_FLAGS


def _cached_exec(source: Any, /, *args: Any, **kwargs: Any) -> None:
    """``exec`` for the dataclasses module: a source text found in the cache runs its code object."""
    if isinstance(source, str):
        key = (source, "<string>", _caller_flags())
        code = _table.get(key)
        if code is None:
            _counts["misses"] += 1
            _missed.append(key)
            code = builtins.compile(source, "<string>", "exec", flags=key[2], dont_inherit=True)
        else:
            _counts["hits"] += 1
        source = code
    builtins.exec(source, *args, **kwargs)


def _cached_compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
    """``compile`` for attrs' ``_make`` module, which calls it as ``compile(script, filename, "exec")``."""
    if isinstance(source, str) and isinstance(filename, str) and mode == "exec" and not args and not kwargs:
        key = (source, filename, _caller_flags())
        code = _table.get(key)
        if code is not None:
            _counts["hits"] += 1
            return code
        _counts["misses"] += 1
        _missed.append(key)
        return builtins.compile(source, filename, mode, flags=key[2], dont_inherit=True)
    return builtins.compile(source, filename, mode, *args, **kwargs)


def _cached_re_compile(pattern: Any, flags: int = 0) -> Any:
    """``re._compiler.compile``: a pattern found in the cache skips the parser and code generator."""
    if isinstance(pattern, (str, bytes)):
        arguments = _patterns.get((pattern, flags))
        if arguments is not None:
            _counts["hits"] += 1
            return re._compiler._sre.compile(pattern, *arguments)  # type: ignore[attr-defined]
        _counts["misses"] += 1
        _missed.append((pattern, flags))
    return _re_compile(pattern, flags)


def _shadow(exec_: Callable[..., None], compile_: Callable[..., Any], re_compile: Callable[..., Any]) -> None:
    import dataclasses

    import attr._make

    dataclasses.exec = exec_  # type: ignore[attr-defined]
    attr._make.compile = compile_  # type: ignore[attr-defined]
    re._compiler.compile = re_compile  # type: ignore[attr-defined]


def _magic() -> tuple[bytes, int]:
    return importlib.util.MAGIC_NUMBER, re._constants.MAGIC  # type: ignore[attr-defined]


def install(data: bytes | None = None) -> bool:
    """Use the cache ``data`` (default: the file shipped beside this module) from now on; False (and
    nothing done) when there is none, or it was written for another interpreter."""
    try:
        if data is None:
            data = __loader__.get_data(os.path.join(os.path.dirname(__file__), CACHE_FILE))  # type: ignore[name-defined]
        magic, table, patterns = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return False
    if magic != _magic() or not isinstance(table, dict) or not isinstance(patterns, dict):
        return False
    _table.update(table)
    _patterns.update(patterns)
    _shadow(_cached_exec, _cached_compile, _cached_re_compile)
    return True


def collect(modules: Iterable[str] = START_MODULES) -> tuple[list[Key], list[Pattern]]:
    """Import ``modules`` (in a fresh process) and return every text dataclasses and attrs, and every
    regular expression, compiled meanwhile."""
    seen: list[Key] = []
    patterns: list[Pattern] = []

    def record_exec(source: Any, /, *args: Any, **kwargs: Any) -> None:
        if isinstance(source, str):
            seen.append((source, "<string>", _caller_flags()))
            source = builtins.compile(source, "<string>", "exec", flags=seen[-1][2], dont_inherit=True)
        builtins.exec(source, *args, **kwargs)

    def record_compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(source, str) and isinstance(filename, str) and mode == "exec" and not args and not kwargs:
            seen.append((source, filename, _caller_flags()))
            return builtins.compile(source, filename, mode, flags=seen[-1][2], dont_inherit=True)
        return builtins.compile(source, filename, mode, *args, **kwargs)

    def record_re_compile(pattern: Any, flags: int = 0) -> Any:
        if isinstance(pattern, (str, bytes)):
            patterns.append((pattern, flags))
        return _re_compile(pattern, flags)

    _shadow(record_exec, record_compile, record_re_compile)
    for name in modules:
        importlib.import_module(name)
    return seen, patterns


def _sre_arguments(pattern: str | bytes, flags: int) -> tuple[Any, ...]:
    """What ``re``'s compiler passes to ``_sre.compile`` for ``pattern`` after the pattern itself."""
    sre = re._compiler._sre  # type: ignore[attr-defined]
    captured: list[tuple[Any, ...]] = []

    class Capture:
        def __getattr__(self, name: str) -> Any:
            return getattr(sre, name)

        def compile(self, *arguments: Any) -> Any:
            _, flags, code, groups, groupindex, indexgroup = arguments
            # Plain ints: the code holds re's named opcode constants (an int subclass marshal refuses).
            captured.append((int(flags), [int(op) for op in code], int(groups), dict(groupindex), indexgroup))
            return sre.compile(*arguments)

    re._compiler._sre = Capture()  # type: ignore[attr-defined]
    try:
        _re_compile(pattern, flags)
    finally:
        re._compiler._sre = sre  # type: ignore[attr-defined]
    return captured[0]


def dump(keys: Iterable[Key], patterns: Iterable[Pattern] = ()) -> bytes:
    """The cache file for ``keys`` (each text compiled as its caller would have) and ``patterns``."""
    table = {key: builtins.compile(key[0], key[1], "exec", flags=key[2], dont_inherit=True) for key in sorted(keys)}
    compiled = {key: _sre_arguments(*key) for key in sorted(set(patterns), key=repr)}
    return marshal.dumps((_magic(), table, compiled))
