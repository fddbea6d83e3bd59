#!/usr/bin/env bash
# GPU test suite: tests_gpu/ (happy paths, then fault tests) then tests/, on a GPU machine.
# Usage: bash ci/test_gpu.sh [pytest args...]
#
# Installing, in this order:
# - wheels in .whl/ (made by shared/gpu/wheels.sh on a machine with package access, for the
#   offline GPU machines): installed with --no-index into $GDS_ZARR_SITE (default /tmp/site),
#   the project imported from the working tree (PYTHONPATH), as shared/gpu/README.md describes;
# - otherwise, if gds_zarr does not import: pip install -e ".[test,$GDS_ZARR_CUDA_EXTRA]"
#   (default extra cu12; cu13 for a CUDA 13 driver);
# - otherwise what is installed is used as it is.
# Env PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  site=${GDS_ZARR_SITE:-/tmp/site}
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$py" -c "import gds_zarr" >/dev/null 2>&1; then
  "$py" -m pip install -q -e ".[test,${GDS_ZARR_CUDA_EXTRA:-cu12}]"
fi
nvidia-smi -L || echo "nvidia-smi: not available"
"$py" -m gds_zarr info || true
# Happy paths first, in one process; then the tests that feed nvCOMP corrupt data or fault the
# device, each in a child process (tests_gpu/conftest.py); then the CPU suite.
status=0
"$py" -m pytest tests_gpu -m "not fresh_process" -q -p no:cacheprovider "$@" || status=1
"$py" -m pytest tests_gpu -m fresh_process -q -p no:cacheprovider "$@" || status=1
"$py" -m pytest tests -q -p no:cacheprovider "$@" || status=1
exit "$status"
