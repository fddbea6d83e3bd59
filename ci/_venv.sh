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
  local dir=$1 py=$2 extras=$3
  if [ ! -x "$dir/bin/python" ]; then
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  fi
  # Reinstall every time: cheap when nothing changed, and it picks up new dependencies.
  "$dir/bin/python" -m pip install -q -e ".[$extras]" 2>&1 | grep -v -e "is ignored" -e '^ *$' || true
  "$dir/bin/python" -c "import gds_zarr, zarr; print('venv', '$dir', 'python', __import__('sys').version.split()[0], 'zarr', zarr.__version__)"
}
