"""CUDA C++ kernels of the emulated CUDA device: compiled for the host with g++, run over a grid.

:func:`compile_module` turns CUDA C++ source (what ``cupy.RawKernel`` / ``cupy.RawModule`` get)
into a :class:`Module`. :meth:`Function.prepare` checks a launch as ``cuLaunchKernel`` and
CuPy's argument packing do when the launch is issued; :meth:`Launch.run` runs every block and
every thread synchronously on the calling thread, when the stream's turn comes
(:meth:`Function.launch` does both). ``kernel_runtime.h`` beside this file is the CUDA dialect on
the host: built-in indices, ``__shared__`` (static and ``extern``), ``__syncthreads`` (and
``_count``/``_and``/``_or``), atomics, ``__ldg``, ``min``/``max``, bit and float intrinsics,
``assert``, ``printf``.

Strict where the hardware is strict:

- Launch configurations past CUDA's limits raise :class:`CUDADriverError`
  ``CUDA_ERROR_INVALID_VALUE``, as ``cuLaunchKernel`` (which CuPy calls) does; more threads than
  ``__launch_bounds__`` ``CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES``.
- Device addresses are host addresses with guard pages around every allocation
  (``memory.py``): an access outside an allocation faults, the runtime's signal handler jumps back
  to the launch driver, and :meth:`Launch.run` raises :class:`~errors.Fault` naming the kernel,
  the address and what lies there, the block and thread, and the source line. A misaligned
  access (``-fsanitize=alignment``), a device-side ``assert``, ``__trap()``, an integer division
  by zero and a thread's stack running over do too. Dynamic shared memory ends at a guard page
  (rounded up to 16 bytes); static shared memory is spoiled (0xFF) at each block's start.
- Pointer arguments must lie in a live allocation of the launch's device (or pinned memory, or be
  NULL, or one past the end) when the kernel runs; scalar arguments must be numpy scalars of the
  parameter's size and kind when the launch is issued (else ``Fault`` / ``TypeError``).
- Blocks run in a pseudo-random order, threads in a shuffled order between barriers (seeded:
  env ``EMULATED_GPU_SEED``, default 0), so code relying on an order CUDA does not promise fails.
- What cannot be emulated does not compile: warp-level intrinsics (``__shfl*``, ``__ballot*``,
  ``__syncwarp`` ...), inline PTX, CUDA headers (``cuda_fp16.h``, cooperative groups).

A kernel that may reach ``__syncthreads`` (found by a conservative scan of the preprocessed
source) runs its block's threads as fibers that switch at the barrier; any other kernel runs
its threads in a plain loop, and refuses a barrier it reaches after all.

Compiled modules are cached on disk (env ``EMULATED_GPU_CACHE``, default
``~/.cache/gds_zarr_emulated_gpu``) and in the process.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import hashlib
import mmap
import operator
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import memory
from .errors import Fault

__all__ = ["CUDADriverError", "CompileError", "Function", "Launch", "Module", "Param",
           "Pointer", "compile_module", "driver_error"]

#: Bump when the generated code or the way it is built changes (part of the cache key).
RUNTIME_VERSION = "1"
_HEADER = Path(__file__).with_name("kernel_runtime.h")
_ABI_VERSION = 4
_SOURCE_NAME = "kernel.cu"

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
MAX_SHARED_PER_BLOCK = 48 * 1024  # without cudaFuncAttributeMaxDynamicSharedMemorySize
_STACK_KIB = 256

_SEED = int(os.environ.get("EMULATED_GPU_SEED", "0"))


# ---------------------------------------------------------------------------------- errors


#: CUresult values this module raises, with the driver's names and messages.
DRIVER_ERRORS: dict[int, tuple[str, str]] = {
    1: ("CUDA_ERROR_INVALID_VALUE", "invalid argument"),
    2: ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
    500: ("CUDA_ERROR_NOT_FOUND", "named symbol not found"),
    701: ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"),
}


class CUDADriverError(RuntimeError):
    """A CUDA driver API error, as ``cupy_backends.cuda.api.driver.CUDADriverError``: built from
    the ``CUresult`` alone, message ``"<name>: <cuGetErrorString text>"``; the emulator adds what
    it saw with :func:`driver_error`. (CuPy launches kernels through the driver API, so launch
    errors are driver errors, not ``CUDARuntimeError``.)"""

    def __init__(self, status: int) -> None:
        self.status = int(status)
        name, text = DRIVER_ERRORS.get(self.status, (f"CUDA_ERROR_{self.status}", "unknown error"))
        super().__init__(f"{name}: {text}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.status,))


def driver_error(status: int, detail: str = "") -> CUDADriverError:
    """``CUDADriverError(status)`` whose message also says what the emulator saw."""
    e = CUDADriverError(status)
    if detail:
        e.args = (f"{e.args[0]} [emulated device: {detail}]",)
    return e


class CompileError(Exception):
    """Kernel source that does not compile, shaped like ``cupy.cuda.compiler.CompileException``
    (``str(e)`` is the compiler's log; ``source``, ``name``, ``options`` as given)."""

    def __init__(self, msg: str, source: str, name: str | None, options: tuple[str, ...],
                 backend: str = "g++ (emulated device)") -> None:
        self._msg = msg
        self.source = source
        self.name = name
        self.options = options
        self.backend = backend
        super().__init__()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self._msg, self.source, self.name, self.options, self.backend))

    def __str__(self) -> str:
        return self._msg

    def get_message(self) -> str:
        return self._msg


# ---------------------------------------------------------------------------------- ABI (ctypes)


class _Fault(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32), ("sig", ctypes.c_int32), ("code", ctypes.c_int32),
        ("access", ctypes.c_int32), ("addr", ctypes.c_uint64), ("pc_offset", ctypes.c_uint64),
        ("align", ctypes.c_uint64), ("block", ctypes.c_uint32 * 3),
        ("thread", ctypes.c_uint32 * 3), ("shared_lo", ctypes.c_uint64),
        ("shared_hi", ctypes.c_uint64), ("stacks_lo", ctypes.c_uint64),
        ("stacks_hi", ctypes.c_uint64), ("sp", ctypes.c_uint64),
        ("message", ctypes.c_char * 512),
    ]


