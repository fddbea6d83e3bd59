"""The emulated kvikio (tests/emulated_gpu/kvikio) agrees with the real kvikio's API (issue 18).

Every public name of the stand-in's modules must exist in the real package, and every callable
must take the same parameters (names, order, kinds, defaults): functions, classes (their
constructors, methods, properties), enums (their members) and the ``cufile_driver.properties``
object. Public names of the real package the stand-in leaves out must be the ones listed in
:data:`NOT_EMULATED`, so a name kvikio adds shows up here.

Runs where the real kvikio is installed (the GPU-libraries-without-driver leg, kvikio-cu12; it
imports without a driver) and skips elsewhere. The stand-in is loaded side by side with the real
package under a private name (``_gdsz_emulated_kvikio``), with tests/emulated_gpu on
``sys.path`` only while it imports: ``import kvikio`` keeps meaning the real one.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EMULATOR = REPO / "tests" / "emulated_gpu"
STANDIN = "_gdsz_emulated_kvikio"

#: The modules compared (relative to the package; "" is ``kvikio`` itself).
MODULES = ("", "cufile", "defaults", "cufile_driver", "remote_file", "buffer", "stream", "utils")

#: Public names of the real kvikio the stand-in does not provide, and why.
NOT_EMULATED = {
    "": {"Mmap": "memory-mapped file reads: gds_zarr does not use them",
         "Summary": "kvikio's I/O statistics: not used", "SummaryMonitor": "idem",
         "clear_page_cache": "drops the system page cache (root or sudo)",
         "drop_system_page_cache": "idem",
         "nsys_plugin_search_dir": "Nsight Systems plugin: no profiler on the emulated device"},
    "cufile": {"clear_page_cache": "see kvikio.clear_page_cache",
               "drop_system_page_cache": "see kvikio.drop_system_page_cache",
               "kvikio_deprecation_notice": "imported there for clear_page_cache only"},
}

# Python's own module attributes; the others (``__version__``) are compared.
_MODULE_DUNDERS = frozenset({*dir(types.ModuleType("m")), "__file__", "__cached__", "__path__",
                             "__builtins__", "__annotations__", "__all__"})
# Class members compared beyond the public ones.
_DUNDERS = ("__enter__", "__exit__", "__str__")
_HELPER_MODULES = ("typing", "__future__", "builtins", "collections", "abc", "enum", "functools")


# ---------------------------------------------------------------- loading both packages


@pytest.fixture(scope="module")
def real() -> types.ModuleType:
    kvikio = pytest.importorskip("kvikio", reason="the real kvikio is not installed")
    if Path(kvikio.__file__).resolve().is_relative_to(EMULATOR):
        pytest.skip("tests/emulated_gpu is on sys.path: `kvikio` is the stand-in here")
    for sub in MODULES[1:]:
        importlib.import_module(f"kvikio.{sub}")
    return kvikio


@pytest.fixture(scope="module")
def emulated(real: types.ModuleType) -> Iterator[types.ModuleType]:
    """The stand-in, as ``_gdsz_emulated_kvikio``; sys.path and the emulated device's
    ``_emucuda`` entries of sys.modules are as before once it has loaded."""
    saved_path = list(sys.path)
    device = ("_emucuda",)
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in device}
    sys.path.insert(0, str(EMULATOR))
    try:
        spec = importlib.util.spec_from_file_location(
            STANDIN, EMULATOR / "kvikio" / "__init__.py",
            submodule_search_locations=[str(EMULATOR / "kvikio")])
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[STANDIN] = package
        spec.loader.exec_module(package)
        for sub in (*MODULES[1:], "_lib.remote_handle"):
            importlib.import_module(f"{STANDIN}.{sub}")
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k.split(".")[0] in device]:
            del sys.modules[k]  # the stand-in keeps its own references
        sys.modules.update(saved)
    assert sys.modules["kvikio"] is real
    yield package
    for k in [k for k in sys.modules if k.split(".")[0] == STANDIN]:
        del sys.modules[k]


def _module(root: types.ModuleType, sub: str) -> types.ModuleType:
    return root if not sub else sys.modules[f"{root.__name__}.{sub}"]


# ---------------------------------------------------------------- describing callables

Param = tuple[str, str, str | None]  # name, kind, repr of the default


def _params(sig: inspect.Signature) -> list[Param]:
    return [(p.name, p.kind.name, None if p.default is p.empty else repr(p.default))
            for p in sig.parameters.values()]


_DOC_SIG = re.compile(r"^\s*(?:[\w.]+\.)?(\w+)\((.*?)\)")


def _doc_params(obj: Any) -> list[Param] | None:
    """Parameters from a Cython docstring's first line ``name(a, b=1)`` (types dropped)."""
    doc = inspect.getdoc(obj) or ""
    m = _DOC_SIG.match(doc.splitlines()[0] if doc else "")
    if m is None:
        return None
    out: list[Param] = []
    for part in filter(None, (x.strip() for x in m.group(2).split(","))):
        name, _, default = part.partition("=")
        name = name.split(":")[0].split()[-1]
        out.append((name.lstrip("*"), "VAR_POSITIONAL" if name.startswith("*") else
                    "POSITIONAL_OR_KEYWORD", default.strip() or None))
    return out


