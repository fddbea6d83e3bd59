"""``pynvml`` on the emulated machine: the real binding (nvidia-ml-py), over an emulated NVML.

nvidia-ml-py's ``pynvml`` is a pure-Python ``ctypes`` binding of ``libnvidia-ml.so.1``. This
module finds that binding further along ``sys.path`` (the installed package), runs it as
``pynvml`` unchanged, and makes its ``CDLL("libnvidia-ml.so.1")`` (done at the first
``nvmlInit``) load the emulated library of _emucuda/nvml.py instead of the driver's. Everything
Python sees (functions, structures, ``NVMLError`` and its subclasses, str/bytes conversion) is
therefore the real binding's; the C API behind it is the emulated machine's.

Without nvidia-ml-py installed, ``import pynvml`` fails as it does without the package.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load() -> None:
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", path)
    if spec is None or spec.loader is None or spec.submodule_search_locations is not None:
        raise ModuleNotFoundError(
            "No module named 'pynvml' (the emulated device runs the real binding over an "
            "emulated NVML: pip install nvidia-ml-py)", name="pynvml")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pynvml"] = module  # the binding reads sys.modules[__name__] as it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("pynvml", None)
        raise

    import ctypes

    from _emucuda import nvml as _nvml

    real_cdll = module.CDLL

    def CDLL(name, *args, **kwargs):  # stands in for ctypes.CDLL in the binding
        if os.path.basename(str(name)).startswith(("libnvidia-ml.so", "nvml.dll")):
            return _nvml.load()
        return real_cdll(name, *args, **kwargs)

    CDLL.__doc__ = ctypes.CDLL.__doc__
    module.CDLL = CDLL
    module.__emulated__ = True


_load()
del _load
