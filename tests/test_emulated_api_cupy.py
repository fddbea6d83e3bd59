"""The emulated CuPy (tests/emulated_gpu/cupy, cupyx) agrees with the real CuPy's API.

Issue 18: every public name of the stand-in must exist in the real package, and every callable
must take the same parameters (names, order, kinds, defaults). This runs where the real CuPy is
installed (the GPU-libraries-without-driver leg: cupy-cuda12x, no driver) and skips elsewhere.

Neither package replaces the other in this process: each side is described by a child process
(``python tests/test_emulated_api_cupy.py --dump emulated|real``), the emulated one with
tests/emulated_gpu first on PYTHONPATH, the real one without it; the test compares the JSON.
Real CuPy is mostly Cython: where ``inspect.signature`` fails (or gives a wrapper's
``*args, **kwargs``), the signature embedded on the first docstring line is parsed instead
(``RawKernel(str code, str name, tuple options=(), ...)``, Cython types stripped).
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EMULATOR = REPO / "tests" / "emulated_gpu"

#: The emulated modules described (and any other public cupy/cupyx module the stand-in loads).
MODULES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.memory", "cupy.cuda.stream",
           "cupy.cuda.device", "cupy_backends.cuda.api.driver", "cupy.cuda.pinned_memory",
           "cupy.lib", "cupy.lib.stride_tricks", "cupyx")

#: Emulator-only names allowed to be absent from the real CuPy, and why.
EMULATOR_ONLY = {
    "__emulated__": "marks the stand-in (gds_zarr's tests check it)",
}

#: Real callables with no readable signature (nothing to compare with), and why.
UNVERIFIABLE = {
    "cupy.cuda.memory.BaseMemory": "a Cython base class CuPy makes internally: no documented "
                                   "constructor, no __init__ of its own",
}

#: Dunder members compared as API (the rest are Python's protocol plumbing).
DUNDERS = ("__call__", "__enter__", "__exit__", "__cuda_array_interface__", "__dlpack__",
           "__dlpack_device__", "__array__")

#: Emulated objects whose instance attributes are part of the API (``self.ptr = ...``).
EMULATED_SAMPLES = (
    "cupy.zeros(2)",
    "cupy.cuda.Stream()",
    "cupy.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr)",
    "cupy.cuda.Event()",
    "cupy.cuda.Device(0)",
    "cupy.cuda.alloc(8)",
    "cupy.cuda.alloc(8).mem",
    "cupy.cuda.alloc_pinned_memory(8)",
    "cupy.cuda.alloc_pinned_memory(8).mem",
    "cupy.get_default_memory_pool()",
    "cupy.get_default_pinned_memory_pool()",
    "cupy.RawKernel('extern \"C\" __global__ void k() {}', 'k')",
    "cupy.RawModule(code='extern \"C\" __global__ void k() {}')",
)

#: Real objects that need no driver, for attributes set in ``__init__`` (not on the class).
REAL_SAMPLES = (
    "cupy.cuda.Stream.null",
    "cupy.cuda.Stream.ptds",
    "cupy.cuda.ExternalStream(0, 0)",
    "cupy.cuda.Device(0)",
    "cupy.get_default_memory_pool()",
    "cupy.get_default_pinned_memory_pool()",
)

# A module's own dunders (Python's); others (``__version__``, ``__emulated__``) are compared.
_MODULE_DUNDERS = frozenset({*dir(types.ModuleType("m")), "__file__", "__cached__", "__path__",
                             "__builtins__", "__all__", "__annotations__", "__getattr__",
                             "__dir__"})
# Values that name the installed release, not the API.
_UNCOMPARED_VALUES = frozenset({"__version__"})
# Modules whose objects are annotation or implementation helpers, never CuPy API.
_HELPER_ROOTS = frozenset({"typing", "collections", "__future__", "abc", "types", "threading",
                           "ctypes", "functools", "operator", "dataclasses", "contextlib"})
_VAR_KINDS = ("var-positional", "var-keyword")
_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional-or-keyword",
    inspect.Parameter.VAR_POSITIONAL: "var-positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only",
    inspect.Parameter.VAR_KEYWORD: "var-keyword",
}
_DOC_SIG = re.compile(r"(?:[\w.]+\.)?(?P<name>\w+)\((?P<params>.*?)\)\s*(?:->.*)?")

Param = list[Any]  # [name, kind, normalized default repr or None]


# ---------------------------------------------------------------- signatures (both sides)


def _top_level(text: str, sep: str) -> list[int]:
    """Indices of ``sep`` in ``text`` outside brackets and quotes."""
    out, depth, quote = [], 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(i)
    return out


def _split(text: str) -> list[str]:
    cuts = [-1, *_top_level(text, ","), len(text)]
    return [text[a + 1:b].strip() for a, b in itertools.pairwise(cuts)
            if text[a + 1:b].strip()]


def normalize_default(text: str) -> str:
    """A default's repr, comparable across sides (``<class 'float'>`` and ``float`` agree)."""
    text = text.strip()
    m = re.fullmatch(r"<(?:class|type) '([\w.]+)'>", text)
    if m:
        return m[1].rsplit(".", 1)[-1]
    m = re.fullmatch(r"<(?:function|built-in function|cyfunction|built-in method) ([\w.<>]+)"
                     r"(?: at 0x[0-9a-f]+)?>", text)
    if m:
        return m[1].rsplit(".", 1)[-1]
    try:
        return repr(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_params(text: str) -> list[Param]:
    """Parameters of an embedded signature, Cython types and ``not None`` stripped."""
    out: list[Param] = []
    kind = "positional-or-keyword"
    for raw in _split(text.replace("\\*", "*")):
        if raw == "/":
            out = [[n, "positional-only", d] for n, _, d in out]
            continue
        if raw == "*":
            kind = "keyword-only"
            continue
        eq = _top_level(raw, "=")
        left, default = (raw[:eq[0]], raw[eq[0] + 1:]) if eq else (raw, None)
        left = re.sub(r"\s+(?:not|or)\s+None$", "", left.strip())
        colon = _top_level(left, ":")
        name = (left[:colon[0]] if colon else left).split()[-1]
        if name.startswith("**"):
            out.append([name[2:], "var-keyword", None])
        elif name.startswith("*"):
            out.append([name[1:], "var-positional", None])
            kind = "keyword-only"
        else:
            out.append([name, kind, None if default is None else normalize_default(default)])
    return out


def _from_doc(obj: Any, names: set[str] | None) -> list[Param] | None:
    """The signature on the first docstring line, if it names one of ``names`` (None: any
    name, for callable objects such as CuPy's ufuncs: ``invert``'s says ``bitwise_invert``)."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    m = _DOC_SIG.fullmatch(doc.strip().splitlines()[0].strip())
    if m is None or (names is not None and m["name"] not in names):
        return None
    return parse_params(m["params"])


def _from_inspect(obj: Any) -> list[Param] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [[p.name, _KINDS[p.kind],
             None if p.default is p.empty else normalize_default(repr(p.default))]
            for p in sig.parameters.values()]


def _strip_self(params: list[Param] | None) -> list[Param] | None:
    if params and params[0][0] in ("self", "cls") and params[0][1] not in _VAR_KINDS:
        return params[1:]
    return params


def signature(obj: Any, *, prefer_doc: bool, method: bool = False) -> tuple[Any, str]:
    """``(params or None, source)``: the documented signature first for the real side (what
    CuPy promises), introspection first for the stand-in (what it implements)."""
    names: set[str] | None = {getattr(obj, "__name__", "")}
    if isinstance(obj, type):
        names = {obj.__name__, "__init__"}
    elif not inspect.isroutine(obj):
        names = None
    getters = [("docstring", lambda: _from_doc(obj, names)),
               ("inspect", lambda: _from_inspect(obj))]
    if not prefer_doc:
        getters.reverse()
    for source, get in getters:
        params = get()
        if params is not None:
            return (_strip_self(params) if method else params), source
    if isinstance(obj, type):  # Cython classes document the signature on __init__
        params = _from_doc(obj.__init__, {"__init__"})
        if params is not None:
            return _strip_self(params), "__init__ docstring"
    return None, "none"


# ---------------------------------------------------------------- describing one side


def _origin(obj: Any) -> str | None:
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{mod}.{qual}" if isinstance(mod, str) and isinstance(qual, str) else None


def _is_helper(module: str, obj: Any) -> bool:
    """Imported for the implementation (``np``, ``Any``, ``annotations``), not API."""
    if isinstance(obj, types.ModuleType):
        return not obj.__name__.startswith(module + ".")
    mod = getattr(obj, "__module__", None)
    return isinstance(mod, str) and mod.split(".")[0] in _HELPER_ROOTS


def _kind(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "class"
    return "callable" if callable(obj) else "value"


def _simple_value(obj: Any) -> str | None:
    return repr(obj) if isinstance(obj, bool | int | float | str | bytes | type(None)) else None


def describe(obj: Any, *, prefer_doc: bool) -> dict[str, Any]:
    """Kind, origin, signature (callables) or repr (simple values) of a module-level name."""
    kind = _kind(obj)
    d: dict[str, Any] = {"kind": kind, "origin": _origin(obj) if kind != "value" else None}
    if kind in ("class", "callable"):
        d["sig"], d["sig_from"] = signature(obj, prefer_doc=prefer_doc)
    elif kind == "value":
        d["value"] = _simple_value(obj)
    return d


def describe_member(cls: type, name: str, *, prefer_doc: bool) -> dict[str, Any]:
    """How ``cls.name`` is defined: an attribute, a method or a class-level callable."""
    raw = inspect.getattr_static(cls, name)
    if isinstance(raw, staticmethod):
        sig, src = signature(raw.__func__, prefer_doc=prefer_doc)
        return {"kind": "classlevel", "sig": sig, "sig_from": src}
    if isinstance(raw, classmethod) or type(raw).__name__ == "classmethod_descriptor":
        sig, src = signature(getattr(cls, name), prefer_doc=prefer_doc, method=prefer_doc)
        return {"kind": "classlevel", "sig": sig, "sig_from": src}
    if isinstance(raw, property | types.GetSetDescriptorType | types.MemberDescriptorType | type) \
            or not callable(raw):
        return {"kind": "attribute"}
    sig, src = signature(raw, prefer_doc=prefer_doc, method=True)
    return {"kind": "method", "sig": sig, "sig_from": src}


def _doc_attributes(cls: type) -> set[str]:
    """Names in the class docstring's ``Attributes:`` section (CuPy documents ``ptr`` there)."""
    lines = (cls.__doc__ or "").splitlines()
    out: set[str] = set()
    for i, line in enumerate(lines):
        if line.strip() != "Attributes:":
            continue
        indent = None
        for item in lines[i + 1:]:
            if not item.strip():
                continue
            width = len(item) - len(item.lstrip())
            if indent is None:
                indent = width
            if width < indent:
                break
            m = re.match(r"~?(?:\w+\.)*(\w+)\s*(?:\(.*?\))?\s*:", item.strip())
            if width == indent and m:
                out.add(m[1])
    return out


def _definer(cls: type, name: str) -> type | None:
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def _class_members(cls: type, instances: list[Any]) -> set[str]:
    # What a builtin base (Exception's with_traceback, args) gives is Python's, not CuPy's.
    names = {n for n in dir(cls) if not n.startswith("_")
             and getattr(_definer(cls, n), "__module__", "") != "builtins"}
    names |= {n for n in DUNDERS
              if any(n in vars(k) for k in cls.__mro__ if k.__module__ != "builtins")}
    for inst in instances:
        names |= {n for n in getattr(inst, "__dict__", {}) if not n.startswith("_")}
    return names


def _samples(exprs: tuple[str, ...]) -> tuple[dict[int, list[Any]], dict[str, str]]:
    """Objects built from ``exprs`` by class id, and the errors of those that failed."""
    import cupy  # noqa: F401 - the expressions use it
    import cupyx  # noqa: F401

    by_class: dict[int, list[Any]] = {}
    errors: dict[str, str] = {}
    for expr in exprs:
        try:
            with warnings.catch_warnings():  # ExternalStream is deprecated in CuPy 14
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = eval(expr, {"cupy": sys.modules["cupy"], "cupyx": sys.modules["cupyx"]})
        except Exception as e:  # noqa: BLE001 - reported with the dump
            errors[expr] = f"{type(e).__name__}: {e}"
            continue
        by_class.setdefault(id(type(obj)), []).append(obj)
    return by_class, errors


def _public_modules() -> list[str]:
    names = set(MODULES)
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None) or ""
        if name.split(".")[0] in ("cupy", "cupyx") and not any(
                p.startswith("_") for p in name.split(".")) and file.startswith(str(EMULATOR)):
            names.add(name)
    return sorted(names)


