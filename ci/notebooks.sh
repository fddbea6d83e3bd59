#!/usr/bin/env bash
# Execute the notebooks on the CPU (the quickstart and the benchmarks walk-through), and check
# that they are committed without outputs. One Python: 3.12 if found, else 3.11.
# Usage: bash ci/notebooks.sh [pytest args...]     (env PYTHON=/path/to/python to skip the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
else
  base=$(find_python 3.12 || find_python 3.11) || { echo "no supported Python found"; exit 1; }
  v=$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  make_venv ".venv-ci-$v" "$base" "test"
  py=".venv-ci-$v/bin/python"
fi
GDS_ZARR_DEVICE=cpu "$py" -m pytest tests/test_notebooks.py -q -p no:cacheprovider "$@"
