#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_toolchain

banner "Formatting"
cargo fmt --all -- --check

banner "Unit, property and end-to-end tests"
cargo test --workspace --locked --no-fail-fast

banner "Supply chain (cargo deny: advisories, licenses, bans, sources)"
ensure_cargo_deny
if [ "${CIEL_OFFLINE_ADVISORIES:-0}" = 1 ]; then
    cargo deny --locked check --disable-fetch licenses bans sources
else
    cargo deny --locked check licenses bans sources advisories
fi
