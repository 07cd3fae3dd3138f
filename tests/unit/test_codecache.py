"""faasd.codecache: classes built from cached code are the classes compiling their texts gives.

Each case runs in a child interpreter: :func:`faasd.codecache.install` changes the dataclasses and
attrs modules for the whole process, and a class's texts are compiled when its module is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from faasd import codecache

ROOT = Path(__file__).resolve().parents[2]

CLASSES = r"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import re

import attr

WORD = re.compile(r"(?P<word>[a-z]+)-(\d{2,})", re.IGNORECASE)
BYTES = re.compile(rb"^\s*([0-9a-f]+)\r?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Frozen:
    name: str
    replicas: int = 1
    tags: tuple[str, ...] = field(default_factory=tuple)


@dataclass(order=True)
class Plain:
    a: int
    b: list[int] = field(default_factory=list)


@attr.s(slots=True, auto_attribs=True)
class Attrs:
    x: int
    y: str = "y"
"""
"""Two modules get this text (``cached_mod`` and ``plain_mod``): a frozen, slotted, keyword-only
dataclass with a default factory, an ordered one, and an attrs class (whose module compiles with
``from __future__ import annotations``, unlike dataclasses': the flags must follow the caller)."""

LATE = """
from dataclasses import dataclass


@dataclass
class Late:
    z: float = 0.5
"""


def _child(code: str, tmp_path: Path) -> str:
    (tmp_path / "cached_mod.py").write_text(CLASSES)
    (tmp_path / "plain_mod.py").write_text(CLASSES)
    (tmp_path / "late_mod.py").write_text(LATE)
    result = subprocess.run(
        [sys.executable, "-B", "-c", textwrap.dedent(code), str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


PRELUDE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from faasd import codecache
"""


def test_cached_classes_have_the_same_methods_and_behave_the_same(tmp_path: Path) -> None:
    keys, patterns = json.loads(
        _child(
            PRELUDE
            + """
keys, patterns = codecache.collect(['cached_mod'])
patterns = [(p.decode('latin-1') if isinstance(p, bytes) else p, isinstance(p, bytes), f) for p, f in patterns]
print(json.dumps([keys, patterns]))
""",
            tmp_path,
        )
    )
    assert len(keys) >= 8  # __init__, __repr__, __eq__, ordering, __setattr__/__delattr__, __hash__, attrs' own.
    assert len(patterns) == 2
    compiled = [(p.encode("latin-1") if is_bytes else p, flags) for p, is_bytes, flags in patterns]
    (tmp_path / "cache.marshal").write_bytes(codecache.dump([tuple(key) for key in keys], compiled))
    out = _child(
        PRELUDE
        + """
import plain_mod  # Compiled as usual: before install().
import re
re.purge()  # Else re's own cache would answer cached_mod's patterns.
assert codecache.install(open(sys.argv[1] + "/cache.marshal", "rb").read())
import cached_mod
import late_mod  # Not in the cache: compiled as usual.

def methods(cls):
    return {n: f for n, f in vars(cls).items() if callable(f) and hasattr(f, "__code__")}

for name in ("Frozen", "Plain", "Attrs"):
    cached, plain = getattr(cached_mod, name), getattr(plain_mod, name)
    assert methods(cached).keys() == methods(plain).keys(), name
    for method, function in methods(cached).items():
        other = methods(plain)[method]
        assert function.__code__ == other.__code__, (name, method)
        assert function.__annotations__ == other.__annotations__, (name, method)
        assert function.__defaults__ == other.__defaults__ and function.__kwdefaults__ == other.__kwdefaults__

a, b = cached_mod.Frozen(name="f", tags=("k",)), plain_mod.Frozen(name="f", tags=("k",))
assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1] and hash(a) == hash(b)
assert a == cached_mod.Frozen(name="f", tags=("k",)) and a != cached_mod.Frozen(name="g")
try:
    a.replicas = 2
except Exception as exc:
    assert type(exc).__name__ == "FrozenInstanceError", exc
else:
    raise AssertionError("a frozen dataclass took an assignment")
assert cached_mod.Plain(1) < cached_mod.Plain(2) and cached_mod.Plain(1).b == []
assert cached_mod.Attrs(1) == cached_mod.Attrs(1, "y") and repr(cached_mod.Attrs(2)) == "Attrs(x=2, y='y')"
assert late_mod.Late().z == 0.5
for name in ("WORD", "BYTES"):
    cached, plain = getattr(cached_mod, name), getattr(plain_mod, name)
    assert cached is not plain  # Not re's own cache: compiled again, from the cached code.
    assert (cached.pattern, cached.flags, cached.groups, cached.groupindex) == (
        plain.pattern, plain.flags, plain.groups, plain.groupindex)
assert cached_mod.WORD.match("Abc-123").groupdict() == {"word": "Abc"}
assert cached_mod.WORD.match("abc-1") is None and cached_mod.BYTES.match(b" 1f\\r").group(1) == b"1f"
print(json.dumps([codecache.stats(), codecache.missed()]))
""",
        tmp_path,
    )
    counts, missed = json.loads(out)
    assert counts["hits"] == len(keys) + len(patterns)
    assert [source.split("(")[0] for source, _, _ in missed] == ["def __create_fn__"] * 3  # Late's three.
    assert counts["misses"] == 3


def test_a_cache_for_another_interpreter_or_a_broken_one_is_not_used(tmp_path: Path) -> None:
    out = _child(
        PRELUDE
        + """
import marshal, dataclasses
print(json.dumps([
    codecache.install(marshal.dumps((b"\\x00\\x00\\r\\n", {}))),
    codecache.install(b"not marshal data"),
    codecache.install(),  # A source checkout ships no cache file.
    "exec" in vars(dataclasses),
]))
""",
        tmp_path,
    )
    assert json.loads(out) == [False, False, False, False]
