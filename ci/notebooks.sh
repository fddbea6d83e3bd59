#!/usr/bin/env bash
# Execute the notebooks on the CPU (the quickstart and the benchmarks walk-through), and check
# that they are committed without outputs. One Python: 3.12 if found, else 3.11.
# Usage: bash ci/notebooks.sh [pytest args...]     (env PYTHON=/path/to/python to skip the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
py=$(project_python test)
GDS_ZARR_DEVICE=cpu "$py" -m pytest tests/test_notebooks.py -q -p no:cacheprovider "$@"
