"""The pybind11 behaviours of the real ``nvcomp_impl`` extension that callers can observe.

The real module is a pybind11 extension: its enums compare equal only to their own type (and,
for the OR-combinable ones, to ints), print as ``<BitstreamKind.RAW: 1>``, and accept any int;
its overloaded functions raise ``TypeError: f(): incompatible function arguments`` when no
overload matches; an argument of the wrong type for a C++ parameter raises ``RuntimeError:
Unable to cast Python instance ...``. Each was observed on nvidia-nvcomp-cu12 6.0.0.12 (import
works without a driver; see tests/test_emulated_api_nvcomp.py for the introspection).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

__all__ = ["PybindEnum", "cast_error", "incompatible", "make_enum", "suggest", "type_name"]

#: The module the real classes report (``type.__module__``), used in messages.
MODULE = "nvidia.nvcomp.nvcomp_impl"


def type_name(cls: type) -> str:
    """``nvidia.nvcomp.nvcomp_impl.Codec`` for the emulated classes, ``int`` for builtins."""
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{MODULE}.{cls.__name__}"


class PybindEnum:
    """Base of the emulated ``py::enum_`` types (see :func:`make_enum`)."""

    __slots__ = ("_value",)
    _names: ClassVar[dict[int, str]] = {}
    _arithmetic: ClassVar[bool] = False
    __members__: ClassVar[dict[str, Any]] = {}

    def __init__(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise incompatible("__init__", [f"{type_name(type(self))}(value: int)"], (value,), {},
                               constructor=True)
        self._value = int(value)

    @property
    def name(self) -> str:
        return self._names.get(self._value, "???")

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def _other(self, other: object) -> int | None:
        # pybind11: a plain enum equals only its own type; an arithmetic one also ints.
        if type(other) is type(self):
            return other._value  # type: ignore[attr-defined, no-any-return]
        if self._arithmetic and isinstance(other, int):
            return int(other)
        return None

    def __eq__(self, other: object) -> bool:
        v = self._other(other)
        return v is not None and v == self._value

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {self._value}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __getstate__(self) -> int:
        return self._value

    def __setstate__(self, state: int) -> None:
        self._value = int(state)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._value,))


class _ArithmeticEnum(PybindEnum):
    """``py::enum_(..., py::arithmetic())``: ordering and bit operations give ints."""

    __slots__ = ()
    _arithmetic = True

    def __lt__(self, other: Any) -> bool:
        return self._value < int(other)

    def __gt__(self, other: Any) -> bool:
        return self._value > int(other)

    def __le__(self, other: Any) -> bool:
        return self._value <= int(other)

    def __ge__(self, other: Any) -> bool:
        return self._value >= int(other)

    def __and__(self, other: Any) -> int:
        return self._value & int(other)

    def __rand__(self, other: Any) -> int:
        return int(other) & self._value

    def __or__(self, other: Any) -> int:
        return self._value | int(other)

    def __ror__(self, other: Any) -> int:
        return int(other) | self._value

    def __xor__(self, other: Any) -> int:
        return self._value ^ int(other)

    def __rxor__(self, other: Any) -> int:
        return int(other) ^ self._value

    def __invert__(self) -> int:
        return ~self._value


def make_enum(name: str, doc: str, members: dict[str, int], *,
              arithmetic: bool = False) -> type[PybindEnum]:
    """A pybind11-like enum type with ``members`` as class attributes and ``__members__``."""
    base = _ArithmeticEnum if arithmetic else PybindEnum
    cls = type(name, (base,), {"__slots__": (), "__doc__": doc, "__module__": MODULE,
                               "_names": {v: k for k, v in members.items()}})
    inst = {}
    for k, v in members.items():
        e = cls(v)
        setattr(cls, k, e)
        inst[k] = e
    cls.__members__ = inst
    return cls


def cast_error(value: object) -> RuntimeError:
    """The error pybind11 raises for an argument it cannot convert to the C++ type."""
    return RuntimeError(f"Unable to cast Python instance of type {type(value)} to C++ type '?' "
                        f"(#define PYBIND11_DETAILED_ERROR_MESSAGES or compile in debug mode for "
                        f"details)")


def _invoked(args: Iterable[Any], kwargs: dict[str, Any]) -> str:
    parts = [", ".join(repr(a) for a in args)]
    if kwargs:
        parts.append("kwargs: " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
    return "; ".join(p for p in parts if p)


def incompatible(name: str, signatures: list[str], args: Iterable[Any], kwargs: dict[str, Any],
                 *, constructor: bool = False) -> TypeError:
    """pybind11's TypeError when no overload of ``name`` accepts the arguments."""
    what = "constructor" if constructor else "function"
    listed = "\n".join(f"    {i}. {s}" for i, s in enumerate(signatures, 1))
    return TypeError(f"{name}(): incompatible {what} arguments. The following argument types are "
                     f"supported:\n{listed}\n\nInvoked with: {_invoked(args, kwargs)}")


def signature_text(fn: Callable[..., Any]) -> str:
    """``(a: int, b: str = '') -> R`` of a Python overload stub, for :func:`incompatible`."""
    return str(inspect.signature(fn))


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean "x"?`` for the closest of ``choices`` (as the real Codec says), or ''."""
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f' Did you mean "{near[0]}"?' if near else ""
