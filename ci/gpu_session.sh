#!/usr/bin/env bash
# One GPU session on an offline GPU machine (H100/H200, Python 3.12, CUDA 13): install the
# carried wheels, say what the GPU path will use, run the GPU tests, the GPU benchmark and the
# CPU tests, and leave every log and result under $OUT. Run at the repository root.
#
# FIRST, on a machine with package access, at the repository root (fills .whl/, ~42 MB):
#
#   ../shared/gpu/wheels.sh tqdm deflate hypothesis sortedcontainers pytest-timeout pyyaml typing-extensions
#
# (the GPU machine has cupy-cuda13x, cuda-toolkit, nvidia-cufile, numpy, pytest and tensorstore;
# wheels.sh adds kvikio, nvCOMP, zarr, numcodecs, donfig, google-crc32c, msgspec, rapids-logger,
# pytest-asyncio; the extras are: tqdm and deflate (gds_zarr; without deflate, gzip chunks decode
# with Python's zlib), hypothesis + sortedcontainers (tests),
# pytest-timeout (per-test guard), pyyaml (donfig's) and typing-extensions (zarr's and
# numcodecs'), in case the machine lacks them. Optional test packages (xarray, pandas, dask,
# distributed, nbclient, matplotlib, dask-cuda, zarrs) are left out: their tests skip and the
# zarrs benchmark reader reports "not installed".)
#
# THEN, through the device `run` tool with carry [".whl"], in up to three calls (a command may
# run 600 s; each call stops starting stages when its budget is spent and says where to resume):
#
#   bash ci/gpu_session.sh                       # install, info, tests_gpu happy paths, bench, layout A/B
#   bash ci/gpu_session.sh --from gpu-faults     # corrupt-input and fault tests, then tests/
#   bash ci/gpu_session.sh --from full-bench     # the full GPU benchmark, as time allows
#
# Stages, most important evidence first:
#   install     .whl/*.whl -> $GDS_ZARR_SITE (default /tmp/site), skipped if already there
#   info        nvidia-smi -L, python -m gds_zarr info (text, and --json into $OUT/info.json)
#   gpu-tests   pytest tests_gpu -m "not fresh_process" (the happy paths, in one process)
#                                      -> $OUT/pytest_gpu.log, $OUT/pytest_gpu.xml
#   quick-bench python -m benchmarks --device gpu --quick -> $OUT/bench_quick.log, $OUT/bench/
#   layout-ab   the quick sharded case, gds_zarr only, with GDS_ZARR_GPU_BOUNCED_READS=host
#               (placed host reads, no gather) then =kvikio (kvikio at pages, device gather):
#               decides issue 12's layout -> $OUT/bench_layout_host.log, _kvikio.log
#   gpu-faults  pytest tests_gpu -m fresh_process (corrupt input to nvCOMP, a device fault: a
#               child process per test) -> $OUT/pytest_gpu_faults.log, .xml
#   cpu-tests   pytest tests           -> $OUT/pytest_cpu.log, $OUT/pytest_cpu.xml
#   full-bench  python -m benchmarks --device gpu       -> $OUT/bench_full.log, $OUT/bench/
#
# Options: --from STAGE (start there; earlier stages except install are skipped),
#          --only STAGE (run install and that stage), --budget SECONDS (default 570).
# Env: PYTHON (default python3), OUT (default ./gpu-session-out), GDS_ZARR_SITE.
# Without a GPU it says so, runs the CPU tests and skips the GPU benchmark; it never fails
# because a stage failed: every stage's exit status is in $OUT/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

stages=(install info gpu-tests quick-bench layout-ab gpu-faults cpu-tests full-bench)
from=install
only=""
budget=570
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for s in "$from" ${only:+"$only"}; do
  [[ " ${stages[*]} " == *" $s "* ]] || { echo "unknown stage: $s (${stages[*]})" >&2; exit 2; }
done

py=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-session-out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupy_kernel_cache}
site=${GDS_ZARR_SITE:-/tmp/site}
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
summary="$OUT/summary.txt"
: > "$summary"

note() { echo "== $*" | tee -a "$summary"; }
left() { echo $(( budget - (SECONDS - start) )); }

# want STAGE: should STAGE run in this call?
want() {
  local s=$1 i_from=-1 i=0
  for t in "${stages[@]}"; do [ "$t" = "$from" ] && i_from=$i; [ "$t" = "$s" ] && break; i=$((i+1)); done
  if [ "$s" = install ]; then return 0; fi
  if [ -n "$only" ]; then [ "$s" = "$only" ]; return; fi
  [ "$i" -ge "$i_from" ]
}

# run_stage NAME CAP_SECONDS MIN_SECONDS CMD...: run with timeout min(CAP, time left - 10 s),
# or record that it did not fit (then the next call resumes with --from NAME).
resumed=""
run_stage() {
  local name=$1 cap=$2 need=$3; shift 3
  local avail=$(( $(left) - 10 ))
  if [ "$avail" -lt "$need" ]; then
    note "$name: not started, $avail s left of the budget (resume: bash ci/gpu_session.sh --from $name)"
    [ -z "$resumed" ] && resumed=$name
    return 0
  fi
  local t=$(( cap < avail ? cap : avail )) t0=$SECONDS rc
  echo "== $name (timeout ${t}s) $(date -u +%FT%TZ)"
  timeout --kill-after=15 "$t" "$@"
  rc=$?
  note "$name: rc=$rc in $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  return 0
}

