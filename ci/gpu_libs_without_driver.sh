#!/usr/bin/env bash
# GPU libraries installed, no NVIDIA driver: gds_zarr must still import, `auto` must fall back
# to the CPU with a clear reason, `gpu` must be a clear error naming what is missing, and the
# whole test suite must pass (tests_gpu skipping cleanly).
#
# Usage: bash ci/gpu_libs_without_driver.sh [pytest args...]
#   env EXTRA=cu12|cu13 (default cu12), PYVER=3.12|3.11 (default 3.12),
#       VENV=dir (default .venv-ci-$EXTRA, created fresh each run; KEEP_VENV=1 reuses it).
# Downloads ~1.5 GB of wheels on a cold pip cache and needs ~3 GB of disk for the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh

extra=${EXTRA:-cu12}
venv=${VENV:-.venv-ci-$extra}
pyver=${PYVER:-3.12}
# pyenv's shims answer `command -v pythonX.Y` even when they cannot run it: try real paths first.
py=$(ls /root/.pyenv/versions/"$pyver".*/bin/python"$pyver" 2>/dev/null | tail -1)
if [ -z "$py" ] || ! "$py" -V >/dev/null 2>&1; then
  py=$(find_python "$pyver") || { echo "Python $pyver not found"; exit 1; }
fi

if [ -e /dev/nvidiactl ] || python3 -c "import ctypes; ctypes.CDLL('libcuda.so.1')" 2>/dev/null; then
  echo "== an NVIDIA driver is present here: this job checks the no-driver case; skipped"
  exit 0
fi

start=$(date +%s)
[ "${KEEP_VENV:-0}" = 1 ] || rm -rf "$venv"
make_venv "$venv" "$py" "$extra,test"
echo "== venv ready in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)"
pyv="$venv/bin/python"

echo "== what the GPU libraries do without a driver"
"$pyv" - <<'PY'
import importlib
for name, probe in (
    ("cupy", lambda m: m.cuda.runtime.getDeviceCount()),
    ("kvikio", lambda m: m.__version__),
    ("nvidia.nvcomp", lambda m: m.__version__),
    ("pynvml", lambda m: m.nvmlInit()),
):
    try:
        mod = importlib.import_module(name)
        print(f"  import {name}: ok;", end=" ")
        print(f"probe -> {probe(mod)!r}")
    except Exception as e:
        print(f"{type(e).__module__}.{type(e).__name__}: {e}")
PY

echo "== gds-zarr info --json: auto must fall back to the CPU with a reason"
"$pyv" -m gds_zarr info --json > "$venv/info.json"
"$pyv" - "$venv/info.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))  # fails if native output leaked into stdout
d = r["device"]
print(f"  device: {d['requested']} -> {d['device']}: {d['reason']}")
assert r["cupy"]["importable"] and r["kvikio"]["importable"] and r["nvcomp"]["importable"], r
assert d["requested"] == "auto" and d["device"] == "cpu", d
assert d["reason"].startswith("auto fell back to the CPU: no NVIDIA driver"), d["reason"]
assert r["kvikio"]["gds_available"] is False, r["kvikio"]
# What kvikio will actually do: compat mode (no cuFile driver), whatever GDS "availability" says.
assert r["kvikio"]["compat_mode_preferred"] is True, r["kvikio"]
print(f"  kvikio {r['kvikio']['version']}, compat_mode={r['kvikio']['compat_mode']}, "
      f"nvCOMP {r['nvcomp']['version']}, CuPy {r['cupy']['version']}")
PY

echo "== GDS_ZARR_DEVICE=gpu must be a clear DeviceUnavailableError naming the driver"
GDS_ZARR_DEVICE=gpu "$pyv" - <<'PY'
import gds_zarr
from gds_zarr.errors import DeviceUnavailableError
try:
    gds_zarr.resolve_device()
except DeviceUnavailableError as e:
    print(f"  DeviceUnavailableError: {e}")
    assert "no NVIDIA driver" in str(e) and "libcuda.so.1" in str(e), e
else:
    raise SystemExit("GDS_ZARR_DEVICE=gpu did not raise without a driver")
PY
if GDS_ZARR_DEVICE=gpu "$pyv" -m gds_zarr demo --shape 64x64 --repeat 1 2> "$venv/demo.err"; then
  echo "demo --device gpu succeeded without a driver"; exit 1
fi
echo "  demo: $(cat "$venv/demo.err")"

echo "== demo on auto (falls back to the CPU)"
"$pyv" -m gds_zarr demo --shape 512x512 --repeat 1

echo "== the whole suite with the GPU libraries installed (tests_gpu must skip cleanly)"
"$pyv" -m pytest tests tests_gpu -q -p no:cacheprovider "$@"
echo "== done in $(( $(date +%s) - start )) s"
