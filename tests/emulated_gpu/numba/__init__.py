"""``numba`` on the emulated device: the emulated ``numba.cuda`` (numba-cuda's CUDA target).

Where the real numba is installed further along ``sys.path``, this runs it as ``numba``
unchanged, with this folder first on its ``__path__``: ``numba.cuda`` is then the stand-in
here, every other ``numba.*`` module the real one. Without numba installed, the package holds
``numba.cuda`` only (the CPU compiler is not emulated): what distributed's GPU serializers call
(distributed/protocol/numba.py, rmm.py) to move CuPy arrays between workers.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PARENT = os.path.dirname(_HERE)


def _real_spec() -> importlib.machinery.ModuleSpec | None:
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _PARENT]
    spec = importlib.machinery.PathFinder.find_spec("numba", path)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return None
    return spec


def _load_real(spec: importlib.machinery.ModuleSpec) -> None:
    real_dirs = list(spec.submodule_search_locations or ())
    spec.submodule_search_locations = [_HERE, *real_dirs]
    module = importlib.util.module_from_spec(spec)
    sys.modules["numba"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("numba", None)
        raise
    module.__emulated__ = True


_spec = _real_spec()
if _spec is not None:
    _load_real(_spec)
else:
    __emulated__ = True
del _spec
