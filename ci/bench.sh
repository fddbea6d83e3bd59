#!/usr/bin/env bash
# Run the benchmarks (python -m benchmarks); every argument is passed on, e.g.
#   bash ci/bench.sh --device gpu
# Results go to benchmarks/results/ (commit them). Env PYTHON=/path/to/python skips the venv
# (as on the offline GPU machines, see ci/test_gpu.sh); otherwise a venv with the "bench" extra
# is made on Python 3.12 (or 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
py=$(project_python bench)
exec "$py" -m benchmarks "$@"
