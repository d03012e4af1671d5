#!/usr/bin/env bash
# The Python SDK (python/): its wheel built with maturin (from the pinned
# tests' environment, scripts/python-env.sh) and installed into that
# environment, for its pytest suite (run by tests/serving). Rebuilt on every
# run (cargo's incremental build keeps that quick). Prints the python.
#
# A user installs the SDK with `pip install ./python` instead (a release
# build; see python/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(./scripts/python-env.sh)
bin=$(dirname "$python")
wheels=target/python/wheels
rm -rf "$wheels"
echo "building the Python SDK's wheel (maturin) ..." >&2
# From python/, so that python/.cargo/config.toml applies (a portable
# x86-64 build in target/python).
(cd python && "$bin/maturin" build --locked --profile dev --interpreter "$python" \
    --out "../$wheels" >&2)
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
    --force-reinstall "$wheels"/ciel-*.whl >&2
"$python" -c "import ciel" >&2
echo "$python"
