"""``@record``: the part of ``dataclasses.dataclass`` the watchdog's modules use, without importing it.

Why: :mod:`dataclasses` imports :mod:`inspect`, and with it ``ast``, ``dis``, ``tokenize`` and ``linecache``
-- about a sixth of a fork-mode watchdog's start-up imports, paid at every replica start (docs/coldstart.md),
for the three classes the watchdog builds (its config, a parsed request, a ``run_as`` user). For type
checkers these classes are dataclasses (modules import ``dataclass`` under ``TYPE_CHECKING``); at run time
:func:`record` builds the same ``__init__`` (compiled once from source, as dataclasses does, so as fast),
``__repr__`` and ``__eq__``, ``__slots__``, ``kw_only`` and ``frozen`` (then a ``__hash__`` of the fields).

Not supported (a class that needs one uses :mod:`dataclasses`): ``field()``, default factories, ordering,
``__post_init__``, ``InitVar``/``ClassVar`` annotations, inheritance between records. A default is a plain
class attribute value (immutable ones only, as dataclasses requires).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["record"]


def record(*, frozen: bool = False, kw_only: bool = False, slots: bool = False) -> Callable[[type[T]], type[T]]:
    """Class decorator: see the module docstring."""

    def build(cls: type[T]) -> type[T]:
        names = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 -- inspect is what we avoid
        namespace = dict(cls.__dict__)
        defaults = {name: namespace.pop(name) for name in names if name in namespace}
        parameters = ", ".join(f"{name}=_default_{name}" if name in defaults else name for name in names)
        assign = "_set(self, {0!r}, {0})" if frozen else "self.{0} = {0}"
        source = f"def __init__(self, {'*, ' if kw_only else ''}{parameters}):\n"
        source += "".join(f"    {assign.format(name)}\n" for name in names) or "    pass\n"
        scope: dict[str, Any] = {f"_default_{name}": value for name, value in defaults.items()}
        scope["_set"] = object.__setattr__
        exec(source, scope)
        namespace.pop("__dict__", None)
        namespace.pop("__weakref__", None)
        if slots:
            namespace["__slots__"] = tuple(names)
        else:
            namespace.update(defaults)
        fields = tuple(names)

        def values(self: object) -> tuple[object, ...]:
            return tuple(getattr(self, name) for name in fields)

        def __repr__(self: object) -> str:
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self: object, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return values(self) == values(other)

        namespace.update(__init__=scope["__init__"], __repr__=__repr__, __eq__=__eq__)
        namespace["__hash__"] = (lambda self: hash(values(self))) if frozen else None
        if frozen:
            namespace["__setattr__"] = namespace["__delattr__"] = _frozen
        built: Any = type(cls)(cls.__name__, cls.__bases__, namespace)  # type: ignore[misc]  # its metaclass
        built.__qualname__ = cls.__qualname__
        built.__init__.__qualname__ = f"{cls.__qualname__}.__init__"
        return built

    return build


def _frozen(self: object, name: str, *value: object) -> None:
    raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")