def _signature(obj: Any) -> list[Param] | None:
    try:
        return _params(inspect.signature(obj))
    except (TypeError, ValueError):
        return _doc_params(obj)


def _is_helper(value: Any) -> bool:
    """Annotation and implementation helpers (``Any``, ``overload``, ``annotations``)."""
    mod = getattr(value, "__module__", None) or type(value).__module__
    return mod.split(".")[0] in _HELPER_MODULES


def _public(mod: types.ModuleType) -> dict[str, Any]:
    """The module's public names, less submodules, helpers and what it imports from outside
    its package (``http.server`` classes in ``kvikio.utils``)."""
    root = mod.__name__.split(".")[0]
    out = {}
    for name in dir(mod):
        if name.startswith("_") and name not in ("__version__", "__git_commit__"):
            continue
        value = getattr(mod, name)
        if isinstance(value, types.ModuleType) or _is_helper(value):
            continue
        if ((inspect.isclass(value) or inspect.isfunction(value))
                and not value.__module__.startswith(root)):
            continue
        out[name] = value
    return out


def _members(cls: type) -> dict[str, Any]:
    """Public members (and :data:`_DUNDERS`) the class itself defines, inherited from its own
    bases (not ``object``'s or ``Enum``'s), as stored on the class."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, enum.Enum, enum.IntEnum, int) or klass.__module__ == "enum":
            continue
        for name, value in vars(klass).items():
            if (not name.startswith("_") or name in _DUNDERS) and not (
                    isinstance(cls, enum.EnumMeta) and name in cls.__members__):
                out[name] = value
    return out


def _kind(value: Any) -> str:
    if isinstance(value, staticmethod):
        return "staticmethod"
    if isinstance(value, classmethod):
        return "classmethod"
    if inspect.isdatadescriptor(value):
        return "property"
    if callable(value):
        return "method"
    return "attribute"


def _compare_class(where: str, emu: type, real: type, problems: list[str]) -> None:
    if isinstance(emu, enum.EnumMeta):
        e = {m.name: int(m.value) if isinstance(m.value, int) else m.value for m in emu}
        r = {m.name: int(m.value) if isinstance(m.value, int) else m.value for m in real}
        if e != r:
            problems.append(f"{where}: members {e} != real {r}")
        return
    e_sig, r_sig = _signature(emu), _signature(real)
    if r_sig is None:
        problems.append(f"{where}: the real constructor's parameters cannot be read")
    elif e_sig != r_sig:
        problems.append(f"{where}(): {e_sig} != real {r_sig}")
    real_members = {n: inspect.getattr_static(real, n) for n in dir(real)}
    for name, value in _members(emu).items():
        if name not in real_members:
            problems.append(f"{where}.{name}: not in the real class")
            continue
        ek, rk = _kind(value), _kind(real_members[name])
        if ek != rk:
            problems.append(f"{where}.{name}: a {ek}, the real one a {rk}")
            continue
        if ek in ("method", "staticmethod", "classmethod"):
            e_fn = value.__func__ if ek != "method" else value
            r_fn = real_members[name]
            r_fn = r_fn.__func__ if ek != "method" else r_fn
            e_p, r_p = _signature(e_fn), _signature(r_fn)
            if r_p is None:
                problems.append(f"{where}.{name}: the real parameters cannot be read")
            elif e_p != r_p:
                problems.append(f"{where}.{name}: {e_p} != real {r_p}")


def _compare_instance(where: str, emu: Any, real: Any, problems: list[str]) -> None:
    """An object the module exports (``cufile_driver.properties``): its type's public members,
    by name and kind (a Cython getset descriptor counts as a property)."""
    for name, value in _members(type(emu)).items():
        rv = inspect.getattr_static(type(real), name, None)
        if rv is None:
            problems.append(f"{where}.{name}: not in the real object")
        elif _kind(value) != _kind(rv):
            problems.append(f"{where}.{name}: a {_kind(value)}, the real one a {_kind(rv)}")


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("sub", MODULES)
def test_stand_in_names_and_parameters_match(sub: str, real: types.ModuleType,
                                             emulated: types.ModuleType) -> None:
    emu_mod, real_mod = _module(emulated, sub), _module(real, sub)
    where = f"kvikio{'.' + sub if sub else ''}"
    problems: list[str] = []
    for name, value in _public(emu_mod).items():
        if not hasattr(real_mod, name):
            problems.append(f"{where}.{name}: not in the real kvikio")
            continue
        rv = getattr(real_mod, name)
        if name == "__version__":
            if value != rv:
                problems.append(f"{where}.__version__ {value!r} != real {rv!r}")
        elif inspect.isclass(value):
            if not inspect.isclass(rv):
                problems.append(f"{where}.{name}: a class, the real one is {type(rv).__name__}")
            else:
                _compare_class(f"{where}.{name}", value, rv, problems)
        elif callable(value):
            e_p, r_p = _signature(value), _signature(rv)
            if r_p is None:
                problems.append(f"{where}.{name}: the real parameters cannot be read")
            elif e_p != r_p:
                problems.append(f"{where}.{name}: {e_p} != real {r_p}")
        elif name != "__git_commit__":
            _compare_instance(f"{where}.{name}", value, rv, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("sub", MODULES)
def test_real_names_missing_from_the_stand_in_are_listed(sub: str, real: types.ModuleType,
                                                         emulated: types.ModuleType) -> None:
    emu_mod, real_mod = _module(emulated, sub), _module(real, sub)
    missing = {n for n, v in _public(real_mod).items() if not hasattr(emu_mod, n)
               and not n.startswith("__")}
    assert missing == set(NOT_EMULATED.get(sub, {})), (
        f"kvikio{'.' + sub if sub else ''}: the real names absent from the stand-in are "
        f"{sorted(missing)}; NOT_EMULATED lists {sorted(NOT_EMULATED.get(sub, {}))}")


def test_all_lists_agree(real: types.ModuleType, emulated: types.ModuleType) -> None:
    extra = set(emulated.__all__) - set(real.__all__)
    absent = set(real.__all__) - set(emulated.__all__)
    assert not extra, f"in the stand-in's __all__ only: {sorted(extra)}"
    assert absent <= set(NOT_EMULATED[""]), f"absent from the stand-in's __all__: {sorted(absent)}"


def test_the_comparison_sees_a_difference(real: types.ModuleType,
                                          emulated: types.ModuleType) -> None:
    """The checks above fail on a changed parameter (guards against comparing nothing)."""
    def pread(self: Any, buf: Any, size: Any = None, offset: int = 0, task_size: Any = None
              ) -> None: ...

    fake = type("CuFile", (), {"__init__": emulated.CuFile.__init__, "pread": pread})
    problems: list[str] = []
    _compare_class("kvikio.CuFile", fake, real.CuFile, problems)
    assert problems == [
        "kvikio.CuFile.pread: [('self', 'POSITIONAL_OR_KEYWORD', None), ('buf', "
        "'POSITIONAL_OR_KEYWORD', None), ('size', 'POSITIONAL_OR_KEYWORD', 'None'), ('offset', "
        "'POSITIONAL_OR_KEYWORD', '0'), ('task_size', 'POSITIONAL_OR_KEYWORD', 'None')] != real "
        "[('self', 'POSITIONAL_OR_KEYWORD', None), ('buf', 'POSITIONAL_OR_KEYWORD', None), "
        "('size', 'POSITIONAL_OR_KEYWORD', 'None'), ('file_offset', 'POSITIONAL_OR_KEYWORD', "
        "'0'), ('task_size', 'POSITIONAL_OR_KEYWORD', 'None')]"]
    assert "kvikio" not in sys.modules or sys.modules["kvikio"] is real
