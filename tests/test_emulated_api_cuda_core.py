"""The emulated ``cuda.core`` (tests/emulated_gpu/cuda/core) agrees with cuda-core's API (issue 18).

The real cuda-core cannot be imported without cuda-bindings and a driver, but its wheel ships
type stubs generated from the Cython sources (``cuda/core/cu12/_device.pyi`` and the other
``.pyi``). Every public member of the stand-in's ``Device`` and ``DeviceProperties`` must be in
the stubs as the same kind (method, property, classmethod) with the same parameters (names,
order, kinds, defaults), and every name the stand-in's ``cuda.core`` exports must be in one of
the stubs' ``__all__``.

Runs where cuda-core is installed (dask-cuda brings it: the emulated leg with dask-cuda) and
skips elsewhere. The stand-in is read in a child process with tests/emulated_gpu first on
``PYTHONPATH``, so this process's ``cuda`` stays the real namespace package.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EMULATOR = REPO / "tests" / "emulated_gpu"
CLASSES = ("Device", "DeviceProperties")


def _stub_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("cuda-core")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cuda-core is not installed")
    d = Path(str(dist.locate_file("cuda/core/cu12")))
    if not (d / "_device.pyi").is_file():
        pytest.skip(f"cuda-core {dist.version} ships no cu12/_device.pyi stubs")
    return d


def _params(args: ast.arguments) -> list[list[str]]:
    """[name, kind, default source] of each parameter, ``self``/``cls`` left out."""
    out: list[list[str]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, (a, d) in enumerate(zip(positional, defaults, strict=True)):
        kind = "POSITIONAL_ONLY" if i < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append([a.arg, kind, "" if d is None else ast.unparse(d)])
    if args.vararg:
        out.append([args.vararg.arg, "VAR_POSITIONAL", ""])
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append([a.arg, "KEYWORD_ONLY", "" if d is None else ast.unparse(d)])
    if args.kwarg:
        out.append([args.kwarg.arg, "VAR_KEYWORD", ""])
    return [p for p in out if p[0] not in ("self", "cls")]


def _real_members() -> tuple[dict[str, dict[str, Any]], set[str]]:
    d = _stub_dir()
    tree = ast.parse((d / "_device.pyi").read_text(encoding="utf-8"))
    classes: dict[str, dict[str, Any]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in CLASSES:
            members: dict[str, Any] = {}
            for f in node.body:
                if not isinstance(f, ast.FunctionDef):
                    continue
                decos = {ast.unparse(x) for x in f.decorator_list}
                if any(x.endswith(".setter") for x in decos):
                    continue
                kind = ("property" if "property" in decos else
                        "classmethod" if "classmethod" in decos else
                        "staticmethod" if "staticmethod" in decos else "method")
                members[f.name] = {"kind": kind, "params": _params(f.args)}
            classes[node.name] = members
    exported: set[str] = set()
    for stub in d.glob("*.pyi"):
        for node in ast.parse(stub.read_text(encoding="utf-8")).body:
            if (isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
                exported |= set(ast.literal_eval(node.value))
    return classes, exported


_PROBE = r"""
import inspect, json
import cuda.core
from cuda.core._device import Device, DeviceProperties

def members(cls):
    out = {}
    for name, raw in vars(cls).items():
        if name.startswith("_") and name not in ("__new__", "__int__", "__repr__", "__hash__",
                                                 "__eq__", "__reduce__"):
            continue
        if isinstance(raw, property):
            out[name] = {"kind": "property", "params": []}
            continue
        kind = ("classmethod" if isinstance(raw, classmethod) else
                "staticmethod" if isinstance(raw, staticmethod) or name == "__new__" else
                "method")
        fn = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
        if not callable(fn):
            continue
        params = [[p.name, p.kind.name, "" if p.default is p.empty else repr(p.default)]
                  for p in inspect.signature(fn).parameters.values()
                  if p.name not in ("self", "cls")]
        out[name] = {"kind": kind, "params": params}
    return out

print(json.dumps({"classes": {c.__name__: members(c) for c in (Device, DeviceProperties)},
                  "all": list(cuda.core.__all__), "file": cuda.core.__file__}))
"""


@pytest.fixture(scope="module")
def emulated() -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(EMULATOR), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(EMULATOR), out["file"]
    return out


def test_emulated_device_members_match_the_stubs(emulated: dict[str, Any]) -> None:
    real, _ = _real_members()
    diffs: list[str] = []
    for cls in CLASSES:
        for name, mine in emulated["classes"][cls].items():
            if name == "__init__" and cls == "DeviceProperties":
                continue  # cuda-core's raises, as the stand-in's does; both (*args, **kwargs)
            theirs = real[cls].get(name)
            if theirs is None:
                diffs.append(f"{cls}.{name}: not in cuda-core's stubs")
                continue
            if mine["kind"] != theirs["kind"] and name != "__new__":
                diffs.append(f"{cls}.{name}: a {mine['kind']}, cuda-core's is a "
                             f"{theirs['kind']}")
            strip = [[n, k] for n, k, _ in mine["params"]] != [
                [n, k] for n, k, _ in theirs["params"]]
            mine_defaults = [d for _, _, d in mine["params"]]
            their_defaults = [d for _, _, d in theirs["params"]]
            if strip or mine_defaults != their_defaults:
                diffs.append(f"{cls}.{name}: parameters {mine['params']}, cuda-core's "
                             f"{theirs['params']}")
    assert not diffs, "\n".join(diffs)


def test_emulated_exports_are_cuda_cores(emulated: dict[str, Any]) -> None:
    _, exported = _real_members()
    assert set(emulated["all"]) <= exported, sorted(set(emulated["all"]) - exported)
