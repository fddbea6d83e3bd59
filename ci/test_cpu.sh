#!/usr/bin/env bash
# CPU test suite on every supported Python found here: 3.11 (zarr 3.1.x) and 3.12 (newest zarr).
# Usage: bash ci/test_cpu.sh [pytest args...]      (env PYTHONS="3.11 3.12" to choose)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
status=0
ran=0
for v in ${PYTHONS:-3.11 3.12}; do
  if ! py=$(find_python "$v"); then
    echo "== Python $v not found: skipped"; continue
  fi
  echo "== Python $v ($py)"
  make_venv ".venv-ci-$v" "$py" "test"
  if [ "$ran" -eq 0 ]; then
    echo "== ruff (lint rules in pyproject.toml)"
    ".venv-ci-$v/bin/ruff" check . --exclude ".venv*" || status=1
  fi
  ran=$((ran + 1))
  # tests_gpu/ skip cleanly without a GPU; they run here so their imports and skips are checked.
  ".venv-ci-$v/bin/python" -m pytest tests tests_gpu -q -p no:cacheprovider "$@" || status=$?
done
if [ "$ran" -eq 0 ]; then echo "no supported Python found"; exit 1; fi
exit "$status"