class _Launch(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint32 * 3), ("block", ctypes.c_uint32 * 3),
        ("shared_mem", ctypes.c_uint64), ("seed", ctypes.c_uint64),
        ("args", ctypes.POINTER(ctypes.c_void_p)),
    ]


class _ParamDesc(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("align", ctypes.c_uint32), ("kind", ctypes.c_uint32)]


class _KernelDesc(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p), ("run", ctypes.c_void_p), ("nparams", ctypes.c_uint32),
        ("params", ctypes.POINTER(_ParamDesc)), ("barrier", ctypes.c_uint32),
        ("max_threads", ctypes.c_uint32),
    ]


_FAULT_SIGNAL, _FAULT_MISALIGNED, _FAULT_MESSAGE = 1, 2, 3
_KIND_POINTER, _KIND_FLOAT, _KIND_INTEGRAL, _KIND_OTHER = 1, 2, 3, 4
_SI_KERNEL = 0x80  # si_code of a fault on a non-canonical address (x86-64): no address given


# ---------------------------------------------------------------------------------- public types


class Pointer:
    """A pointer kernel argument: a device (or pinned host) address; 0 is NULL."""

    __slots__ = ("address",)

    def __init__(self, address: int) -> None:
        self.address = operator.index(address)

    def __repr__(self) -> str:
        return f"Pointer(0x{self.address:x})"


@dataclass(frozen=True)
class Param:
    """One kernel parameter.

    Attributes
    ----------
    index
        Position in the signature.
    ctype
        Its C type as the source spells it (``__restrict__`` and the name dropped).
    is_pointer
        A pointer parameter (takes a :class:`Pointer`).
    sizeof
        Its size in bytes (from the compiler).
    kind
        ``"pointer"``, ``"float"``, ``"integral"`` (integers, bool, enums) or ``"other"``
        (structs passed by value).
    """

    index: int
    ctype: str
    is_pointer: bool
    sizeof: int
    kind: str

    def __str__(self) -> str:
        return f"parameter {self.index} ({self.ctype})"


_KIND_NAMES = {_KIND_POINTER: "pointer", _KIND_FLOAT: "float", _KIND_INTEGRAL: "integral",
               _KIND_OTHER: "other"}


# ---------------------------------------------------------------------------------- source analysis

