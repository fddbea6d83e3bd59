# Sourced by the ci/ scripts: find_python VERSION prints an interpreter for that version, and
# make_venv DIR PYTHON EXTRAS creates (or reuses) a virtualenv with the project installed.
find_python() {
  local v=$1 p
  # pyenv's shims answer `command -v` for versions they cannot run: try real paths first and
  # keep only an interpreter that actually starts.
  for p in /root/.pyenv/versions/"$v".*/bin/python"$v" /usr/local/bin/python"$v" \
           /usr/bin/python"$v" "python$v"; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "" >/dev/null 2>&1; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

make_venv() {
  local dir=$1 py=$2 extras=$3 log
  log=$(mktemp)
  if [ ! -x "$dir/bin/python" ]; then
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 || { cat "$log"; return 1; }
  fi
  # Reinstall every time: cheap when nothing changed, and it picks up new dependencies.
  # pip's output only matters when it fails.
  if ! "$dir/bin/python" -m pip install -q -e ".[$extras]" >"$log" 2>&1; then
    grep -v "is ignored" "$log"; rm -f "$log"; return 1
  fi
  rm -f "$log"
  "$dir/bin/python" -c "import sys, gds_zarr, zarr; print('venv $dir: python', sys.version.split()[0], 'zarr', zarr.__version__)"
}

# project_python EXTRAS: prints the interpreter a one-Python job uses: $PYTHON when set (the
# offline GPU machines), else a venv .venv-ci-<version>[-EXTRAS] on Python 3.12 (or 3.11) with
# the project and EXTRAS installed.
project_python() {
  local extras=$1 base v dir
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return 0; fi
  base=$(find_python 3.12 || find_python 3.11) || { echo "no supported Python found" >&2; return 1; }
  v=$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  dir=".venv-ci-$v"
  [ "$extras" = test ] || dir="$dir-$extras"
  make_venv "$dir" "$base" "$extras" >&2
  echo "$dir/bin/python"
}