def dump_emulated() -> dict[str, Any]:
    """Every public name of the emulated modules, and every member of their classes."""
    import cupy
    import cupyx  # noqa: F401

    if not str(Path(cupy.__file__).resolve()).startswith(str(EMULATOR)):
        raise SystemExit(f"expected the emulated cupy, got {cupy.__file__}")
    modules: dict[str, Any] = {}
    classes: dict[str, Any] = {}
    samples, sample_errors = _samples(EMULATED_SAMPLES)
    for modname in _public_modules():
        mod = importlib.import_module(modname)
        names: dict[str, Any] = {}
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            private = name.startswith("_") and not (
                name.startswith("__") and name.endswith("__") and name not in _MODULE_DUNDERS)
            if private or _is_helper(modname, obj):
                continue
            d = describe(obj, prefer_doc=False)
            d["oid"] = id(obj) if d["kind"] in ("class", "callable") else None
            names[name] = d
            if d["kind"] == "class" and (d["origin"] or "").split(".")[0] in (
                    "cupy", "cupyx", "_emucuda"):
                entry = classes.setdefault(str(id(obj)), {
                    "origin": d["origin"], "paths": [], "members": {
                        m: (describe_member(obj, m, prefer_doc=False)
                            if _has_static(obj, m) else {"kind": "attribute"})
                        for m in sorted(_class_members(obj, samples.get(id(obj), [])))}})
                entry["paths"].append(f"{modname}.{name}")
        modules[modname] = names
    return {"modules": modules, "classes": classes, "sample_errors": sample_errors,
            "file": cupy.__file__}


