"""Every CuPy, kvikio and nvCOMP name gds_zarr (and zarr's GPU buffers) uses exists on the
emulated device (tests/emulated_gpu), so the GPU path runs there unchanged (issue 18, item 1).

The names come from the source, read with ``ast``: attribute chains on names bound to the
modules ``cupy``, ``cupyx``, ``kvikio`` (and submodules) and ``nvidia.nvcomp`` (``import cupy
as cp``, ``from kvikio.remote_file import RemoteFile``, ``from nvidia import nvcomp``, imports
inside functions, ``d = kvikio.defaults``, ``getattr(module, "name")``), plus the calls made
on them. What gds_zarr does with the objects those calls return (``a.data.ptr``, a stream's
``synchronize``) cannot be read statically: :data:`OBJECT_ATTRIBUTES` lists it by hand.

The check runs in a child process with tests/emulated_gpu first on PYTHONPATH
(``python tests/test_emulated_names.py --check``), so it runs in every CI leg, CuPy installed
or not, and leaves this process's imports alone.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EMULATOR = REPO / "tests" / "emulated_gpu"

#: The emulated packages; a dotted name under one of them is checked.
ROOTS = ("cupy", "cupyx", "kvikio", "nvidia.nvcomp")
#: NVML: on the emulated device ``pynvml`` is the real binding (nvidia-ml-py) over an emulated
#: ``libnvidia-ml.so.1`` (tests/emulated_gpu/pynvml.py). A ``pynvml.`` name gds_zarr uses is
#: checked for the C entry points its binding function calls: each must be in the emulated
#: library (one missing would raise NVMLError_FunctionNotFound on the emulated device only).
NVML_ROOT = "pynvml"

#: Functions returning the array module, ``cupy`` on the GPU path (pipeline/_read.py ``_xp``).
ARRAY_MODULE_CALLS = frozenset({"_xp"})
#: Names holding the array module (``xp = _xp(device)``, ``def _native(x, xp, dtype)``).
ARRAY_MODULE_NAMES = frozenset({"xp"})

#: What gds_zarr does with objects the libraries return: ``label: (code that makes one on the
#: emulated device, binding ``obj``; the attributes gds_zarr uses on it)``. Kept by hand from
#: ``grep -rn "\.data\.ptr\|\.device\|\.view(\|\.reshape(\|\.get(\|\.ptr\|synchronize" gds_zarr``.
OBJECT_ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    # decode/_gpu.py, _blosc_gpu.py, _scatter_gpu.py, io/_gpu.py, io/__init__.py,
    # pipeline/_read.py, _many.py, decode/chain.py (to_chunk), cli/_demo.py (``.get()``).
    "device array": ("obj = cupy.zeros((2, 8), cupy.uint8)", (
        "data", "device", "dtype", "shape", "strides", "ndim", "size", "nbytes", "flags",
        "reshape", "view", "transpose", "squeeze", "copy", "astype", "get",
        "__getitem__", "__setitem__", "__len__", "__cuda_array_interface__")),
    # decode/_gpu.py decode_batch and _scatter_gpu.contiguous_rows: ``out.flags.c_contiguous``.
    "device array flags": ("obj = cupy.zeros(2).flags", ("c_contiguous",)),
    # ``a.data.ptr`` (io/_gpu.py, decode/*); ``cupy.cuda.alloc(n).ptr`` (nvCOMP's allocator).
    "memory pointer (ndarray.data)": ("obj = cupy.zeros(8, cupy.uint8).data", ("ptr",)),
    "memory pointer (cupy.cuda.alloc)": ("obj = cupy.cuda.alloc(8)", ("ptr",)),
    # ``cupy.cuda.Device().id``, ``with cupy.cuda.Device(i):``, ``with out.device:``,
    # ``cupy.cuda.Device(d).synchronize()`` (pipeline/_gpuread.py, _device.py).
    "device": ("obj = cupy.cuda.Device(0)", ("id", "synchronize", "__enter__", "__exit__")),
    "array's device": ("obj = cupy.zeros(1).device", ("id", "synchronize", "__enter__",
                                                      "__exit__")),
    # ``get_current_stream().ptr`` / ``.synchronize()``; ``with target.stream:`` (_device.py).
    "current stream": ("obj = cupy.cuda.get_current_stream()", (
        "ptr", "synchronize", "__enter__", "__exit__")),
    # loader.py: ``with cupy.cuda.Device(d), cupy.cuda.Stream(non_blocking=True):``.
    "new stream": ("obj = cupy.cuda.Stream(non_blocking=True)", (
        "ptr", "synchronize", "__enter__", "__exit__")),
    # decode/_gpu.py, _blosc_gpu.py, _scatter_gpu.py: ``_kernel(name)(grid, block, args)``.
    "raw kernel": ("obj = cupy.RawKernel('extern \"C\" __global__ void k() {}', 'k')",
                   ("__call__",)),
    # _hostpool.py: ``PinnedMemoryPointer(PinnedMemory(n, hostAllocPortable), 0).ptr``.
    "pinned memory pointer": ("obj = cupy.cuda.PinnedMemoryPointer(cupy.cuda.PinnedMemory("
                              "16, cupy.cuda.runtime.hostAllocPortable), 0)", ("ptr", "mem")),
    # io/_gpu.py: ``kvikio.CuFile(path, "r")``, ``.pread(buf, size, offset).get()``, ``.close()``.
    "kvikio read handle": ("obj = kvikio.CuFile(tmp, 'r')", ("pread", "close")),
    "kvikio pread future": ("f = kvikio.CuFile(tmp, 'r')\n"
                            "obj = f.pread(cupy.empty(16, cupy.uint8), 16, 0)", ("get",)),
    # io/_gpu.py write_file: ``kvikio.CuFile(tmp, "w").pwrite(arr, n, 0).get()``, ``close()``.
    "kvikio write handle": ("obj = kvikio.CuFile(tmp + '.out', 'w')", ("pwrite", "close")),
    # io/_remote_gpu.py: ``RemoteFile.open_http(url, nbytes=)``, ``open_s3_url``,
    # ``open_s3_public``, then ``handle.pread(buf, size, offset).get()``.
    "kvikio RemoteFile class": ("from kvikio.remote_file import RemoteFile as obj", (
        "open_http", "open_s3_url", "open_s3_public", "pread")),
    # decode/_gpu.py _nvcomp_codec and NvcompDecoder._nvcomp; _blosc_gpu._nvcomp_group.
    "nvCOMP codec": ("obj = nvcomp.Codec(algorithm='Zstd', device_id=0, "
                     "cuda_stream=cupy.cuda.get_current_stream().ptr, "
                     "bitstream_kind=nvcomp.BitstreamKind.RAW)", (
        "get_required_decompression_alignment", "compression_config",
        "decompression_config", "decode")),
    # ``codec.decode(srcs, out=dsts, decompression_config=...).buffer_sizes``, as gds_zarr
    # calls it (a zstd frame from numcodecs, which records its content size).
    "nvCOMP batch decode result": (
        "raw = numpy.frombuffer(numcodecs.Zstd().encode(bytes(64)), numpy.uint8)\n"
        "s = cupy.cuda.get_current_stream().ptr\n"
        "c = nvcomp.Codec(algorithm='Zstd', device_id=0, cuda_stream=s, "
        "bitstream_kind=nvcomp.BitstreamKind.RAW)\n"
        "src, dst = cupy.asarray(raw), cupy.empty(64, cupy.uint8)\n"
        "obj = c.decode(nvcomp.as_arrays(src, [0], [raw.size], cuda_stream=s), "
        "out=nvcomp.as_arrays(dst, [0], [64], cuda_stream=s), decompression_config=None)",
        ("buffer_sizes",)),
}

#: Attributes a device array must NOT have: store/_store.py and io/_remote_gpu.py tell device
#: arrays from host ones by ``not hasattr(array, "__array_interface__")``.
OBJECT_LACKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "device array": ("obj = cupy.zeros(2)", ("__array_interface__",)),
}


# ---------------------------------------------------------------- reading the source


@dataclass
class Use:
    """One use of a library name: ``module`` as imported, then ``attrs`` read from it."""

    module: str
    attrs: tuple[str, ...]
    where: str
    from_import: bool = False
    #: (positional count, keyword names) of a call on it, when it has no ``*``/``**``.
    call: tuple[int, tuple[str, ...]] | None = None

    @property
    def name(self) -> str:
        return ".".join((self.module, *self.attrs))


def _interesting(dotted: str) -> bool:
    return any(dotted == r or dotted.startswith(r + ".") for r in (*ROOTS, NVML_ROOT))


Binding = tuple[str, tuple[str, ...], bool]  # module, attrs, from an ``from ... import``


@dataclass
class _Scope:
    node: ast.AST
    parent: _Scope | None
    imports: dict[str, Binding] = field(default_factory=dict)
    aliases: dict[str, ast.expr] = field(default_factory=dict)
    local: set[str] = field(default_factory=set)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _own_nodes(scope_node: ast.AST) -> list[ast.AST]:
    """The nodes of a scope, nested scopes' bodies left out (the nested def is kept: it binds
    its name here)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(scope_node))
    while todo:
        n = todo.pop()
        out.append(n)
        if not isinstance(n, _SCOPES):
            todo.extend(ast.iter_child_nodes(n))
    return out