# ---------------------------------------------------------------- install
if compgen -G ".whl/*.whl" >/dev/null; then
  stamp="$site/.gds_zarr_wheels"
  want_stamp=$(ls -l .whl/*.whl | md5sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
    t0=$SECONDS
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl 2>&1 | grep -v "already exists\|WARNING: Target directory" | tail -5
    echo "$want_stamp" > "$stamp"
    note "install: $(ls .whl/*.whl | wc -l) wheels into $site in $((SECONDS - t0)) s"
  else
    note "install: $site already holds these wheels"
  fi
else
  note "install: no .whl/ here: using what $py already imports"
fi
"$py" - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
for m in ("numpy", "zarr", "numcodecs", "cupy", "kvikio", "nvidia.nvcomp", "tensorstore",
          "pytest", "pytest_asyncio", "pytest_timeout", "hypothesis", "tqdm", "yaml",
          "donfig", "zarrs", "xarray", "dask"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m:16} {getattr(mod, '__version__', '?')}  {getattr(mod, '__file__', '')}")
    except Exception as e:  # noqa: BLE001
        print(f"  {m:16} NOT IMPORTABLE: {type(e).__name__}: {str(e)[:120]}")
EOF

# ---------------------------------------------------------------- info
gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L > "$OUT/nvidia-smi-L.txt" 2>&1; then
  cat "$OUT/nvidia-smi-L.txt"
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
fi
if "$py" -c "from gds_zarr._device import gpu_status as g; s = g(); print('gpu_status:', s.reason); raise SystemExit(0 if s.usable else 1)" 2>&1 | tee -a "$summary"; then
  gpu=1
else
  note "NO GPU: the GPU path cannot run here (reason above); tests_gpu will skip, the GPU benchmark is skipped, the CPU tests still run"
fi
if want info; then
  run_stage info 90 20 bash -c '
    "$0" -m gds_zarr info 2>&1 | tee "$OUT/info.txt"
    "$0" -m gds_zarr info --json > "$OUT/info.json" 2> "$OUT/info_json.err"' "$py"
fi

# ---------------------------------------------------------------- tests
timeout_args=()
if "$py" -c "import pytest_timeout" >/dev/null 2>&1; then
  timeout_args=(--timeout=180)   # a hung test fails (SIGALRM) and the run goes on
fi
pytest_stage() {  # pytest_stage NAME CAP MIN LOGNAME PATHS...
  local name=$1 cap=$2 need=$3 log=$4; shift 4
  run_stage "$name" "$cap" "$need" bash -c '
    log=$1; shift
    "$0" -m pytest "$@" 2>&1 | tee "$OUT/$log.log"
    rc=${PIPESTATUS[0]}
    grep -E "^(FAILED|ERROR) " "$OUT/$log.log" | head -50 > "$OUT/$log.failures.txt"
    exit "$rc"' "$py" "$log" -q -p no:cacheprovider -rfE "${timeout_args[@]}" \
      --junitxml="$OUT/$log.xml" -o junit_family=xunit2 "$@"
  tail -n 1 "$OUT/$log.log" 2>/dev/null | sed "s/^/   $name: /" | tee -a "$summary"
}
if want gpu-tests; then
  # Happy paths first: a test that feeds nvCOMP corrupt data cannot take them down with it.
  pytest_stage gpu-tests 330 60 pytest_gpu tests_gpu -m "not fresh_process"
fi

# ---------------------------------------------------------------- benchmarks
bench_stage() {  # bench_stage NAME CAP MIN LOGNAME ARGS...
  local name=$1 cap=$2 need=$3 log=$4; shift 4
  if [ "$gpu" != 1 ]; then
    note "$name: skipped (no usable GPU)"
    return 0
  fi
  run_stage "$name" "$cap" "$need" bash -c '
    log=$1; shift
    "$0" -m benchmarks "$@" 2>&1 | tee "$OUT/$log.log"
    exit "${PIPESTATUS[0]}"' "$py" "$log" --device gpu --out "$OUT/bench" \
      --data /tmp/gds_zarr-bench "$@"
}
if want quick-bench; then
  bench_stage quick-bench 240 90 bench_quick --quick --case-timeout 60
fi
if want layout-ab; then
  for mode in host kvikio; do
    export GDS_ZARR_GPU_BOUNCED_READS=$mode
    bench_stage "layout-ab-$mode" 90 30 "bench_layout_$mode" --quick --cases sharded \
      --readers gds_zarr --case-timeout 60
  done
  unset GDS_ZARR_GPU_BOUNCED_READS
fi
if want gpu-faults; then
  # ~40 child processes of a few seconds each (start, CuPy, one test): the stage gets room.
  pytest_stage gpu-faults 450 120 pytest_gpu_faults tests_gpu -m fresh_process
fi
if want cpu-tests; then
  pytest_stage cpu-tests 480 120 pytest_cpu tests
fi
if want full-bench; then
  # Each reader gets at most 150 s per case so that one slow peer cannot eat the call.
  bench_stage full-bench 560 180 bench_full --case-timeout 150
fi

echo
echo "================ summary ($((SECONDS - start)) s; files under $OUT)"
cat "$summary"
for f in "$OUT"/pytest_*.failures.txt; do
  [ -s "$f" ] && { echo "--- $(basename "$f")"; cat "$f"; }
done
[ -n "$resumed" ] && echo "next call: bash ci/gpu_session.sh --from $resumed"
exit 0
