#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, nightly) and runs each for a few
# seconds from its checked-in seed corpus. Longer runs:
#   FUZZ_SECONDS=600 ./scripts/fuzz-smoke.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
secs="${FUZZ_SECONDS:-5}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzzing needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    banner "Installing cargo-fuzz (once)"
    cargo +nightly install --locked --quiet cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
banner "Building ${#targets[@]} fuzz targets"
(cd fuzz && cargo +nightly fuzz build -O)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    printf '  %-16s ' "$t"
    # New inputs go to a scratch corpus; the checked-in seeds stay untouched.
    if (cd fuzz && cargo +nightly fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1) >"$work/$t.log" 2>&1; then
        grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/$t.log" | awk '{print $2 " runs, no finding"}'
    else
        echo "FINDING (or build failure):"
        tail -n 40 "$work/$t.log"
        exit 1
    fi
done
