"""The emulated machine's GPUs as NVML, ``CUDA_VISIBLE_DEVICES``, cuda.core and numba.cuda see
them: what dask-cuda's ``LocalCUDACluster`` relies on (issue 18, tests_gpu/test_dask_cuda.py).

Each test pins one behaviour of the real stack: the CUDA driver's parsing of
``CUDA_VISIBLE_DEVICES`` (read once, at initialization; indices or UUID prefixes, reordering and
hiding devices), NVML's view (physical indices, blind to that variable, reference counted
``nvmlInit``, the real ``NVMLError`` classes from nvidia-ml-py's binding), which processes hold a
context on which GPU (across processes, as dask-cuda checks), cuda.core's per-thread ``Device``
singletons, and numba.cuda's device arrays, which distributed needs to move CuPy arrays between
workers. Processes with their own ``CUDA_VISIBLE_DEVICES`` run as children, as dask-cuda's
workers do.

Runs where tests/emulated_gpu is first on ``sys.path`` (the emulated leg)::

    GDS_ZARR_TEST_DEVICE=emulated python -m pytest tests_gpu/test_emulated_multi_gpu.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.emulator

pytest.importorskip("_emucuda")
cupy = pytest.importorskip("cupy")
if not getattr(cupy, "__emulated__", False):
    pytest.skip("the emulated CuPy is not first on sys.path", allow_module_level=True)

from _emucuda import devices

REPO = Path(__file__).resolve().parent.parent
PHYS = devices.physical()
TWO = pytest.mark.skipif(len(PHYS) < 2, reason="needs EMULATED_GPU_DEVICES >= 2")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private context registry, for this process and its children."""
    d = tmp_path / "state"
    monkeypatch.setenv("EMULATED_GPU_STATE", str(d))
    return d