def _targets(t: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]


def _bind(scope: _Scope) -> None:
    """Record what the scope's own statements bind: imports, aliases, other locals."""
    node = scope.node
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        a = node.args
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                scope.local.add(arg.arg)
    assigned: dict[str, list[ast.expr | None]] = {}
    for n in _own_nodes(node):
        if isinstance(n, ast.Import):
            for al in n.names:
                if al.asname:
                    scope.imports[al.asname] = (al.name, (), False)
                else:
                    top = al.name.split(".")[0]
                    scope.imports[top] = (top, (), False)
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            for al in n.names:
                scope.imports[al.asname or al.name] = (n.module, (al.name,), True)
        elif isinstance(n, ast.Assign):
            for t in n.targets:
                for name in _targets(t):
                    assigned.setdefault(name, []).append(n.value if isinstance(t, ast.Name)
                                                         else None)
        elif isinstance(n, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
            value = n.value if isinstance(n, ast.AnnAssign | ast.NamedExpr) else None
            for name in _targets(n.target):
                assigned.setdefault(name, []).append(value)
        elif isinstance(n, ast.For | ast.AsyncFor | ast.comprehension):
            for name in _targets(n.target):
                assigned.setdefault(name, []).append(None)
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            for name in _targets(n.optional_vars):
                assigned.setdefault(name, []).append(None)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            assigned.setdefault(n.name, []).append(None)
        elif isinstance(n, _SCOPES) and not isinstance(n, ast.Lambda):
            assigned.setdefault(n.name, []).append(None)
    for name, values in assigned.items():
        if len(values) == 1 and values[0] is not None:
            scope.aliases[name] = values[0]  # resolved lazily: a module alias, or a local
        else:
            scope.local.add(name)


class _Scanner(ast.NodeVisitor):
    """Collects :class:`Use` records from one file."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.uses: list[Use] = []
        self.scope: _Scope | None = None

    # -- scopes

    def _enter(self, node: ast.AST) -> None:
        self.scope = _Scope(node, self.scope)
        _bind(self.scope)
        # The imports are uses too: ``import kvikio.defaults`` binds ``kvikio`` but needs the
        # submodule; ``from kvikio.remote_file import RemoteFile`` needs the name.
        for n in _own_nodes(node):
            if isinstance(n, ast.Import):
                self.uses += [Use(al.name, (), self._where(n)) for al in n.names
                              if _interesting(al.name)]
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                self.uses += [Use(n.module, (al.name,), self._where(n), True) for al in n.names
                              if _interesting(f"{n.module}.{al.name}")]

    def _where(self, node: ast.AST) -> str:
        return f"{self.label}:{getattr(node, 'lineno', 0)}"

    def visit_Module(self, node: ast.Module) -> None:
        self._enter(node)
        self.generic_visit(node)

    def _visit_scope(self, node: ast.AST) -> None:
        parent = self.scope
        self._enter(node)
        self.generic_visit(node)
        self.scope = parent

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _visit_scope

    # -- resolution

    def resolve_name(self, name: str, scope: _Scope | None = None,
                     depth: int = 0) -> Binding | None:
        """What ``name`` is bound to where it is used, if a module (or a name in one)."""
        s = scope or self.scope
        first = s
        while s is not None:
            # A class body's names are not visible in the functions it holds.
            if isinstance(s.node, ast.ClassDef) and s is not first:
                s = s.parent
                continue
            if name in s.imports:
                return s.imports[name]
            if name in s.aliases:
                return self.resolve_expr(s.aliases[name], s, depth + 1) if depth < 8 else None
            if name in s.local:
                return ("cupy", (), False) if name in ARRAY_MODULE_NAMES else None
            s = s.parent
        return ("cupy", (), False) if name in ARRAY_MODULE_NAMES else None

    def resolve_expr(self, node: ast.expr, scope: _Scope | None = None,
                     depth: int = 0) -> Binding | None:
        """The module binding an attribute chain starts from, attrs appended."""
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        attrs.reverse()
        if isinstance(node, ast.Name):
            base = self.resolve_name(node.id, scope, depth)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ARRAY_MODULE_CALLS:
            base = ("cupy", (), False)
        else:
            return None
        if base is None:
            return None
        return base[0], (*base[1], *attrs), base[2]

    def _use(self, node: ast.expr, extra: tuple[str, ...] = (),
             call: tuple[int, tuple[str, ...]] | None = None) -> None:
        b = self.resolve_expr(node)
        if b is None:
            return
        module, attrs, from_import = b
        use = Use(module, (*attrs, *extra), self._where(node), from_import, call)
        if _interesting(use.name):
            self.uses.append(use)

    # -- uses

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._use(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            self._use(node.args[0], (node.args[1].value,))
        elif isinstance(f, ast.Attribute | ast.Name) and not any(
                isinstance(a, ast.Starred) for a in node.args) and all(
                k.arg is not None for k in node.keywords):
            self._use(f, call=(len(node.args), tuple(str(k.arg) for k in node.keywords)))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # String annotations (``"cp.ndarray"``) name the library too.
        if isinstance(node.value, str) and node.value.replace(".", "").isidentifier() \
                and "." in node.value:
            try:
                expr = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return
            if isinstance(expr, ast.Attribute):
                b = self.resolve_expr(expr)
                if b is not None and _interesting(".".join((b[0], *b[1]))):
                    self.uses.append(Use(b[0], b[1], self._where(node), b[2]))


def scan_source(source: str, label: str) -> list[Use]:
    """Every library name used in ``source`` (a module's text)."""
    scanner = _Scanner(label)
    scanner.visit(ast.parse(source))
    return scanner.uses


def _zarr_gpu_buffer() -> Path:
    """zarr's GPU buffer module, found without importing zarr (which would import cupy)."""
    spec = importlib.util.find_spec("zarr")
    assert spec is not None and spec.submodule_search_locations, "zarr is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "core" / "buffer" / "gpu.py"
    assert path.is_file(), f"zarr's GPU buffer module moved: {path} is missing"
    return path


def scanned_files() -> list[tuple[Path, str]]:
    files = [(p, str(p.relative_to(REPO))) for p in sorted((REPO / "gds_zarr").rglob("*.py"))]
    return [*files, (_zarr_gpu_buffer(), "zarr/core/buffer/gpu.py")]


def all_uses() -> list[Use]:
    return [u for path, label in scanned_files()
            for u in scan_source(path.read_text(encoding="utf-8"), label)]


# ---------------------------------------------------------------- checking (child process)


def _resolve(module: str, attrs: list[str], from_import: bool) -> Any:
    obj = importlib.import_module(module)
    for i, a in enumerate(attrs):
        try:
            obj = getattr(obj, a)
        except AttributeError:
            if not (from_import and i == 0):
                raise
            obj = importlib.import_module(f"{module}.{a}")  # ``from pkg import submodule``
    return obj


def _make(code: str, tmp: str) -> Any:
    import numpy

    ns: dict[str, Any] = {"numpy": numpy, "tmp": tmp}
    for mod in ("cupy", "cupyx", "kvikio", "numcodecs"):
        try:
            ns[mod] = importlib.import_module(mod)
        except ImportError:
            pass
    try:
        ns["nvcomp"] = importlib.import_module("nvidia.nvcomp")
    except ImportError:
        pass
    exec(code, ns)
    return ns["obj"]


def _nvml_entry_points(module: Any) -> dict[str, set[str]]:
    """For each function of the pynvml binding, the C entry points it calls (its own
    ``_nvmlGetFunctionPointer("...")`` names and those of the binding functions it calls)."""
    tree = ast.parse(inspect.getsource(module))
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        direct[node.name], calls[node.name] = set(), set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                if sub.func.id == "_nvmlGetFunctionPointer" and sub.args and isinstance(
                        sub.args[0], ast.Constant):
                    direct[node.name].add(str(sub.args[0].value))
                else:
                    calls[node.name].add(sub.func.id)
    out: dict[str, set[str]] = {}
    for name in direct:
        seen, todo, eps = set(), [name], set()
        while todo:
            f = todo.pop()
            if f in seen or f not in direct:
                continue
            seen.add(f)
            eps |= direct[f]
            todo += calls[f]
        out[name] = eps
    return out


def check_nvml(uses: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``pynvml.`` uses: each name exists in the binding, and the C entry points it calls
    exist in the emulated NVML library. Without nvidia-ml-py: ``{"skipped": why}``."""
    try:
        pynvml = importlib.import_module(NVML_ROOT)
    except ImportError as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    from _emucuda import nvml as emulated

    if not getattr(pynvml, "__emulated__", False):
        return {"wrong": f"pynvml is not the emulated one ({pynvml.__file__})"}
    entry_points = _nvml_entry_points(pynvml)
    missing: dict[str, str] = {}
    for u in uses:
        name = ".".join((u["module"], *u["attrs"]))
        if not u["attrs"]:
            continue
        if not hasattr(pynvml, u["attrs"][0]):
            missing[name] = "not in the pynvml binding"
            continue
        lacking = sorted(entry_points.get(u["attrs"][0], set()) - emulated.ENTRY_POINTS)
        if lacking:
            missing[name] = f"calls {', '.join(lacking)}, which the emulated NVML lacks"
    return {"names": sorted({".".join((u["module"], *u["attrs"])) for u in uses}),
            "missing": missing}


def check(uses: list[dict[str, Any]]) -> dict[str, Any]:
    """Resolve every use on the emulated modules; make the objects and read their attributes."""
    nvml_uses = [u for u in uses if u["module"].split(".")[0] == NVML_ROOT]
    uses = [u for u in uses if u["module"].split(".")[0] != NVML_ROOT]
    roots: dict[str, str] = {}
    for root in ROOTS:
        try:
            mod = importlib.import_module(root)
        except Exception as e:  # noqa: BLE001 - a stand-in that is missing or broken
            roots[root] = f"{type(e).__name__}: {e}"
            continue
        if mod.__file__ is None:  # a folder without __init__.py: the stand-in is not there
            roots[root] = f"a namespace package with no module ({list(mod.__path__)})"
        elif not str(Path(mod.__file__).resolve()).startswith(str(EMULATOR)):
            roots[root] = f"the real package ({mod.__file__})"
        else:
            roots[root] = ""
    # Every module gds_zarr imports first, as a process running it has.
    for u in uses:
        if not u["attrs"] and not u["from_import"]:
            try:
                importlib.import_module(u["module"])
            except Exception:  # noqa: BLE001 - reported below, per name
                pass
    names: dict[str, str] = {}
    calls: list[str] = []
    for u in uses:
        name = ".".join((u["module"], *u["attrs"]))
        try:
            obj = _resolve(u["module"], u["attrs"], u["from_import"])
        except Exception as e:  # noqa: BLE001 - AttributeError, ImportError, a broken stand-in
            names.setdefault(name, f"{type(e).__name__}: {e}")
            continue
        names.setdefault(name, "")
        if u["call"] is not None:
            npos, kws = u["call"]
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue  # no signature to bind to (a C function): nothing to check
            try:
                sig.bind(*range(npos), **dict.fromkeys(kws))
            except TypeError as e:
                args = ", ".join(["_"] * npos + [f"{k}=_" for k in kws])
                calls.append(f"{u['where']}: {name}({args}) does not bind to the emulated "
                             f"{name}{sig}: {e}")
    objects: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, "data.bin")
        with open(tmp, "wb") as f:
            f.write(bytes(range(256)) * 16)
        for label, (code, attrs) in OBJECT_ATTRIBUTES.items():
            try:
                obj = _make(code, tmp)
            except Exception as e:  # noqa: BLE001 - reported as every attribute missing
                objects.append(f"{label}: cannot be made on the emulated device ({code!r}): "
                               f"{type(e).__name__}: {e}")
                continue
            for a in attrs:
                if not hasattr(obj, a):
                    objects.append(f"{label} ({type(obj).__module__}.{type(obj).__qualname__})"
                                   f": no attribute {a}")
        for label, (code, attrs) in OBJECT_LACKS.items():
            try:
                obj = _make(code, tmp)
            except Exception as e:  # noqa: BLE001
                objects.append(f"{label}: cannot be made: {type(e).__name__}: {e}")
                continue
            objects += [f"{label}: has {a}, which gds_zarr reads as 'host memory'"
                        for a in attrs if hasattr(obj, a)]
    return {"roots": roots, "names": names, "calls": calls, "objects": objects,
            "nvml": check_nvml(nvml_uses)}


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    return all_uses()


@pytest.fixture(scope="module")
def result(uses: list[Use]) -> dict[str, Any]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != EMULATOR]
    env["PYTHONPATH"] = os.pathsep.join([str(EMULATOR), *paths])
    payload = json.dumps([u.__dict__ for u in uses])
    proc = subprocess.run([sys.executable, __file__, "--check"], input=payload,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"the check on the emulated device failed:\n{proc.stderr}"
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return out


def _where(uses: list[Use], name: str) -> str:
    places = sorted({u.where for u in uses if u.name == name})
    return ", ".join(places[:4]) + (f" (+{len(places) - 4} more)" if len(places) > 4 else "")


def test_the_scan_finds_what_gds_zarr_uses(uses: list[Use]) -> None:
    """The scan sees each way gds_zarr names the libraries (a scanner finding nothing would
    pass every other test)."""
    names = {u.name for u in uses}
    expected = {
        "cupy.cuda.get_current_stream",                   # import cupy (function-local)
        "cupy.cuda.runtime.memcpyAsync",                  # import cupy as cp
        "cupyx.empty_pinned",
        "cupy.stack",                                     # xp = _xp(device); xp.stack
        "cupy.lib.stride_tricks.as_strided",
        "kvikio.defaults.is_compat_mode_preferred",       # import kvikio.defaults
        "kvikio.cufile_driver.libcufile_version",
        "kvikio.remote_file.RemoteFile.open_http",        # from kvikio.remote_file import ...
        "kvikio.remote_file.RemoteFile.open_s3_public",   # hasattr(RemoteFile, "...")
        "kvikio.remote_file.is_remote_file_available",
        "nvidia.nvcomp.BitstreamKind.RAW",                # from nvidia import nvcomp
        "nvidia.nvcomp.set_device_allocator",
        "cupy.concatenate",                               # zarr's GPU buffers
        "cupy.frombuffer",
    }
    assert not expected - names, f"the scan missed {sorted(expected - names)}"
    # _info.py binds ``cupy`` to a LibraryInfo in another function: not the module.
    assert "cupy.importable" not in names


def test_the_scan_follows_scopes() -> None:
    """Imports count in their own scope (and nested ones), locals shadow them."""
    src = (
        "import numpy as np\n"
        "def f():\n"
        "    import cupy as cp\n"
        "    s = cp.cuda.get_current_stream()\n"
        "    return s.ptr, cp.asarray(np.zeros(1), dtype=None)\n"
        "def g():\n"
        "    cp = object()\n"
        "    return cp.not_a_module\n"
        "def h():\n"
        "    from nvidia import nvcomp\n"
        "    return getattr(nvcomp, 'Codec')\n"
    )
    found = {(u.name, u.call) for u in scan_source(src, "x.py")}
    assert ("cupy.asarray", (1, ("dtype",))) in found
    assert ("nvidia.nvcomp.Codec", None) in found
    assert ("cupy.cuda.get_current_stream", (0, ())) in found
    assert not any("not_a_module" in n for n, _ in found)


def test_gpu_libraries_resolve_to_the_emulator(result: dict[str, Any]) -> None:
    """With tests/emulated_gpu first on PYTHONPATH every library is the stand-in (an empty
    ``nvidia/nvcomp`` folder would let the real nvCOMP win)."""
    wrong = {root: why for root, why in result["roots"].items() if why}
    assert not wrong, "not the emulated module:\n" + "\n".join(
        f"{root}: {why}" for root, why in sorted(wrong.items()))


def test_every_name_gds_zarr_uses_exists_on_the_emulator(result: dict[str, Any],
                                                         uses: list[Use]) -> None:
    """Each ``cupy.``/``cupyx.``/``kvikio.``/``nvcomp.`` name in gds_zarr and zarr's GPU
    buffers resolves on the emulated modules."""
    missing = {n: why for n, why in result["names"].items() if why}
    assert not missing, f"{len(missing)} names the emulator lacks:\n" + "\n".join(
        f"{n}  [{_where(uses, n)}]: {why}" for n, why in sorted(missing.items()))


def test_calls_bind_to_the_emulated_signatures(result: dict[str, Any]) -> None:
    """Each call gds_zarr makes (its positional count and keyword names) fits the emulated
    callable's parameters."""
    assert not result["calls"], f"{len(result['calls'])} calls that would raise TypeError:\n" \
        + "\n".join(sorted(result["calls"]))


def test_returned_objects_have_what_gds_zarr_uses(result: dict[str, Any]) -> None:
    """Arrays, streams, devices, memory pointers, kvikio handles and futures, nvCOMP codecs and
    results made by the emulator have the attributes in :data:`OBJECT_ATTRIBUTES`."""
    assert not result["objects"], f"{len(result['objects'])} object attributes missing:\n" \
        + "\n".join(result["objects"])


def test_every_nvml_call_gds_zarr_makes_is_in_the_emulated_library(
        result: dict[str, Any], uses: list[Use]) -> None:
    """``gds-zarr info`` asks NVML about the driver and device 0 (_info.py): every ``pynvml``
    function it calls reaches only entry points the emulated libnvidia-ml has."""
    assert any(u.module == NVML_ROOT for u in uses), "the scan found no pynvml use in gds_zarr"
    nvml = result["nvml"]
    if "skipped" in nvml:
        pytest.skip(f"pynvml is not importable here (nvidia-ml-py): {nvml['skipped']}")
    assert "wrong" not in nvml, nvml.get("wrong")
    assert not nvml["missing"], "\n".join(
        f"{n}  [{_where(uses, n)}]: {why}" for n, why in sorted(nvml["missing"].items()))


if __name__ == "__main__" and sys.argv[1:2] == ["--check"]:
    print(json.dumps(check(json.loads(sys.stdin.read()))))
