"""The emulated machine's GPUs: what NVML enumerates, what CUDA makes visible, who holds contexts.

**Physical devices.** ``EMULATED_GPU_DEVICES`` of them (default 2), numbered as NVML numbers
them (PCI bus order). Each has a UUID (``GPU-`` and 8-4-4-4-12 hex digits, as ``nvidia-smi -L``
prints it), a PCI bus id and a name, derived from its index: the same in every process, as a
real machine's are.

**CUDA ordinals.** The CUDA driver reads ``CUDA_VISIBLE_DEVICES`` once, when it initializes
(``cuInit``, the first CUDA call of the process); later changes to the variable have no effect,
as on hardware. Unset, every device is visible in index order. Otherwise it is a comma-separated
list parsed as the driver parses it (the rules PyTorch reproduces and tests in
``torch.cuda._parse_visible_devices`` / ``_transform_uuid_to_ordinals``):

- integers (``strtoul``: leading digits, so ``1gpu2`` is ``1``; whitespace around an entry is
  ignored): the devices are enumerated in that order, ordinal 0 first. A negative or
  non-numeric entry ends the list there; an index past the last device ends it too; an index
  mentioned twice makes the whole list empty.
- UUIDs (the list starts with ``GPU-``): each entry is the UUID or a unique prefix of it; an
  entry that matches no device, or more than one, ends the list; one device named twice makes
  it empty. ``MIG-`` entries name MIG instances, which the emulated devices do not have.

So ``CUDA_VISIBLE_DEVICES=1,0`` makes physical device 1 ordinal 0, and ``""`` hides every
device (``cudaErrorNoDevice``). NVML ignores the variable: its indices are always physical.

**Contexts.** A process holds a context on a device from its first call that needs one on it
(setting the device current, allocating, creating a stream, queueing work; ``cuda.core``'s
``Device.set_current()``). NVML lists such processes per physical device
(``nvmlDeviceGetComputeRunningProcesses``), across processes, as the driver does: each holder
leaves a marker file in ``EMULATED_GPU_STATE`` (default ``<tmp>/emulated-gpu-<uid>``), removed
at exit; markers of processes that are gone are ignored and swept.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import threading
import uuid as _uuid
from dataclasses import dataclass

from .errors import runtime_error

__all__ = ["PhysicalDevice", "context_holders", "count", "note_context", "parse_visible",
           "physical", "physical_of", "visible"]

#: The number of GPUs the emulated machine has.
PHYSICAL_COUNT = int(os.environ.get("EMULATED_GPU_DEVICES", "2"))
#: The name every emulated GPU reports (CUDA and NVML alike; one model in the machine).
NAME = "Emulated CUDA device (host CPU)"
#: Compute capability (as CuPy's ``Device.compute_capability`` reports "90").
COMPUTE_CAPABILITY = (9, 0)
_UUID_NAMESPACE = _uuid.UUID("6f1c3b9e-2d4a-4e8b-9a53-0e7d5c1f2a64")


@dataclass(frozen=True)
class PhysicalDevice:
    """One GPU of the emulated machine, as NVML sees it."""

    index: int

    @property
    def uuid_bytes(self) -> bytes:
        """The 16 bytes of ``cudaDeviceProp.uuid`` / ``cuDeviceGetUuid``."""
        return _uuid.uuid5(_UUID_NAMESPACE, f"emulated-gpu/{self.index}").bytes

    @property
    def uuid(self) -> str:
        """``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``, as NVML and ``nvidia-smi -L`` print it."""
        return "GPU-" + str(_uuid.UUID(bytes=self.uuid_bytes))

    @property
    def pci_bus(self) -> int:
        return 0x10 + self.index

    @property
    def pci_bus_id(self) -> str:
        """``cudaDeviceGetPCIBusId``'s form: ``%04X:%02X:%02X.0`` (NVML's legacy form)."""
        return f"{0:04X}:{self.pci_bus:02X}:{0:02X}.0"

    @property
    def nvml_pci_bus_id(self) -> str:
        """NVML's ``busId``: ``%08X:%02X:%02X.0``."""
        return f"{0:08X}:{self.pci_bus:02X}:{0:02X}.0"


def physical() -> tuple[PhysicalDevice, ...]:
    return tuple(PhysicalDevice(i) for i in range(PHYSICAL_COUNT))


# ---------------------------------------------------------------- CUDA_VISIBLE_DEVICES


def _strtoul(s: str) -> int:
    """The integer ``s`` starts with (an optional sign, then digits), or -1."""
    end = 0
    for i, c in enumerate(s):
        if c.isdigit() or (i == 0 and c in "+-"):
            end = i + 1
        else:
            break
    digits = s[:end]
    if not digits or digits in ("+", "-"):
        return -1
    return int(digits)


