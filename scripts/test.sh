#!/usr/bin/env bash
# The test command of the README: sets up everything on a fresh machine (Python 3.11 + pip) in
# .venv, installs embedzoo, its test dependencies and every plugin under plugins/ (through
# `embedzoo install`, as a user would), then runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${EMBEDZOO_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" -e ".[test]"
# hearvalidator asks for the full `tensorflow`; tensorflow-cpu (a test extra) is all it needs.
"${PIP[@]}" --no-deps hearvalidator==2021.0.2
# heareval pins numpy 1.19 / numba 0.48 and xares pulls its whole trainer (transformers, ...): the
# tests use heareval's writer, reader and predictor and xares's encoder checker, whose imports are
# in the test extra.
"${PIP[@]}" --no-deps heareval==2021.1.3 xares==0.1.3
for plugin in plugins/embedzoo-*/; do
  "$VENV/bin/embedzoo" install --editable "$(basename "$plugin")" >/dev/null
  # the plugin's parity references (hear21passt, panns-hear, ...) are its `test` extra
  if grep -q '^test *=' "$plugin/pyproject.toml"; then "${PIP[@]}" -e "${plugin%/}[test]"; fi
done
export PYTHONUNBUFFERED=1
# one worker per core (EMBEDZOO_TEST_WORKERS=0 runs in-process); a module's tests stay on one
# worker, so its reference model is built once
WORKERS="${EMBEDZOO_TEST_WORKERS:-$(nproc)}"
PARALLEL=()
if [ "$WORKERS" != 0 ]; then
  PARALLEL=(-n "$WORKERS" --dist loadfile)
  # share the cores between the workers instead of each torch taking them all
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))}"
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "${PARALLEL[@]}" "$@"