def _has_static(cls: type, name: str) -> bool:
    try:
        inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return True


def dump_real(emulated: dict[str, Any]) -> dict[str, Any]:
    """The real CuPy's answer for every name and member the emulated dump lists."""
    import cupy

    if str(Path(cupy.__file__).resolve()).startswith(str(EMULATOR)):
        raise SystemExit(f"expected the real cupy, got the emulated one at {cupy.__file__}")
    samples, sample_errors = _samples(REAL_SAMPLES)
    modules: dict[str, Any] = {}
    for modname, names in emulated["modules"].items():
        not_importable = None
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            # ``cupy.cuda.driver`` is cupy.cuda's attribute (cupy_backends' module), not an
            # importable submodule: compare its names, and report the import.
            parent, _, last = modname.rpartition(".")
            mod = getattr(sys.modules.get(parent), last, None)
            if not isinstance(mod, types.ModuleType):
                modules[modname] = {"missing": f"{type(e).__name__}: {e}"}
                continue
            not_importable = f"{type(e).__name__}: {e}; it is {mod.__name__}"
        out: dict[str, Any] = {}
        for name in names:
            try:
                obj = getattr(mod, name)
            except Exception as e:  # noqa: BLE001 - AttributeError, or a lazy import failing
                out[name] = {"missing": f"{type(e).__name__}: {e}"}
                continue
            out[name] = describe(obj, prefer_doc=True)
        modules[modname] = {"names": out, "not_importable": not_importable}
    classes: dict[str, Any] = {}
    for key, cls_entry in emulated["classes"].items():
        real_cls, where = None, None
        for path in cls_entry["paths"]:
            modname, _, name = path.rpartition(".")
            obj = getattr(sys.modules.get(modname), name, None)
            if isinstance(obj, type):
                real_cls, where = obj, path
                break
        if real_cls is None:
            continue
        documented = _doc_attributes(real_cls)
        inst_attrs = {n for s in samples.get(id(real_cls), []) for n in getattr(s, "__dict__", {})}
        members: dict[str, Any] = {}
        for m in cls_entry["members"]:
            if _has_static(real_cls, m):
                members[m] = describe_member(real_cls, m, prefer_doc=True)
            elif m in documented or m in inst_attrs:
                members[m] = {"kind": "attribute"}
            else:
                members[m] = {"missing": "not an attribute of the class, its documented "
                                         "attributes or a driverless instance"}
        classes[key] = {"path": where, "origin": _origin(real_cls), "members": members}
    return {"modules": modules, "classes": classes, "sample_errors": sample_errors,
            "file": cupy.__file__}


