#!/usr/bin/env bash
# Bootstrap the project's virtual environment (idempotent) and run a command in it.
#   ./run.sh bci evaluate configs/physionet_mi.yaml    the main job
#   ./run.sh test                                       the whole test suite
# Set-up: creates .venv with the interpreter in $PYTHON (default python3) and installs the
# project with its test extras; re-installs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.install-stamp
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
# The shared recordings (read-only) are MNE's data folder unless the caller chose another.
if [ -z "${MNE_DATA:-}" ] && [ -d ../shared/data/mne_data ]; then
  export MNE_DATA="$(cd ../shared/data/mne_data && pwd)"
fi
export PATH="$PWD/.venv/bin:$PATH"
if [ "${1:-}" = "test" ]; then
  shift
  exec python -m pytest -q "$@"
fi
exec "$@"
