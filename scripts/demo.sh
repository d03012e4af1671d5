#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine: build ciel, verify real
# hardware attestation evidence (AMD SEV-SNP, Intel TDX, NVIDIA H100)
# bundled in the repository, then `ciel demo`: seal the demo model, start the
# key broker, the host shim and the guest, verify the guest from the client
# and stream an answer (simulated platform: no confidentiality).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_toolchain

banner "Building ciel (release)"
cargo build --release --locked --bin ciel
ciel=target/release/ciel
td=attestation/testdata

banner "1. A real AMD SEV-SNP report (Genoa, v5), VCEK chain to the pinned AMD ARK"
$ciel attest verify $td/snp/genoa_oc.report.bin --vcek $td/snp/genoa_oc.vcek.der --at 2025-10-01T08:00:00Z

banner "2. A real Intel TDX quote (v4) with offline collateral, chain to the pinned Intel SGX root"
$ciel attest verify $td/tdx/tdx_quote --collateral $td/tdx/tdx_quote_collateral.json --at 2025-07-01T00:00:00Z

banner "3. A real NVIDIA H100 attestation report, chain to the pinned NVIDIA device root"
$ciel attest verify $td/gpu/hopperAttestationReport.txt --gpu-cert-chain $td/gpu/hopper_cert_chain_case1.txt \
    --at 2025-10-01T00:00:00Z | head -n 8

banner "4. The same Genoa report, one byte of the measurement flipped: rejected"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$td/snp/genoa_oc.report.bin" "$tmp/tampered.bin" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[0x90] ^= 1
open(sys.argv[2], "wb").write(b)
PY
if $ciel attest verify "$tmp/tampered.bin" --vcek $td/snp/genoa_oc.vcek.der --at 2025-10-01T08:00:00Z | head -n 5; then
    echo "tampered report was accepted: this is a bug" >&2; exit 1
fi

banner "5. Simulated SEV-SNP evidence (no hardware, no confidentiality)"
export CIEL_DATA_DIR="$tmp/data"
$ciel attest sim-report --platform snp --report-data 00112233 --out "$tmp/sim.bin"
echo "-- with no policy, the simulated root is not trusted:"
$ciel attest verify "$tmp/sim.bin" --vcek "$tmp/sim.bin.vcek.der" --cert-chain "$tmp/sim.bin.chain.pem" | head -n 5 || true
fp=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$tmp/data/sim/snp/ark.der")
printf 'danger_simulated_roots = ["%s"]\nreport_data = "00112233"\n' "$fp" > "$tmp/policy.toml"
echo "-- with a policy that names it:"
$ciel attest verify "$tmp/sim.bin" --vcek "$tmp/sim.bin.vcek.der" --cert-chain "$tmp/sim.bin.chain.pem" \
    --policy "$tmp/policy.toml" | head -n 5

banner "6. The whole system: key broker, untrusted host and guest with two GPUs as separate processes (simulated platform — NO confidentiality)"
$ciel demo --gpus sim:2

banner "Done: every verdict above was computed now, from the bytes: real evidence against pinned vendor roots, simulated evidence only because a policy named its root."