# ---------------------------------------------------------------- comparing


def _fmt(params: list[Param] | None) -> str:
    if params is None:
        return "(unknown)"
    parts: list[str] = []
    star = False
    for i, (name, kind, default) in enumerate(params):
        if kind == "keyword-only" and not star:
            parts.append("*")
            star = True
        if kind == "var-positional":
            parts.append(f"*{name}")
            star = True
        elif kind == "var-keyword":
            parts.append(f"**{name}")
        else:
            parts.append(name if default is None else f"{name}={default}")
        if kind == "positional-only" and (i + 1 == len(params)
                                          or params[i + 1][1] != "positional-only"):
            parts.append("/")
    return f"({', '.join(parts)})"


def _comparable(params: list[Param]) -> list[tuple[str, str, str | None]]:
    # A caller cannot name *args, **kwargs or positional-only parameters: only their kind counts.
    return [("*" if k in _VAR_KINDS or k == "positional-only" else n, k, d) for n, k, d in params]


def signature_difference(emu: list[Param] | None, real: list[Param]) -> str | None:
    """Why the two signatures differ, or None when they agree."""
    if emu is None:
        return "the emulated signature cannot be read"
    if _comparable(emu) == _comparable(real):
        return None
    e_names = [n for n, _, _ in emu]
    r_names = [n for n, _, _ in real]
    why = []
    if missing := [n for n in r_names if n not in e_names]:
        why.append(f"lacks {', '.join(missing)}")
    if extra := [n for n in e_names if n not in r_names]:
        why.append(f"adds {', '.join(extra)}")
    real_by_name = {n: (k, d) for n, k, d in real}
    for n, k, d in emu:
        if n not in real_by_name:
            continue
        rk, rd = real_by_name[n]
        if k != rk and not (k in _VAR_KINDS and rk in _VAR_KINDS and k == rk):
            why.append(f"{n} is {k}, real {rk}")
        if d != rd:
            why.append(f"{n} defaults to {d}, real to {rd}")
    common = [n for n in e_names if n in r_names]
    if common != [n for n in r_names if n in e_names]:
        why.append("the order differs")
    return "; ".join(why) or "the unnamed (*args, positional-only) parameters differ"


