#!/usr/bin/env bash
# Bootstrap the project's virtual environment (idempotent) and run a command in it.
#   ./run.sh bci evaluate configs/physionet_mi.yaml    the main job
#   ./run.sh test                                       the whole test suite
# Set-up: creates .venv with the interpreter in $PYTHON (default python3) and installs the
# project with its test extras at exactly the versions in requirements.lock (pip constraints);
# re-installs only when pyproject.toml or requirements.lock changes.
# Refresh the lock after changing pyproject.toml's dependencies (needs `pip install uv`):
#   uv pip compile pyproject.toml --extra test --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.install-stamp
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock packaging
  .venv/bin/python .ci/check_lock.py pyproject.toml requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
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
