"""Which faasd module may import which: the dependencies point one way (docs in faasd/assembly.py).

Read from the source with ``ast`` (every ``import``/``from ... import``, TYPE_CHECKING blocks included):
a cycle or a shortcut brought back fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "faasd"


@functools.cache
def imports(path: Path) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def sources(*parts: str) -> list[Path]:
    root = PACKAGE.joinpath(*parts)
    return [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in paths
        for name in imports(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    )


@pytest.mark.parametrize(
    ("where", "forbidden"),
    [
        (("service.py",), ("faasd.scaler", "faasd.gateway", "faasd.daemon", "faasd.assembly")),
        (("scaler",), ("faasd.service", "faasd.gateway", "faasd.daemon", "faasd.assembly")),
        (("providers",), ("faasd.service", "faasd.scaler", "faasd.gateway", "faasd.daemon", "faasd.assembly")),
        (("gateway",), ("faasd.daemon", "faasd.assembly", "faasd.ui")),
        (("ui",), ("faasd.service", "faasd.scaler", "faasd.providers", "faasd.daemon", "faasd.assembly")),
    ],
    ids=["service", "scaler", "providers", "gateway", "ui"],
)
def test_dependencies_point_one_way(where: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert offending(sources(*where), forbidden) == []


def test_backends_are_reached_only_through_load_provider() -> None:
    """Outside faasd/providers/ nothing imports a backend or the backends' shared helpers."""
    outside = [path for path in sources() if PACKAGE / "providers" not in path.parents]
    backends = ("faasd.providers.local", "faasd.providers.swarm", "faasd.providers.marathon", "faasd.providers.memory")
    assert offending(outside, (*backends, "faasd.providers.common")) == []


@pytest.mark.parametrize("backend", ["local", "swarm", "marathon", "memory"])
def test_a_backend_does_not_import_another(backend: str) -> None:
    if not (PACKAGE / "providers" / backend).is_dir():
        pytest.skip(f"no {backend} backend in this tree")
    others = tuple(f"faasd.providers.{other}" for other in ("local", "swarm", "marathon", "memory") if other != backend)
    assert offending(sources("providers", backend), others) == []