def parse_visible(value: str | None, devices: tuple[PhysicalDevice, ...] | None = None
                  ) -> tuple[int, ...]:
    """The physical indices ``CUDA_VISIBLE_DEVICES=value`` makes visible, ordinal 0 first."""
    devices = physical() if devices is None else devices
    if value is None:
        return tuple(d.index for d in devices)
    out: list[int] = []
    if value.startswith(("GPU-", "MIG-")):
        prefix = value[:4]
        seen: list[str] = []
        for entry in value.split(","):
            if entry in seen:
                return ()
            if not entry.startswith(prefix):
                break
            seen.append(entry)
        for entry in seen:
            match = [d.index for d in devices if d.uuid.startswith(entry)]
            if len(match) != 1:  # none (a MIG- entry among them), or ambiguous
                break
            if match[0] in out:
                return ()
            out.append(match[0])
        return tuple(out)
    for entry in value.split(","):
        x = _strtoul(entry.strip())
        if x in out:
            return ()
        if x < 0:
            break
        out.append(x)
    for i, x in enumerate(out):
        if x >= len(devices):
            return tuple(out[:i])
    return tuple(out)


_VISIBLE: tuple[int, ...] | None = None  # read at the first call, as cuInit does
_visible_lock = threading.Lock()


def visible() -> tuple[int, ...]:
    """Physical indices of CUDA ordinals 0, 1, ... (``CUDA_VISIBLE_DEVICES`` read once)."""
    global _VISIBLE
    if _VISIBLE is None:
        with _visible_lock:
            if _VISIBLE is None:
                _VISIBLE = parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
    return _VISIBLE


def count() -> int:
    """``cudaGetDeviceCount``: the devices this process's CUDA sees."""
    return len(visible())


def why_none() -> str:
    """What hid every device (for ``cudaErrorNoDevice``'s message)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"EMULATED_GPU_DEVICES={PHYSICAL_COUNT}"
            + ("" if cvd is None else f", CUDA_VISIBLE_DEVICES={cvd!r}"))


def physical_of(ordinal: int) -> PhysicalDevice:
    """The physical device behind CUDA ordinal ``ordinal`` (``cudaErrorInvalidDevice`` if none)."""
    vis = visible()
    if not 0 <= int(ordinal) < len(vis):
        raise runtime_error(101, f"device {ordinal} of {len(vis)}")
    return PhysicalDevice(vis[int(ordinal)])


def ordinal_of(index: int) -> int | None:
    """The CUDA ordinal of physical device ``index`` in this process (None: not visible)."""
    vis = visible()
    return vis.index(index) if index in vis else None


# ---------------------------------------------------------------- contexts


def _state_dir() -> str:
    return os.environ.get("EMULATED_GPU_STATE") or os.path.join(
        tempfile.gettempdir(), f"emulated-gpu-{os.getuid() if hasattr(os, 'getuid') else 0}")


def _start_time(pid: int) -> str:
    """A token for the process's start (Linux: /proc/<pid>/stat field 22), so a reused pid
    is not taken for the process that left a marker."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "0" or _start_time(pid) in (start, "0")


_held: set[tuple[int, int, str]] = set()  # (pid, physical index, registry): recorded
_held_lock = threading.Lock()
_markers: list[str] = []


def note_context(ordinal: int) -> None:
    """This process now holds a (primary) context on CUDA ordinal ``ordinal``."""
    pid = os.getpid()
    vis = visible()
    if not 0 <= ordinal < len(vis):
        return  # the caller reports the bad ordinal
    d = _state_dir()
    key = (pid, vis[ordinal], d)
    if key in _held:
        return
    with _held_lock:
        if key in _held:
            return
        _held.add(key)
        with contextlib.suppress(OSError):
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"ctx-{vis[ordinal]}-{pid}-{_start_time(pid)}")
            with open(path, "w"):
                pass
            if not _markers:
                atexit.register(_remove_markers)
            _markers.append(path)


def _remove_markers() -> None:
    for path in _markers:
        if os.path.basename(path).split("-")[2] == str(os.getpid()):
            with contextlib.suppress(OSError):
                os.unlink(path)


def context_holders(index: int) -> list[int]:
    """Pids of the live processes holding a context on physical device ``index``."""
    d = _state_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return []
    pids: list[int] = []
    for name in sorted(names):
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != "ctx" or parts[1] != str(index):
            continue
        try:
            pid = int(parts[2])
        except ValueError:
            continue
        if _alive(pid, parts[3]):
            pids.append(pid)
        else:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, name))
    return pids