def _child(code: str, visible: str | None, **env: str) -> Any:
    """Run ``code`` in a child process with ``CUDA_VISIBLE_DEVICES=visible`` (None: unset);
    the code prints one JSON value last."""
    e = {**os.environ, **env}
    e.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        e["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- CUDA_VISIBLE_DEVICES


def test_cuda_visible_devices_is_parsed_as_the_driver_does() -> None:
    two = (devices.PhysicalDevice(0), devices.PhysicalDevice(1))
    u0, u1 = two[0].uuid, two[1].uuid
    cases = {
        None: (0, 1),             # unset: every device, in index order
        "1,0": (1, 0),            # reordered: physical 1 is ordinal 0
        "1": (1,),                # hidden
        "": (),                   # no device at all
        " 1 , 0 ": (1, 0),        # blanks around entries are ignored
        "1gpu2,0": (1, 0),        # strtoul: the leading digits
        "0,-1,1": (0,),           # a negative entry ends the list
        "0,one,1": (0,),          # so does a non-numeric one
        "0,5,1": (0,),            # and an index past the last device
        "1,0,1": (),              # an index named twice: no device
        f"{u1},{u0}": (1, 0),     # UUIDs
        f"{u1[:12]}": (1,),       # a unique prefix of one
        "GPU-": (),               # ambiguous: matches both, ends the list
        f"{u0},{u0}": (),         # one device named twice
        f"{u0},1": (0,),          # an index after UUIDs ends the list
        "MIG-0123": (),           # no MIG instances here
    }
    for value, expected in cases.items():
        assert devices.parse_visible(value, two) == expected, value


@TWO
def test_a_process_sees_its_visible_devices_renumbered_from_zero(state_dir: Path) -> None:
    got = _child("""
        import json, os, cupy
        from cuda.core import Device
        r = cupy.cuda.runtime
        n = r.getDeviceCount()
        os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"   # read once, at initialization: no effect
        print(json.dumps({
            "count": n, "count_after": r.getDeviceCount(),
            "bus": [cupy.cuda.Device(i).pci_bus_id for i in range(n)],
            "uuid": [r.getDeviceProperties(i)["uuid"].hex() for i in range(n)],
            "core_uuid": [Device(i).uuid for i in range(n)],
            "core_bus": [Device(i).pci_bus_id for i in range(n)],
        }))
    """, "1")
    p1 = PHYS[1]
    assert got["count"] == got["count_after"] == 1
    assert got["bus"] == got["core_bus"] == [p1.pci_bus_id]
    assert got["uuid"] == [p1.uuid_bytes.hex()]
    assert got["core_uuid"] == [p1.uuid.removeprefix("GPU-")]


@TWO
def test_an_ordinal_past_the_visible_devices_is_invalid() -> None:
    got = _child("""
        import json, cupy
        from cuda.core import Device
        out = {}
        try:
            cupy.cuda.Device(1).use()
        except cupy.cuda.runtime.CUDARuntimeError as e:
            out["cupy"] = str(e)
        try:
            Device(1)
        except ValueError as e:
            out["core"] = str(e)
        print(json.dumps(out))
    """, "1")
    assert got["cupy"].startswith("cudaErrorInvalidDevice: invalid device ordinal")
    assert got["core"] == "device_id must be within [0, 1), got 1"


def test_no_visible_device_is_cuda_error_no_device_but_nvml_still_counts() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    del pynvml
    got = _child("""
        import json, cupy, pynvml
        from cuda.core import Device
        from cuda.core._utils.cuda_utils import CUDAError
        out = {}
        try:
            cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as e:
            out["cupy"] = str(e)
        try:
            Device()
        except CUDAError as e:
            out["core"] = str(e)
        pynvml.nvmlInit()
        out["nvml"] = pynvml.nvmlDeviceGetCount()
        print(json.dumps(out))
    """, "")
    assert got["cupy"].startswith("cudaErrorNoDevice: no CUDA-capable device is detected")
    assert got["core"].startswith("CUDA_ERROR_NO_DEVICE: This indicates that no CUDA-capable")
    assert got["nvml"] == len(PHYS)


# ---------------------------------------------------------------- NVML


@pytest.fixture
def nvml() -> Any:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    assert getattr(pynvml, "__emulated__", False), "the real pynvml is first on sys.path"
    pynvml.nvmlInit()
    yield pynvml
    pynvml.nvmlShutdown()


def test_pynvml_is_the_real_binding_over_the_emulated_library(nvml: Any) -> None:
    import pynvml as again

    assert again is nvml
    # nvidia-ml-py's own file (its venv may lie inside the checkout), not a stand-in
    assert not Path(nvml.__file__).resolve().is_relative_to(REPO / "tests" / "emulated_gpu")
    assert Path(nvml.__file__).resolve().parent.name == "site-packages"
    assert nvml.nvmlDeviceGetCount() == len(PHYS)
    for d in PHYS:
        h = nvml.nvmlDeviceGetHandleByIndex(d.index)
        assert isinstance(h, nvml.c_nvmlDevice_t)
        assert nvml.nvmlDeviceGetUUID(h) == d.uuid  # str, as nvidia-ml-py >= 11.5 returns
        assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(d.uuid)) == d.index
        assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(d.uuid.encode())) == d.index
        assert nvml.nvmlDeviceGetIndex(
            nvml.nvmlDeviceGetHandleByPciBusId(d.nvml_pci_bus_id)) == d.index
        pci = nvml.nvmlDeviceGetPciInfo(h)
        assert (pci.busId, pci.busIdLegacy, pci.bus) == (  # the binding decodes char fields
            d.nvml_pci_bus_id, d.pci_bus_id, d.pci_bus)
        assert nvml.nvmlDeviceGetName(h) == devices.NAME
        assert nvml.nvmlDeviceGetCudaComputeCapability(h) == devices.COMPUTE_CAPABILITY
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        assert isinstance(mem, nvml.c_nvmlMemory_t) and mem.total == mem.free + mem.used
        cpus = list(nvml.nvmlDeviceGetCpuAffinity(h, 1))
        assert cpus and all(isinstance(c, int) for c in cpus)
    assert nvml.nvmlSystemGetCudaDriverVersion() == cupy.cuda.runtime.driverGetVersion()


