#!/usr/bin/env bash
# A virtual environment with the official `openai` Python client, for the API
# test against the demo system (tests/serving/openai_client.py). Installed
# once with pip from the pinned, hash-checked scripts/openai-requirements.txt;
# idempotent. Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=scripts/openai-requirements.txt
venv="${CIEL_CACHE:-$HOME/.cache/ciel}/venv-openai"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv/bin/python"; exit 0
fi
echo "installing the openai Python client into $venv (once) ..." >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r "$requirements" >&2
"$venv/bin/python" -c "import openai" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