def compare(emulated: dict[str, Any], real: dict[str, Any]) -> dict[str, list[str]]:
    """Differences by category: ``names`` (absent from real CuPy, or another kind),
    ``signatures`` (module-level callables), ``members`` (classes), ``unverified``."""
    out: dict[str, list[str]] = {"names": [], "signatures": [], "members": [], "unverified": []}
    seen_sigs: dict[Any, str] = {}
    for modname, names in emulated["modules"].items():
        r_mod = real["modules"][modname]
        if "missing" in r_mod:
            out["names"].append(f"{modname}: module not in real CuPy ({r_mod['missing']})")
            continue
        if r_mod["not_importable"]:
            out["names"].append(f"{modname}: importable from the emulator, not from real CuPy "
                                f"({r_mod['not_importable']})")
        for name, e in names.items():
            path = f"{modname}.{name}"
            if name in EMULATOR_ONLY:
                continue
            r = r_mod["names"][name]
            if "missing" in r:
                out["names"].append(f"{path}: not in real CuPy (emulated {e['kind']} "
                                    f"{_fmt(e.get('sig')) if 'sig' in e else ''})".rstrip())
                continue
            if e["kind"] != r["kind"]:
                out["names"].append(f"{path}: emulated {e['kind']}, real {r['kind']}")
                continue
            if e["kind"] == "value":
                if name not in _UNCOMPARED_VALUES and None not in (e["value"], r["value"]) \
                        and e["value"] != r["value"]:
                    out["names"].append(f"{path}: emulated value {e['value']}, real "
                                        f"{r['value']}")
                continue
            if e["kind"] not in ("class", "callable"):
                continue
            if e["origin"] and e["origin"] == r["origin"] and e["origin"].split(".")[0] not in (
                    "cupy", "cupyx", "_emucuda"):
                continue  # the same object (numpy's float32, dtype): nothing to compare
            key = (e["oid"], json.dumps(r.get("sig")))
            if key in seen_sigs:
                continue
            seen_sigs[key] = path
            if r["sig"] is None:
                if path not in UNVERIFIABLE:
                    out["unverified"].append(f"{path}: no real signature found (inspect, "
                                             f"docstring)")
                continue
            why = signature_difference(e["sig"], r["sig"])
            if why:
                out["signatures"].append(f"{path}{_fmt(e['sig'])}: real {_fmt(r['sig'])} "
                                         f"[{r['sig_from']}]: {why}")
    for key, c in emulated["classes"].items():
        rc = real["classes"].get(key)
        if rc is None:
            continue  # the class itself is reported missing under "names"
        for m, e in c["members"].items():
            path = f"{rc['path']}.{m}"
            if m in EMULATOR_ONLY:
                continue
            r = rc["members"][m]
            if "missing" in r:
                out["members"].append(f"{path}: not in real CuPy (emulated {e['kind']}"
                                      f"{_fmt(e.get('sig')) if 'sig' in e else ''})")
                continue
            if e["kind"] != r["kind"]:
                out["members"].append(f"{path}: emulated {e['kind']}, real {r['kind']}")
                continue
            if e["kind"] == "attribute":
                continue
            if r["sig"] is None:
                out["unverified"].append(f"{path}: no real signature found (inspect, docstring)")
                continue
            why = signature_difference(e["sig"], r["sig"])
            if why:
                out["members"].append(f"{path}{_fmt(e['sig'])}: real {_fmt(r['sig'])} "
                                      f"[{r['sig_from']}]: {why}")
    return out


