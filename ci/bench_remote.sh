#!/usr/bin/env bash
# The remote-store benchmark (python -m benchmarks.remote); every argument is passed on, e.g.
#   bash ci/bench_remote.sh --quick
# It serves the arrays with nginx (HTTP, and S3 path-style reads): Debian's nginx-light is
# installed here when missing and this shell may (root, or sudo without a password); without
# it the benchmark falls back to a Python Range server and moto, and its table says so.
# Results go to benchmarks/results/ (commit them). Env PYTHON as in ci/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/_venv.sh
if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if $sudo true 2>/dev/null; then
    echo "== installing nginx-light (Debian) for the benchmark's servers"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nginx-light >/dev/null \
      || { $sudo apt-get update -q >/dev/null && \
           DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nginx-light >/dev/null; } \
      || echo "== nginx-light could not be installed: Python servers instead"
  fi
fi
export PATH="$PATH:/usr/sbin"   # Debian puts nginx there, outside a user's PATH
py=$(project_python bench)
exec "$py" -m benchmarks.remote "$@"
