#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine: build ciel, verify real
# hardware attestation evidence (AMD SEV-SNP, Intel TDX, NVIDIA H100)
# bundled in the repository, then run the owner → key broker → guest path
# with a sealed model on the simulated platform.
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

banner "6. Sealed model, attested key release, inference (simulated guest — NO confidentiality)"
model=$(./scripts/fetch-model.sh)
$ciel kbs init "$tmp/kbs" 2>/dev/null
root_line="danger_simulated_roots = [\"$fp\"]"
measurement=$(python3 -c 'import hashlib; print(hashlib.sha384(b"ciel simulated guest").hexdigest())')
printf '%s\n[snp]\nmeasurements = ["%s"]\n' "$root_line" "$measurement" > "$tmp/kbs/model.policy.toml"
sed -i "s|^# danger_simulated_roots = .*|$root_line|" "$tmp/kbs/kbs.toml"
printf '[[resource]]\npath = "default/model-key/smollm2"\npolicy_file = "model.policy.toml"\n' >> "$tmp/kbs/kbs.toml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$ciel kbs serve --config "$tmp/kbs/kbs.toml" --listen "127.0.0.1:$port" \
    --tls-cert "$tmp/kbs/tls.pem" --tls-key "$tmp/kbs/tls.key" 2> "$tmp/kbs.log" &
kbs_pid=$!
trap 'kill $kbs_pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "-- the owner seals the model and registers its key at the broker:"
$ciel seal --in "$model" --out "$tmp/model.csm" --resource default/model-key/smollm2 \
    --kbs "https://127.0.0.1:$port" --admin-key "$tmp/kbs/admin.key" --kbs-ca "$tmp/kbs/tls-ca.pem"
$ciel inspect "$tmp/model.csm"
echo "-- the guest attests, receives the key, unseals in memory and answers:"
RUST_LOG=warn $ciel enclave boot --sim --kbs "https://127.0.0.1:$port" --kbs-ca "$tmp/kbs/tls-ca.pem" \
    --model "$tmp/model.csm" --prompt "Explain in a few sentences why the sky is blue." --max-tokens 60
echo "-- the broker's audit log:"
cut -c1-200 "$tmp/kbs/audit.jsonl"

banner "Done: every verdict above was computed now, from the bytes: real evidence against pinned vendor roots, simulated evidence only because a policy named its root."
