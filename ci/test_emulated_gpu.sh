#!/usr/bin/env bash
# The GPU path on the emulated CUDA device (tests/emulated_gpu/: stand-ins for CuPy, kvikio and
# nvCOMP): every test in tests_gpu/, with statement coverage of the GPU modules printed per
# module and held to the floors below. A pass here is not a GPU run: see docs/gpu_decode.md.
#
# Usage: bash ci/test_emulated_gpu.sh [pytest args...]     (env PYTHON=... to skip the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
start=$(date +%s)
# Its own venv: the test extra plus dask-cuda (tests_gpu/test_dask_cuda.py), which pins dask.
py=$(project_python test,test-multigpu)
root=$PWD
export GDS_ZARR_TEST_DEVICE=emulated
export PYTHONPATH="$root/tests/emulated_gpu${PYTHONPATH:+:$PYTHONPATH}"
# Compiled kernels are cached per checkout (a clean clone compiles them once, ~1 s each).
export EMULATED_GPU_CACHE="${EMULATED_GPU_CACHE:-$root/.emulated-gpu-cache}"
cov_dir="$root/.emulated-gpu-coverage"
rm -rf "$cov_dir" && mkdir -p "$cov_dir"
cat > "$cov_dir/rc" <<RC
[run]
source = gds_zarr
parallel = True
data_file = $cov_dir/data
RC
# Child processes (tests marked fresh_process) are measured too: coverage starts in every
# interpreter that sees COVERAGE_PROCESS_START, through a .pth file in a private directory.
mkdir -p "$cov_dir/site"
echo "import coverage; coverage.process_startup()" > "$cov_dir/site/gdsz_coverage.pth"
export COVERAGE_PROCESS_START="$cov_dir/rc"
# sys.monitoring (Python >= 3.12): a fraction of the tracer's overhead on this leg.
export COVERAGE_CORE="${COVERAGE_CORE:-sysmon}"
site=$("$py" -c "import site; print(site.getsitepackages()[0])")
cp "$cov_dir/site/gdsz_coverage.pth" "$site/gdsz_coverage.pth"
trap 'rm -f "$site/gdsz_coverage.pth"' EXIT

echo "== tests_gpu/ on the emulated device ($("$py" -c 'import cupy; print(cupy.__file__)'))"
status=0
"$py" -m pytest tests_gpu -q -p no:cacheprovider "$@" || status=$?

"$py" -m coverage combine --rcfile "$cov_dir/rc" -q "$cov_dir" >/dev/null 2>&1 || true
echo "== statements run on the emulated device, per GPU module (floor in brackets)"
"$py" - "$cov_dir/rc" <<'PY' || status=1
import sys

import coverage

# Issue 18 asks for 95% everywhere; 99-100% run today (two lines no test can reach, named in
# the closing note of issue 18).
FLOORS = {
    "gds_zarr/decode/_gpu.py": 97, "gds_zarr/decode/_blosc_gpu.py": 97,
    "gds_zarr/decode/_scatter_gpu.py": 97, "gds_zarr/io/_gpu.py": 97,
    "gds_zarr/io/_remote_gpu.py": 97, "gds_zarr/pipeline/_gpuread.py": 97,
    "gds_zarr/pipeline/_caller.py": 97,
}
cov = coverage.Coverage(config_file=sys.argv[1])
cov.load()
data = cov.get_data()
low = []
for rel, floor in FLOORS.items():
    match = [f for f in data.measured_files() if f.endswith(rel)]
    if not match:
        print(f"  {rel:36s}   0.0%  [{floor}]  (never imported)")
        low.append(rel)
        continue
    _, statements, _, missing, _ = cov.analysis2(match[0])
    pct = 100.0 * (len(statements) - len(missing)) / max(1, len(statements))
    print(f"  {rel:36s} {pct:5.1f}%  [{floor}]  {len(missing)} of {len(statements)} not run")
    if pct < floor:
        low.append(rel)
if low:
    sys.exit(f"below the floor: {', '.join(low)}")
PY
echo "== emulated GPU leg done in $(( $(date +%s) - start )) s"
exit "$status"
