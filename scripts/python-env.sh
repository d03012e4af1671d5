#!/usr/bin/env bash
# The tests' Python environment: kubernetes-validate, the official `openai` client (the API test
# against the demo system, tests/serving/openai_client.py), httpx, pytest, mypy
# and maturin (the Python SDK, scripts/python-sdk.sh). Installed once with pip
# from the pinned, hash-checked scripts/python-requirements.txt; idempotent.
# Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=scripts/python-requirements.txt
venv="${CIEL_CACHE:-$HOME/.cache/ciel}/venv-python"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv/bin/python"; exit 0
fi
echo "installing the tests' Python tools into $venv (once) ..." >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r "$requirements" >&2
"$venv/bin/python" -c "import openai, httpx, httpx2, pytest, mypy, kubernetes_validate" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