# ---------------------------------------------------------------- the tests


def _env(emulated: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != EMULATOR]
    if emulated:
        paths.insert(0, str(EMULATOR))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _dump(side: str, stdin: str = "") -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--dump", side], input=stdin,
                          capture_output=True, text=True, env=_env(side == "emulated"),
                          cwd=REPO, timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"describing the {side} CuPy failed (exit {proc.returncode}):\n"
                             f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def _real_cupy_installed() -> bool:
    """Real CuPy on this interpreter's path, tests/emulated_gpu left out (it may be on it)."""
    path = [p for p in sys.path if not p or Path(p).resolve() != EMULATOR]
    return importlib.machinery.PathFinder.find_spec("cupy", path) is not None


@pytest.fixture(scope="module")
def differences() -> dict[str, list[str]]:
    if not _real_cupy_installed():
        pytest.skip("the real CuPy is not installed (checked in the GPU-libraries leg)")
    emulated = _dump("emulated")
    real = _dump("real", json.dumps(emulated))
    diff = compare(emulated, real)
    for side, d in (("emulated", emulated), ("real", real)):
        for expr, err in d["sample_errors"].items():
            diff["unverified"].append(f"{side} sample {expr} could not be made: {err}")
    return diff


def _report(title: str, lines: list[str]) -> str:
    return f"{len(lines)} {title}:\n" + "\n".join(sorted(lines))


def test_emulated_names_exist_in_real_cupy(differences: dict[str, list[str]]) -> None:
    """Every public emulated name is a real CuPy name of the same kind (module, class,
    callable, value; equal simple values)."""
    assert not differences["names"], _report("emulated names not matching real CuPy",
                                             differences["names"])


def test_emulated_signatures_match_real_cupy(differences: dict[str, list[str]]) -> None:
    """Every module-level emulated callable takes the real one's parameters (names, order,
    kinds, defaults), the functions wrapped from numpy in bulk included."""
    assert not differences["signatures"], _report("emulated callables whose parameters differ",
                                                  differences["signatures"])


def test_emulated_class_members_match_real_cupy(differences: dict[str, list[str]]) -> None:
    """Every public method and attribute of an emulated class exists on the real class, as
    the same kind, with the same parameters."""
    assert not differences["members"], _report("emulated class members not matching",
                                               differences["members"])


def test_every_comparison_was_made(differences: dict[str, list[str]]) -> None:
    """No emulated callable escapes the comparison for want of a readable real signature."""
    assert not differences["unverified"], _report("comparisons that could not be made",
                                                  differences["unverified"])


if __name__ == "__main__" and sys.argv[1:2] == ["--dump"]:
    side = sys.argv[2]
    result = dump_emulated() if side == "emulated" else dump_real(json.loads(sys.stdin.read()))
    print(json.dumps(result))