_IDENT = re.compile(r"[A-Za-z_]\w*")
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")
_BARRIERS = frozenset({"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                       "__syncthreads_or"})
_ATTRIBUTE_MACROS = frozenset({"__launch_bounds__", "__attribute__", "__align__", "__maxnreg__",
                               "__cluster_dims__", "__declspec", "alignas"})
_NOT_FUNCTIONS = frozenset({"if", "for", "while", "switch", "catch", "return", "sizeof",
                            "alignof", "decltype", "__attribute__", "noexcept", "defined"})
_TYPE_WORDS = frozenset({"unsigned", "signed", "int", "long", "short", "char", "float", "double",
                         "bool", "void", "const", "volatile", "__restrict__", "__restrict",
                         "struct", "class", "enum", "size_t"})


def _blank(code: str) -> str:
    """``code`` with comments and the insides of string and character literals turned into
    spaces (newlines kept), so that offsets and line numbers stay those of ``code``."""
    out = list(code)
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == "/" and i + 1 < n and code[i + 1] == "/":
            j = code.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif c == "/" and i + 1 < n and code[i + 1] == "*":
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [ch if ch == "\n" else " " for ch in code[i:j]]
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c and code[j] != "\n":
                j += 2 if code[j] == "\\" else 1
            out[i + 1:min(j, n)] = " " * (min(j, n) - i - 1)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _match_close(text: str, i: int) -> int:
    """Index of the bracket closing the one at ``text[i]`` (``(``, ``[``, ``{`` or ``<``)."""
    pairs = {"(": ")", "[": "]", "{": "}", "<": ">"}
    opening = text[i]
    closing = pairs[opening]
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == opening:
            depth += 1
        elif ch == closing:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {opening!r} at offset {i}")


def _match_open(text: str, j: int) -> int:
    """Index of the ``(`` that the ``)`` at ``text[j]`` closes."""
    depth = 0
    for i in range(j, -1, -1):
        ch = text[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced ')' at offset {j}")


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside any brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _param_type(text: str) -> str:
    """The C type of one parameter declaration (its name, default and ``__restrict__`` gone)."""
    text = text.split("=", 1)[0]
    text = re.sub(r"__attribute__\s*\(\(.*?\)\)|__align__\s*\([^)]*\)|__grid_constant__", " ",
                  text)
    text = re.sub(r"\b(__restrict__|__restrict|restrict)\b", " ", text)
    text = " ".join(text.split())
    m = re.match(r"^(.*?)\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$", text)
    if m and m.group(1).strip() and m.group(2) not in _TYPE_WORDS \
            and not m.group(1).rstrip().endswith("::"):
        text = m.group(1).strip() + ("*" if m.group(3).strip() else "")
    return re.sub(r"\s+([*&])", r"\1", text).strip()


@dataclass
class _KernelDecl:
    name: str
    c_linkage: bool
    template: bool
    param_types: list[str]
    launch_bounds: str | None


def _extern_c_ranges(code: str, blank: str) -> list[tuple[int, int]]:
    """Offsets of the bodies of ``extern "C" { ... }`` blocks."""
    out = []
    for m in re.finditer(r'\bextern\s*"C"\s*\{', code):
        if not blank[m.start():].startswith("extern"):
            continue  # inside a comment
        brace = m.end() - 1
        out.append((brace, _match_close(blank, brace)))
    return out


def _find_kernels(code: str, blank: str) -> list[_KernelDecl]:
    """The ``__global__`` functions defined in the source (declarations add C linkage only)."""
    blocks = _extern_c_ranges(code, blank)
    found: dict[str, _KernelDecl] = {}
    c_names: set[str] = set()
    for m in re.finditer(r"\b__global__\b", blank):
        start = max(blank.rfind(ch, 0, m.start()) for ch in ";{}") + 1
        prefix, prefix_code = blank[start:m.start()], code[start:m.start()]
        bounds = None
        pos = m.end()
        name = None
        while True:
            mm = _CALL.search(blank, pos)
            if mm is None or re.search(r"[;{}]", blank[pos:mm.start()]):
                break
            close = _match_close(blank, mm.end() - 1)
            if mm.group(1) in _ATTRIBUTE_MACROS:
                if mm.group(1) == "__launch_bounds__":
                    bounds = blank[mm.end():close]
                pos = close + 1
                continue
            name, params_at, params_end = mm.group(1), mm.end() - 1, close
            break
        if name is None:
            continue
        lb = re.search(r"__launch_bounds__\s*\(", prefix)
        if bounds is None and lb:
            bounds = prefix[lb.end():_match_close(prefix, lb.end() - 1)]
        c_linkage = bool(re.search(r'\bextern\s*"C"', prefix_code)) or any(
            a < m.start() < b for a, b in blocks)
        if c_linkage:
            c_names.add(name)
        after = blank[params_end + 1:].lstrip()
        after = re.sub(r"^(__attribute__\s*\(\(.*?\)\)\s*|noexcept\s*)*", "", after)
        if not after.startswith("{"):
            continue  # a declaration
        params = [_param_type(p) for p in _split_top(blank[params_at + 1:params_end])]
        if params == ["void"]:
            params = []
        first = _split_top(bounds)[0] if bounds and _split_top(bounds) else None
        found[name] = _KernelDecl(name, c_linkage, bool(re.search(r"\btemplate\b", prefix)),
                                  params, first)
    for name in c_names & found.keys():
        found[name].c_linkage = True
    return list(found.values())


def _skip_space_back(text: str, j: int) -> int:
    while j >= 0 and text[j].isspace():
        j -= 1
    return j


def _name_before_body(blank: str, pos: int) -> str | None:
    """The function whose body the ``{`` at ``pos`` opens, or None (a class, namespace, block,
    initializer list). Looks back only as far as the signature (linear overall)."""
    j = _skip_space_back(blank, pos - 1)
    stripped = True
    while stripped:  # trailing qualifiers: ``) const {``, ``) noexcept {``
        stripped = False
        for q in ("const", "noexcept", "override", "final", "volatile"):
            if blank.endswith(q, 0, j + 1) and (j + 1 == len(q)
                                                or not _is_word(blank[j - len(q)])):
                j = _skip_space_back(blank, j - len(q))
                stripped = True
    if j < 0 or blank[j] != ")":
        return None
    try:
        k = _match_open(blank, j)
    except ValueError:
        return None
    end = _skip_space_back(blank, k - 1)
    start = end
    while start >= 0 and _is_word(blank[start]):
        start -= 1
    name = blank[start + 1:end + 1]
    if not name or name[0].isdigit() or name in _NOT_FUNCTIONS:
        return None
    return name


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _function_bodies(blank: str) -> dict[str, set[str]]:
    """Identifiers used in the body of each function (and of each function-like macro), by name.

    Crude (no overloads, no scopes): enough to over-approximate which kernels may reach
    ``__syncthreads``; the runtime refuses a barrier in a kernel run without fibers anyway.
    """
    bodies: dict[str, set[str]] = {}
    spans: list[tuple[int, int]] = []
    stack: list[tuple[str | None, int]] = []
    in_function = 0
    for m in re.finditer(r"[{}]", blank):
        pos = m.start()
        if m.group() == "{":
            name = None if in_function else _name_before_body(blank, pos)
            stack.append((name, pos))
            in_function += name is not None
        elif stack:
            name, start = stack.pop()
            if name is not None:
                in_function -= 1
                bodies.setdefault(name, set()).update(_IDENT.findall(blank, start, pos))
                spans.append((start, pos))
    for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)((?:[^\n]*\\\n)*[^\n]*)", blank,
                         re.M):
        bodies.setdefault(m.group(1), set()).update(_IDENT.findall(m.group(2)))
        spans.append((m.start(), m.end()))
    # A barrier in a body this cannot name (an operator(), a member of a local class): every
    # kernel may reach it.
    spans.sort()
    starts = [a for a, _ in spans]
    for m in re.finditer(r"\b__syncthreads(?:_count|_and|_or)?\b", blank):
        i = bisect.bisect_right(starts, m.start()) - 1
        if i < 0 or not any(a <= m.start() < b for a, b in spans[max(0, i - 64):i + 1]):
            bodies.setdefault(_ANYWHERE, set()).add("__syncthreads")
    return bodies


_ANYWHERE = "<unattributed>"


def _barrier_names(bodies: dict[str, set[str]]) -> set[str] | None:
    """Every function or macro name that may reach a ``__syncthreads`` (a fixpoint); None when
    some barrier could not be placed in a function (then every kernel may reach one)."""
    if _ANYWHERE in bodies:
        return None
    reach = set(_BARRIERS)
    changed = True
    while changed:
        changed = False
        for name, ids in bodies.items():
            if name not in reach and not ids.isdisjoint(reach):
                reach.add(name)
                changed = True
    return reach


_EXTERN_SHARED = re.compile(
    r"\bextern\s+__shared__\s+(?P<type>[^;\[\]{}()]*?(?:__align__\s*\(\s*\w+\s*\)[^;\[\]{}()]*?)?)"
    r"\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;")


def _rewrite(code: str, blank: str) -> str:
    """The source as compiled: each ``extern __shared__ T name[];`` becomes a reference to this
    launch's dynamic shared memory, ``static __shared__`` plain ``__shared__`` (line numbers
    kept)."""
    out, last = [], 0
    for m in _EXTERN_SHARED.finditer(blank):
        ctype = re.sub(r"__align__\s*\([^)]*\)|__attribute__\s*\(\(.*?\)\)|\bstatic\b", " ",
                       m.group("type"))
        ctype = " ".join(ctype.split())
        name = m.group("name")
        repl = (f"{ctype}* const& {name} = reinterpret_cast<{ctype}* const&>"
                f"(::emucuda::dyn_shared);")
        out.append(code[last:m.start()])
        out.append(repl + "\n" * code[m.start():m.end()].count("\n"))
        last = m.end()
    out.append(code[last:])
    text = "".join(out)
    return re.sub(r"\bstatic(\s+)__shared__\b", r"\1__shared__", text)


# ---------------------------------------------------------------------------------- compiling


@functools.cache
def _compiler() -> tuple[str, str]:
    """The host C++ compiler and its identity (version and target), for the cache key."""
    cxx = shutil.which("g++")
    if cxx is None:
        raise CompileError("the emulated device compiles kernels with g++, and no g++ was found "
                           "on PATH", "", None, ())
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    target = subprocess.run([cxx, "-dumpmachine"], capture_output=True, text=True, check=False)
    return cxx, out.stdout.split("\n", 1)[0] + " " + target.stdout.strip()


def cache_dir() -> Path:
    """Where compiled modules are kept (env ``EMULATED_GPU_CACHE``)."""
    d = os.environ.get("EMULATED_GPU_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "gds_zarr_emulated_gpu"


def _map_options(options: Sequence[str]) -> tuple[list[str], str]:
    """g++ flags for the NVRTC/nvcc options CuPy users pass; the C++ standard to use.

    ``-D``/``-U``/``-I``/``-include`` and ``-std`` carry over (the standard is at least C++17, the
    runtime header needs it); ``-arch`` sets ``__CUDA_ARCH__``; every other option
    (``--use_fast_math``, ``-lineinfo``, ``-G``, ``--fmad`` ...) has no meaning here and is ignored.
    """
    flags: list[str] = []
    std = "c++17"
    it = iter(options)
    short = {"-D": "-D", "-U": "-U", "-I": "-I", "--define-macro": "-D",
             "--undefine-macro": "-U", "--include-path": "-I"}
    for raw in it:
        o = str(raw)
        if o in short:
            flags.append(short[o] + str(next(it, "")))
        elif o in ("-include", "--pre-include"):
            flags += ["-include", str(next(it, ""))]
        elif o.startswith(("--define-macro=", "--undefine-macro=", "--include-path=")):
            key, val = o.split("=", 1)
            flags.append(short[key] + val)
        elif o.startswith("--pre-include="):
            flags += ["-include", o.split("=", 1)[1]]
        elif o[:2] in ("-D", "-U", "-I") and len(o) > 2:
            flags.append(o)
        elif o.startswith(("-std=", "--std=")):
            v = o.split("=", 1)[1].replace("gnu++", "c++")
            if v in ("c++20", "c++2a", "c++23", "c++2b"):
                std = "c++20"
        elif o.startswith(("-arch=", "--gpu-architecture=", "-arch", "--gpu-name=")):
            m = re.search(r"(?:compute|sm)_(\d+)", o)
            if m:
                flags.append(f"-D__CUDA_ARCH__={int(m.group(1)) * 10}")
        elif o in ("-w", "--disable-warnings"):
            flags.append("-w")
    return flags, std


def _build_flags(std: str) -> list[str]:
    return [f"-std={std}", "-O2", "-g1", "-fPIC", "-shared", "-fvisibility=hidden",
            # CUDA code puns types freely (words over bytes); nvcc does not exploit it
            "-fno-strict-aliasing", "-fno-exceptions", "-fno-rtti",
            "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0", "-fcf-protection=none",
            # a misaligned access faults on a GPU: make it one here (handlers in the header)
            "-fsanitize=alignment", "-fno-sanitize-recover=alignment"]


_compile_locks: dict[str, threading.Lock] = {}
_compile_locks_lock = threading.Lock()


def _build(source: str, flags: list[str], kind: str, user_source: str, name: str | None,
           options: tuple[str, ...]) -> Path:
    """The shared library built from ``source`` (cached on disk, keyed by all that shapes it)."""
    cxx, ident = _compiler()
    key = hashlib.sha256("\0".join(
        [RUNTIME_VERSION, ident, source, *flags]).encode()).hexdigest()[:40]
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / f"gds_zarr_emulated_gpu-{os.getuid()}"
        d.mkdir(parents=True, exist_ok=True)
    out = d / f"{kind}-{key}.so"
    with _compile_locks_lock:
        lock = _compile_locks.setdefault(key, threading.Lock())
    with lock:
        if out.exists():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{key[:8]}-", dir=d))
        try:
            src = tmp / "module.cpp"
            src.write_text(source)
            so = tmp / "module.so"
            proc = subprocess.run([cxx, *flags, "-o", str(so), str(src)], capture_output=True,
                                  text=True, check=False, cwd=tmp)
            if proc.returncode != 0:
                log = proc.stderr.replace(str(src), "module.cpp")
                raise CompileError(f"kernel source does not compile for the emulated device:\n"
                                   f"{log}", user_source, name, options)
            # Another process may build the same module at once: each renames its own file.
            os.replace(so, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@functools.cache
def _runtime() -> int:
    """Address of the runtime library's API table (the process-wide signal handler)."""
    header = _HEADER.read_text()
    source = "#define EMUCUDA_RUNTIME_LIBRARY 1\n" + header
    cxx_flags = _build_flags("c++17")
    path = _build(source, cxx_flags, "runtime", source, "runtime", ())
    lib = ctypes.CDLL(str(path))
    lib.emucuda_rt_get.restype = ctypes.c_void_p
    api = lib.emucuda_rt_get()
    _loaded.append(lib)  # never unloaded: its handler may be installed
    return int(api)


_loaded: list[ctypes.CDLL] = []


class _Library:
    """One loaded kernel module (shared by every :class:`Module` of the same source)."""

    def __init__(self, path: Path, source: str, decls: dict[str, _KernelDecl],
                 exported: list[tuple[str, str]]) -> None:
        self.path = path
        self.source = source
        self.lines = source.splitlines()
        self._lines_at: dict[int, tuple[int, str] | None] = {}
        self.lock = threading.Lock()  # the module's grid state is global: one launch at a time
        self.cdll = ctypes.CDLL(str(path))
        _loaded.append(self.cdll)
        self.cdll.emucuda_module_init.argtypes = [ctypes.c_void_p]
        if self.cdll.emucuda_module_init(_runtime()) != _ABI_VERSION:
            raise RuntimeError(f"emulated device: {path} has another runtime ABI")
        self.cdll.emucuda_module_static_shared.restype = ctypes.c_uint64
        self.static_shared = int(self.cdll.emucuda_module_static_shared())
        self.cdll.emucuda_module_kernels.restype = ctypes.POINTER(_KernelDesc)
        count = ctypes.c_uint32()
        table = self.cdll.emucuda_module_kernels(ctypes.byref(count))
        launch = self.cdll.emucuda_module_launch
        launch.argtypes = [ctypes.c_uint32, ctypes.POINTER(_Launch), ctypes.POINTER(_Fault)]
        launch.restype = ctypes.c_int
        self.launch = launch
        self.kernels: dict[str, tuple[int, _KernelDesc, _KernelDecl | None]] = {}
        for i in range(count.value):
            desc = table[i]
            key = desc.name.decode()
            base = dict(exported).get(key)
            self.kernels[key] = (i, desc, decls.get(base) if base else None)
        self.n_kernels = count.value

    def source_line(self, pc_offset: int) -> tuple[int, str] | None:
        """(line, text) of the kernel source that the instruction at ``pc_offset`` came from."""
        if pc_offset not in self._lines_at:
            self._lines_at[pc_offset] = self._source_line(pc_offset)
        return self._lines_at[pc_offset]

    def _source_line(self, pc_offset: int) -> tuple[int, str] | None:
        tool = shutil.which("addr2line")
        if tool is None or pc_offset == 0:
            return None
        try:
            out = subprocess.run([tool, "-e", str(self.path), "-i", f"0x{pc_offset:x}"],
                                 capture_output=True, text=True, timeout=30, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for row in out.splitlines():  # innermost inlined frame first
            m = re.match(rf"^.*{re.escape(_SOURCE_NAME)}:(\d+)", row)
            if m:
                n = int(m.group(1))
                text = self.lines[n - 1].strip() if 0 < n <= len(self.lines) else ""
                return n, text
        return None


def _base_name(expr: str) -> str:
    """``ns::kernel<float, 4>`` -> ``kernel``."""
    head = expr.split("<", 1)[0].strip()
    return head.rsplit("::", 1)[-1].strip().lstrip("&").strip()


def compile_module(code: str, options: Sequence[str] = (),
                   name_expressions: Sequence[str] | None = None) -> Module:
    """Compile CUDA C++ ``code`` for the emulated device.

    Parameters
    ----------
    code
        The kernel source, as given to ``cupy.RawModule`` / ``cupy.RawKernel``.
    options
        NVRTC/nvcc options: ``-D``, ``-U``, ``-I``, ``-include``, ``-std`` and ``-arch`` carry
        over; the rest are ignored.
    name_expressions
        Kernels to instantiate and export by expression (``"kernel<float>"``); needed for
        template kernels and for kernels without ``extern "C"``, as with CuPy.

    Raises
    ------
    CompileError
        The source does not compile (g++'s log, lines of ``kernel.cu`` are lines of ``code``),
        uses inline PTX, or a name expression names no ``__global__`` function.
    """
    options = tuple(str(o) for o in options)
    names = tuple(name_expressions or ())
    key = (code, options, names)
    with _modules_lock:
        lib = _modules.get(key)
    if lib is None:
        lib = _load(code, options, names)
        with _modules_lock:
            lib = _modules.setdefault(key, lib)
    return Module(lib, code, options, names)


def _preprocess(code: str, flags: list[str], std: str) -> str | None:
    """``code`` after the preprocessor (CUDA's keywords kept), for finding the kernels: macros
    may declare them, ``#if`` remove them. None when it fails (the compile then reports why)."""
    cxx, _ = _compiler()
    defines = ["-D__CUDACC__=1", "-D__CUDACC_RTC__=1", "-D__CUDACC_VER_MAJOR__=12",
               "-D__CUDACC_VER_MINOR__=0"]
    if not any(f.startswith("-D__CUDA_ARCH__") for f in flags):
        defines.append("-D__CUDA_ARCH__=800")
    try:
        proc = subprocess.run([cxx, "-E", "-P", "-x", "c++", f"-std={std}", *defines, *flags,
                               "-"], input=code, capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _load(code: str, options: tuple[str, ...], names: tuple[str, ...]) -> _Library:
    blank = _blank(code)
    if re.search(r"\b(asm|__asm__|__asm)\b", blank):
        raise CompileError(f"{_SOURCE_NAME}: error: inline PTX assembly (asm) cannot run on the "
                           f"emulated device", code, None, options)
    flags, std = _map_options(options)
    pre = _preprocess(code, flags, std)
    seen, seen_blank = (pre, _blank(pre)) if pre is not None else (code, blank)
    decls = {d.name: d for d in _find_kernels(seen, seen_blank)}
    barrier = _barrier_names(_function_bodies(seen_blank))
    exported: list[tuple[str, str]] = []  # (get_function name, kernel's base name)
    for d in decls.values():
        if d.c_linkage and not d.template:
            exported.append((d.name, d.name))
    for expr in names:
        base = _base_name(expr)
        if base not in decls:
            raise CompileError(f"name expression {expr!r} names no __global__ function of the "
                               f"source (NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID)", code, None,
                               options)
        if expr not in dict(exported):
            exported.append((expr, base))
    rows = []
    for key, base in exported:
        d = decls[base]
        bounds = f"({d.launch_bounds})" if d.launch_bounds and not d.template else "0"
        fibers = barrier is None or base in barrier
        rows.append(f'    EMUCUDA_KERNEL("{key}", {int(fibers)}, {bounds}, &{key}),')
    if not rows:
        rows.append("    emucuda_kernel_desc{},")
    source = "".join([
        _HEADER.read_text(), f'\n#line 1 "{_SOURCE_NAME}"\n', _rewrite(code, blank),
        '\n#line 1 "emucuda_generated.cpp"\n',
        "const emucuda_kernel_desc emucuda_kernels[] = {\n", "\n".join(rows), "\n};\n",
        f"const uint32_t emucuda_kernel_count = {len(exported)};\n"])
    build = _build_flags(std) + flags
    path = _build(source, build, "kernel", code, names[0] if names else None, options)
    with _modules_lock:
        lib = _by_path.get(path)
    if lib is None:  # one _Library per file: its lock guards the module's global grid state
        lib = _Library(path, code, decls, exported)
        with _modules_lock:
            lib = _by_path.setdefault(path, lib)
    return lib


_modules: dict[tuple[str, tuple[str, ...], tuple[str, ...]], _Library] = {}
_by_path: dict[Path, _Library] = {}
_modules_lock = threading.Lock()


# ---------------------------------------------------------------------------------- modules


class Module:
    """A compiled kernel module (``cupy.RawModule``'s ``cuModule``)."""

    def __init__(self, lib: _Library, code: str, options: tuple[str, ...],
                 name_expressions: tuple[str, ...]) -> None:
        self._lib = lib
        self.code = code
        self.options = options
        self.name_expressions = name_expressions
        self._functions: dict[str, Function] = {}

    @property
    def kernel_names(self) -> tuple[str, ...]:
        """Names :meth:`get_function` accepts."""
        return tuple(self._lib.kernels)

    def get_function(self, name: str) -> Function:
        """The kernel ``name`` (an ``extern "C"`` name or a name expression).

        Raises
        ------
        CUDADriverError
            ``CUDA_ERROR_NOT_FOUND``, as ``cuModuleGetFunction``, for any other name.
        """
        f = self._functions.get(name)
        if f is not None:
            return f
        entry = self._lib.kernels.get(name)
        if entry is None:
            hint = ""
            if any(d.name == name for d in _find_kernels(self.code, _blank(self.code))):
                hint = (f"; {name} has C++ linkage: declare it extern \"C\" or pass it in "
                        f"name_expressions")
            raise driver_error(500, f"no kernel {name!r} in the module (it has "
                                       f"{sorted(self._lib.kernels) or 'none'}){hint}")
        f = self._functions[name] = Function(self._lib, name, *entry)
        return f


class Function:
    """One kernel of a :class:`Module` (``cupy.cuda.Function``)."""

    def __init__(self, lib: _Library, name: str, index: int, desc: _KernelDesc,
                 decl: _KernelDecl | None) -> None:
        self._lib = lib
        self._index = index
        self.name = name
        texts = decl.param_types if decl is not None else []
        params = []
        for i in range(desc.nparams):
            p = desc.params[i]
            kind = _KIND_NAMES.get(p.kind, "other")
            text = texts[i] if len(texts) == desc.nparams else f"<{p.size}-byte {kind}>"
            params.append(Param(i, text, p.kind == _KIND_POINTER, int(p.size), kind))
        self.params: tuple[Param, ...] = tuple(params)
        #: The kernel may reach ``__syncthreads``: its threads run as fibers.
        self.uses_barrier = bool(desc.barrier)
        #: ``__launch_bounds__`` maximum, else the device's 1024.
        self.max_threads_per_block = int(desc.max_threads) or MAX_THREADS_PER_BLOCK
        #: Static shared memory of the whole module (one module may hold several kernels).
        self.shared_size_bytes = lib.static_shared if lib.n_kernels == 1 else 0

    def __repr__(self) -> str:
        return f"<emulated kernel {self.name}({', '.join(p.ctype for p in self.params)})>"

    @property
    def attributes(self) -> dict[str, int]:
        """What ``cuFuncGetAttribute`` would say (CuPy's ``RawKernel.attributes`` keys); the
        register and local-memory figures have no meaning here and are 0."""
        return {"binary_version": 80, "cache_mode_ca": 0, "const_size_bytes": 0,
                "local_size_bytes": 0,
                "max_dynamic_shared_size_bytes": MAX_SHARED_PER_BLOCK - self.shared_size_bytes,
                "max_threads_per_block": self.max_threads_per_block, "num_regs": 0,
                "preferred_shared_memory_carveout": -1, "ptx_version": 80,
                "shared_size_bytes": self.shared_size_bytes}

    def prepare(self, grid: Sequence[int] | int, block: Sequence[int] | int,
                args: Sequence[object], shared_mem: int = 0, *,
                device: int | None = None) -> Launch:
        """Check a launch as ``cuLaunchKernel`` and CuPy's argument packing do, at once; run it
        later with :meth:`Launch.run` (when the stream's turn comes).

        Parameters
        ----------
        grid, block
            Up to three dimensions each (missing ones are 1; CuPy itself turns a 0 into 1
            before the driver sees it, this layer refuses it as the driver does).
        args
            One per parameter: a :class:`Pointer` (or None, NULL) for a pointer parameter, a
            numpy scalar of the parameter's size and kind for any other. Python
            ``int``/``float``/``bool`` are converted as CuPy converts them (int64, or uint64 from
            2**63; float64; bool).
        shared_mem
            Bytes of dynamic (``extern __shared__``) shared memory per block.
        device
            The device the launch runs on: pointers into another device's memory fault.

        Raises
        ------
        CUDADriverError
            ``CUDA_ERROR_INVALID_VALUE``: a launch configuration past CUDA's limits (a zero or
            too large dimension, more than 1024 threads per block, more than 48 KiB of shared
            memory); ``CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES``: more threads than the kernel's
            ``__launch_bounds__``.
        TypeError
            Wrong number of arguments, or one of the wrong kind or size.
        """
        g = _dims(grid, "grid")
        b = _dims(block, "block")
        shared_mem = operator.index(shared_mem)
        self._check_config(g, b, shared_mem)
        return Launch(self, g, b, self._check_args(args), shared_mem, device)

    def launch(self, grid: Sequence[int] | int, block: Sequence[int] | int,
               args: Sequence[object], shared_mem: int = 0, *,
               device: int | None = None) -> None:
        """:meth:`prepare` and :meth:`Launch.run` at once: every thread has run on return.

        Raises
        ------
        CUDADriverError, TypeError
            See :meth:`prepare`.
        Fault
            See :meth:`Launch.run`.
        """
        self.prepare(grid, block, args, shared_mem, device=device).run()

    # ------------------------------------------------------------------ checks

    def _check_config(self, g: tuple[int, int, int], b: tuple[int, int, int],
                      shared_mem: int) -> None:
        for what, dims, limits in (("grid", g, MAX_GRID_DIM), ("block", b, MAX_BLOCK_DIM)):
            for axis, n, limit in zip("xyz", dims, limits, strict=True):
                if not 1 <= n <= limit:
                    raise driver_error(1, f"kernel {self.name}: {what}.{axis} = {n}, must be "
                                             f"1..{limit} (grid {g}, block {b})")
        threads = b[0] * b[1] * b[2]
        if threads > MAX_THREADS_PER_BLOCK:
            raise driver_error(1, f"kernel {self.name}: block {b} has {threads} threads, "
                                     f"over {MAX_THREADS_PER_BLOCK}")
        if threads > self.max_threads_per_block:
            raise driver_error(701, f"kernel {self.name}: block {b} has {threads} threads, "
                                       f"over its __launch_bounds__ of "
                                       f"{self.max_threads_per_block}")
        if not 0 <= shared_mem <= MAX_SHARED_PER_BLOCK \
                or shared_mem + self.shared_size_bytes > MAX_SHARED_PER_BLOCK:
            raise driver_error(1, f"kernel {self.name}: {shared_mem} bytes of dynamic shared "
                                     f"memory (+ {self.shared_size_bytes} static), over "
                                     f"{MAX_SHARED_PER_BLOCK} per block")

    def _check_args(self, args: Sequence[object]) -> list[int | np.generic]:
        args = list(args)
        if len(args) != len(self.params):
            sig = ", ".join(p.ctype for p in self.params)
            raise TypeError(f"kernel {self.name}({sig}) takes {len(self.params)} arguments, "
                            f"{len(args)} given")
        out: list[int | np.generic] = []
        for p, a in zip(self.params, args, strict=True):
            if p.is_pointer:
                if isinstance(a, np.integer) and a.dtype.itemsize == 8:
                    # A raw address (``arr.data.ptr`` passed as an int): CuPy packs its 8
                    # bytes and the kernel reads them as the pointer, as on hardware.
                    out.append(int(a) & 0xFFFF_FFFF_FFFF_FFFF)
                    continue
                if a is not None and not isinstance(a, Pointer):
                    raise TypeError(f"kernel {self.name}: {p} is a pointer: it takes a device "
                                    f"array (Pointer) or a 64-bit address, not "
                                    f"{type(a).__name__} {a!r}")
                out.append(0 if a is None else a.address)
            else:
                out.append(self._check_scalar(p, a))
        return out

    def _check_pointer(self, p: Param, addr: int, device: int | None) -> None:
        if addr == 0:
            return
        alloc = memory.find(addr)
        if alloc is None:
            # One past the end is a valid pointer (an empty view at the end of an array).
            prev = memory.find(addr - 1)
            if prev is not None and addr == prev.ptr + prev.capacity:
                alloc = prev
        if alloc is None:
            raise Fault(f"kernel {self.name}: {p} is 0x{addr:x}, not inside a live allocation: "
                        f"{_describe(addr)}")
        if device is not None and alloc.device >= 0 and alloc.device != device:
            raise Fault(f"kernel {self.name}: {p} is 0x{addr:x}, memory of device "
                        f"{alloc.device}, in a launch on device {device}")

    def _check_scalar(self, p: Param, a: object) -> np.generic:
        if isinstance(a, Pointer) or a is None:
            raise TypeError(f"kernel {self.name}: {p} is a {p.sizeof}-byte {p.kind} value: it "
                            f"takes a numpy scalar, not a pointer")
        v = _as_scalar(a)
        if v is None:
            raise TypeError(f"kernel {self.name}: {p} takes a numpy scalar of {p.sizeof} bytes, "
                            f"not {type(a).__name__}")
        if v.dtype.itemsize != p.sizeof:
            raise TypeError(f"kernel {self.name}: {p} is {p.sizeof} bytes, the argument is "
                            f"{v.dtype} ({v.dtype.itemsize} bytes)")
        kind = v.dtype.kind
        if (p.kind == "float" and kind != "f") or (p.kind == "integral" and kind not in "iub"):
            raise TypeError(f"kernel {self.name}: {p} is a {p.kind} parameter, the argument is "
                            f"{v.dtype}")
        return v

    # ------------------------------------------------------------------ faults

    def _fault_message(self, f: _Fault, shared_mem: int) -> str:
        where = (f"block ({f.block[0]}, {f.block[1]}, {f.block[2]}), "
                 f"thread ({f.thread[0]}, {f.thread[1]}, {f.thread[2]})")
        head = f"kernel {self.name}"
        if f.kind == _FAULT_SIGNAL:
            if f.sig in (signal.SIGSEGV, signal.SIGBUS):
                access = {1: "read", 2: "write"}.get(f.access, "access")
                if f.sig == signal.SIGSEGV and f.code == _SI_KERNEL:
                    what = (f"illegal {access} of a non-canonical address (far outside every "
                            f"allocation; the CPU does not report which)")
                else:
                    what = (f"illegal {access} at 0x{f.addr:x}: "
                            f"{self._where_is(f.addr, f, shared_mem)}")
            elif f.sig == signal.SIGFPE:
                what = ("integer division by zero or overflow (SIGFPE; a GPU would return an "
                        "unspecified value)")
            elif f.sig == signal.SIGILL:
                what = "illegal instruction (unreachable code reached?)"
            else:
                what = f"signal {f.sig}"
            msg = f"{head}: {what}, in {where}"
        else:
            text = f.message.decode(errors="replace")
            msg = f"{head}: {text}, in {where}"
            if f.kind == _FAULT_MISALIGNED:
                msg += f" ({_describe(f.addr)})"
        line = self._lib.source_line(int(f.pc_offset)) if f.pc_offset else None
        if line is not None:
            msg += f", at line {line[0]} of the kernel source: {line[1]}"
        return msg

    def _where_is(self, addr: int, f: _Fault, shared_mem: int) -> str:
        page = mmap.PAGESIZE
        if f.shared_lo and f.shared_lo <= addr < f.shared_hi + page:
            end = f.shared_lo + shared_mem
            if addr >= end:
                return (f"{addr - end} bytes past the end of the {shared_mem}-byte dynamic shared "
                        f"memory")
            return f"{addr - f.shared_lo} bytes into the dynamic shared memory"
        if f.stacks_lo and f.stacks_lo <= addr < f.stacks_hi:
            return (f"the guard page of a thread's stack: its locals ran over the emulator's "
                    f"{_STACK_KIB} KiB per thread")
        if addr < page:
            return f"a NULL pointer (+{addr})"
        if f.sp and abs(addr - f.sp) < 64 * 1024 and memory.find(addr) is None:
            return ("next to the stack pointer: the thread's stack ran over (deep recursion or "
                    "large local arrays)")
        return _describe(addr)


class Launch:
    """A checked launch of one kernel, ready to run (:meth:`Function.prepare`)."""

    def __init__(self, fn: Function, grid: tuple[int, int, int], block: tuple[int, int, int],
                 values: list[int | np.generic], shared_mem: int, device: int | None) -> None:
        self.function = fn
        self.grid, self.block, self.shared_mem, self.device = grid, block, shared_mem, device
        self._values = values
        self._buffers: list[ctypes.c_void_p | ctypes.Array[ctypes.c_char]] = []
        for p, v in zip(fn.params, values, strict=True):
            if p.is_pointer:
                self._buffers.append(ctypes.c_void_p(int(v)))
            else:  # the bytes now, as CuPy packs them when the launch is issued
                raw = v.tobytes()  # type: ignore[union-attr]
                self._buffers.append(ctypes.create_string_buffer(raw, max(len(raw), 8)))
        self._argv = (ctypes.c_void_p * max(1, len(self._buffers)))(
            *[ctypes.addressof(x) for x in self._buffers])

    def run(self) -> None:
        """Run every block and thread on the calling thread.

        Raises
        ------
        Fault
            A pointer argument outside every live allocation (or on another device), or an
            illegal or misaligned access, a device-side assertion or ``__trap()`` while running:
            the message names the kernel, the address and where it lies, the block and thread
            and the source line.
        """
        fn = self.function
        for p, v in zip(fn.params, self._values, strict=True):
            if p.is_pointer:
                fn._check_pointer(p, int(v), self.device)
        launch = _Launch((ctypes.c_uint32 * 3)(*self.grid), (ctypes.c_uint32 * 3)(*self.block),
                         self.shared_mem, _next_seed(),
                         ctypes.cast(self._argv, ctypes.POINTER(ctypes.c_void_p)))
        fault = _Fault()
        with fn._lib.lock:
            rc = fn._lib.launch(fn._index, ctypes.byref(launch), ctypes.byref(fault))
        if rc == -1:
            raise driver_error(2, f"kernel {fn.name}: could not map the fiber stacks or shared "
                                  f"memory")
        if rc != 0:
            raise Fault(fn._fault_message(fault, self.shared_mem))


def _describe(addr: int) -> str:
    """Where ``addr`` lies: :func:`memory.describe`, plus 'before the start of' an allocation."""
    text = memory.describe(addr)
    if text != "outside every allocation":
        return text
    with memory._lock:  # the emulator's own bookkeeping: no public look-up of the next one
        i = bisect.bisect_right(memory._starts, addr)
        nxt = memory._allocs[i] if i < len(memory._allocs) else None
    if nxt is not None and nxt.ptr - addr <= mmap.PAGESIZE:
        return f"{nxt.ptr - addr} bytes before the start of {nxt.describe()}"
    return text


def _as_scalar(a: object) -> np.generic | None:
    """``a`` as a numpy scalar, Python scalars converted as CuPy converts them."""
    if isinstance(a, np.generic):
        return a
    if isinstance(a, np.ndarray) and a.size == 1:
        return a.reshape(-1)[0]
    if type(a) is bool:
        return np.bool_(a)
    if type(a) is int:
        return np.uint64(a) if a >= 2**63 else np.int64(a)
    if type(a) is float:
        return np.float64(a)
    if type(a) is complex:
        return np.complex128(a)
    return None


def _dims(v: Sequence[int] | int, what: str) -> tuple[int, int, int]:
    if isinstance(v, int | np.integer):
        v = (int(v),)
    t = tuple(operator.index(x) for x in v)
    if not 1 <= len(t) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dimensions, got {t}")
    return (*t, 1, 1)[:3]  # type: ignore[return-value]


_seed_lock = threading.Lock()
_launches = 0


def _next_seed() -> int:
    """A seed per launch: reproducible from ``EMULATED_GPU_SEED`` and the launch's rank."""
    global _launches
    with _seed_lock:
        _launches += 1
        n = _launches
    z = (_SEED * 0x9E3779B97F4A7C15 + n * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 31)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 29)