def test_nvml_errors_are_the_real_classes_and_codes(nvml: Any) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(nvml.NVMLError_InvalidArgument) as e:
        nvml.nvmlDeviceGetHandleByIndex(len(PHYS))
    assert e.value.value == nvml.NVML_ERROR_INVALID_ARGUMENT and str(e.value) == "Invalid Argument"
    with pytest.raises(nvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(nvml.NVMLError_NotSupported):  # not MIG capable
        nvml.nvmlDeviceGetMigMode(h)
    assert not nvml.nvmlDeviceIsMigDeviceHandle(h)
    with pytest.raises(nvml.NVMLError_InvalidArgument):  # not a handle at all
        nvml.nvmlDeviceGetUUID(nvml.c_nvmlDevice_t())
    with pytest.raises(nvml.NVMLError_FunctionNotFound):  # not in the emulated library
        nvml.nvmlDeviceGetPowerUsage(h)


def test_nvml_init_is_reference_counted(nvml: Any) -> None:
    # In a child: distributed's NVML diagnostics (init_once) hold an init in this process.
    got = _child("""
        import json, pynvml
        out = []
        def probe(f):
            try:
                f()
                out.append("ok")
            except pynvml.NVMLError as e:
                out.append(type(e).__name__)
        probe(pynvml.nvmlDeviceGetCount)      # before any init
        pynvml.nvmlInit(); pynvml.nvmlInit(); pynvml.nvmlShutdown()
        probe(pynvml.nvmlDeviceGetCount)      # one init still holds
        pynvml.nvmlShutdown()
        probe(pynvml.nvmlDeviceGetCount)      # none left
        probe(pynvml.nvmlShutdown)            # one shutdown too many
        print(json.dumps(out))
    """, None)
    assert got == ["NVMLError_Uninitialized", "ok", "NVMLError_Uninitialized",
                   "NVMLError_Uninitialized"]


def test_nvml_ignores_cuda_visible_devices() -> None:
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    got = _child("""
        import json, pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps([pynvml.nvmlDeviceGetCount(), pynvml.nvmlDeviceGetUUID(h)]))
    """, "1")
    assert got == [len(PHYS), PHYS[0].uuid]


def test_every_nvml_call_of_dask_cuda_and_distributed_is_in_the_emulated_library(
        nvml: Any) -> None:
    """The pynvml functions dask-cuda and distributed's NVML diagnostics call (read from their
    installed sources) reach only C entry points the emulated libnvidia-ml has."""
    import re

    dask_cuda = pytest.importorskip("dask_cuda")
    import distributed.diagnostics.nvml
    from _emucuda import nvml as emulated
    from test_emulated_names import _nvml_entry_points

    files = [*Path(dask_cuda.__file__).parent.glob("*.py"),
             Path(distributed.diagnostics.nvml.__file__)]
    used = {m for f in files for m in re.findall(r"pynvml\.(nvml\w+)", f.read_text())}
    assert {"nvmlDeviceGetCpuAffinity", "nvmlDeviceGetHandleByUUID"} <= used
    entry_points = _nvml_entry_points(nvml)
    lacking = {f: sorted(entry_points[f] - emulated.ENTRY_POINTS) for f in sorted(used)
               if entry_points[f] - emulated.ENTRY_POINTS}
    assert not lacking, lacking


@TWO
def test_nvml_lists_the_processes_holding_a_context_on_each_gpu(nvml: Any,
                                                                state_dir: Path) -> None:
    """As dask-cuda checks each worker's context is on the GPU its CUDA_VISIBLE_DEVICES names:
    a child that sees physical GPU 1 as its device 0 shows up on GPU 1 only, and is gone from
    the list once it exits."""
    code = """
        import sys, cupy
        a = cupy.zeros(1 << 20, cupy.uint8)       # a context on ordinal 0 = physical 1
        print("ready", flush=True)
        sys.stdin.readline()
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1,0"}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"

        def pids(index: int) -> set[int]:
            h = nvml.nvmlDeviceGetHandleByIndex(index)
            return {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(h)}

        assert child.pid in pids(1) and child.pid not in pids(0)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses_v2(nvml.nvmlDeviceGetHandleByIndex(1))
        mine = [p for p in procs if p.pid == child.pid]
        assert mine[0].usedGpuMemory is None  # another process's: not known here
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=60)
    assert child.pid not in pids(1)


def test_this_process_shows_its_own_memory(nvml: Any, state_dir: Path) -> None:
    from cuda.core import Device

    Device(0).set_current()
    a = cupy.empty(3 << 20, cupy.uint8)
    index = devices.physical_of(0).index
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mine = [p for p in nvml.nvmlDeviceGetComputeRunningProcesses(h) if p.pid == os.getpid()]
    assert mine and mine[0].usedGpuMemory >= a.nbytes
    assert nvml.nvmlDeviceGetMemoryInfo(h).used >= a.nbytes


@TWO
def test_dask_cuda_finds_each_workers_context_on_its_own_gpu(state_dir: Path) -> None:
    """dask-cuda's worker start-up check (initialize._create_cuda_context_and_warn), as each
    LocalCUDACluster worker runs it: the context it creates is on the GPU named first in
    CUDA_VISIBLE_DEVICES, by UUID through NVML."""
    pytest.importorskip("dask_cuda")
    code = """
        import json, os
        from dask_cuda import initialize
        from distributed.diagnostics.nvml import get_device_index_and_uuid
        initialize._create_cuda_context_and_warn()
        made = initialize.cuda_context_created
        first = os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]
        want = get_device_index_and_uuid(first)
        print(json.dumps([initialize.pre_existing_cuda_context.has_context, made.has_context,
                          made.device_info.device_index, made.device_info.uuid, want.uuid]))
    """
    for visible, index in (("1,0", 1), ("0,1", 0), (PHYS[1].uuid, 1)):
        pre, has, got_index, got_uuid, want_uuid = _child(code, visible)
        assert (pre, has, got_index) == (False, True, index), visible
        assert got_uuid == want_uuid == PHYS[index].uuid


# ---------------------------------------------------------------- cuda.core


def test_cuda_core_devices_are_per_thread_singletons() -> None:
    from cuda.core import Device
    from cuda.core._utils.cuda_utils import CUDAError

    d = Device(0)
    assert Device(0) is d and Device(d) is d and int(d) == d.device_id == 0
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(Device(0)))
    t.start()
    t.join()
    assert other[0] is not d and other[0] == d
    with pytest.raises(ValueError, match="device_id must be >= 0"):
        Device(-1)
    fresh: list[Any] = []

    def sync_uninitialized() -> None:
        try:
            Device(0).sync()
        except CUDAError as e:
            fresh.append(str(e))

    t = threading.Thread(target=sync_uninitialized)
    t.start()
    t.join()
    assert fresh == ["Device 0 is not yet initialized, perhaps you forgot to call "
                     ".set_current() first?"]
    d.set_current()
    d.sync()
    assert d.compute_capability == devices.COMPUTE_CAPABILITY and d.arch == "90"


# ---------------------------------------------------------------- numba.cuda


def test_numba_device_arrays_round_trip_and_share_memory_with_cupy() -> None:
    from numba import cuda

    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = cuda.to_device(host)
    np.testing.assert_array_equal(d.copy_to_host(), host)
    c = cupy.asarray(d)  # zero copy, through __cuda_array_interface__
    c *= 2
    np.testing.assert_array_equal(d.copy_to_host(), host * 2)
    view = cuda.as_cuda_array(c)
    assert view.__cuda_array_interface__["data"][0] == c.data.ptr
    with pytest.raises(TypeError, match="doesn't implement the cuda array interface"):
        cuda.as_cuda_array(host)
    with pytest.raises(NotImplementedError, match="stream"):
        d.copy_to_host(stream=5)
    with pytest.raises(ValueError, match="not device memory"):
        cuda.as_cuda_array(_FakeCAI(host))


class _FakeCAI:
    """Host memory passed off as device memory."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str,
                                         "data": (a.ctypes.data, False), "strides": None,
                                         "version": 3}


def test_distributed_moves_cupy_arrays_through_numba() -> None:
    """What a worker does to send a CuPy array to another (distributed.protocol.cupy): the
    'dask' serializer copies it to host frames, the receiver makes device memory with numba."""
    protocol = pytest.importorskip("distributed.protocol")
    x = cupy.arange(24, dtype=cupy.float64).reshape(4, 6)[:, 1:4]  # not contiguous
    header, frames = protocol.serialize(x, serializers=("dask",), on_error="raise")
    assert header["serializer"] == "dask"
    y = protocol.deserialize(header, frames)
    assert type(y) is cupy.ndarray
    np.testing.assert_array_equal(y.get(), x.get())
