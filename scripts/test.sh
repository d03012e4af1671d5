#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_toolchain

# Disk, said first: a full disk otherwise shows only as a compiler error deep
# in the log. One clean run takes ~13 GiB of build outputs.
disk_free() { df -Pk . | awk 'NR==2 { printf "%.1f", $4 / 1048576 }'; }
echo "disk: $(disk_free) GiB free for target/ and caches (a clean run needs about 20 GiB: ~13 for builds, ~7 for models and tools)"

banner "Formatting"
cargo fmt --all -- --check

banner "Lints (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

banner "Real models (the engine's llama.cpp comparisons; cached after the first fetch)"
./scripts/fetch-model.sh smollm2 >/dev/null
./scripts/fetch-model.sh gemma3 >/dev/null
./scripts/fetch-model.sh minilm >/dev/null

banner "Python: the official openai client, httpx, pytest (pinned, hash-checked; cached), and the Python SDK's wheel (maturin)"
CIEL_OPENAI_PYTHON=$(./scripts/python-env.sh)
CIEL_SDK_PYTHON=$(./scripts/python-sdk.sh)
export CIEL_OPENAI_PYTHON CIEL_SDK_PYTHON

banner "Python SDK type hints (mypy --strict)"
"$CIEL_SDK_PYTHON" -m mypy --strict --no-incremental python/ciel

banner "Unit, property and end-to-end tests"
cargo test --workspace --locked --no-fail-fast

banner "VM boot test (the image under QEMU TCG, virtio-vsock to the host shim)"
# (An assignment, so that a failing installer stops the suite here.)
vm_env=$(./scripts/vm-assets.sh)
eval "$vm_env"
cargo test --locked --test vm_boot -- --ignored --nocapture

banner "Container image (rebuilt to the same digest; under podman, a simulated Kata CoCo pod answers)"
container_env=$(./scripts/container-assets.sh)
eval "$container_env"
cargo test --locked --test oci_image -- --ignored --nocapture

banner "Kubernetes manifests (kubectl kustomize, kubernetes-validate against 1.37, what matters)"
ensure_deb kubectl kubernetes-client
CIEL_KUBECTL=$(command -v kubectl) CIEL_TEST_PYTHON="$CIEL_OPENAI_PYTHON" \
    cargo test --locked --test k8s_manifests -- --ignored

banner "Azure vTPM collection in the guest against a real TPM 2.0 (swtpm, provisioned with tpm2-tools like Azure's paravisor)"
ensure_deb swtpm swtpm
ensure_deb tpm2_nvdefine tpm2-tools
CIEL_SWTPM=$(command -v swtpm) cargo test --locked -p ciel-enclave --test vtpm_swtpm -- --ignored

banner "Key broker with its master key in an HSM (SoftHSM2 through PKCS#11)"
ensure_deb softhsm2-util softhsm2
CIEL_PKCS11_MODULE=$(dpkg -L libsofthsm2 | grep -m1 '/libsofthsm2\.so$') \
    cargo test --locked --test hsm_key_store -- --ignored

banner "Key broker replicas on one PostgreSQL database (two replicas, one killed mid-flow)"
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/ciel-pg.XXXXXX")
pg_env=$(./scripts/postgres.sh start "$pg_dir")
trap './scripts/postgres.sh stop "$pg_dir" || true; rm -rf "$pg_dir"' EXIT
CIEL_POSTGRES_URL=$(sed -n 1p <<<"$pg_env") CIEL_POSTGRES_PASSWORD_FILE=$(sed -n 2p <<<"$pg_env") \
    cargo test --locked --test key_release replicas -- --ignored

banner "Trustee interoperability (Trustee's kbs-client against ciel's broker, ciel's guest client against Trustee's KBS)"
# Trustee is not on the crate registries. Its kbs-client and KBS are built
# once, by hand, from its public sources (scripts/trustee-build.sh, the
# README says how); this runs what has been built and says loudly what did
# not run, rather than spend the test run building another project.
if kbs_client=$(./scripts/trustee-build.sh --cached kbs-client) &&
    policies=$(./scripts/trustee-build.sh policies); then
    CIEL_TRUSTEE_KBS_CLIENT=$kbs_client CIEL_TRUSTEE_POLICIES=$policies \
        cargo test --locked --test trustee_interop -- --ignored trustees_kbs_client trustees_own_resource_policies
    if trustee_kbs=$(./scripts/trustee-build.sh --cached kbs); then
        CIEL_TRUSTEE_KBS_CLIENT=$kbs_client CIEL_TRUSTEE_KBS=$trustee_kbs \
            cargo test --locked --test trustee_interop -- --ignored ciels_guest_client
    else
        echo "WARNING: ciel's client against Trustee's KBS NOT RUN: Trustee's KBS is not built here (scripts/trustee-build.sh kbs)" >&2
    fi
else
    echo "WARNING: Trustee interop tests NOT RUN: Trustee's kbs-client (or its sources) is not here (scripts/trustee-build.sh kbs-client)" >&2
fi

banner "Fuzz smoke run (every parser of untrusted bytes, a few seconds each)"
./scripts/fuzz-smoke.sh

banner "Supply chain (cargo deny: licenses, bans, sources, advisories)"
ensure_cargo_deny
cargo deny --locked check licenses bans sources
# The advisory database is a git repository outside the package registries;
# where it cannot be fetched (sandboxed CI), say so loudly rather than pass silently.
if cargo deny --locked fetch db >/dev/null 2>&1; then
    cargo deny --locked check advisories
else
    echo "WARNING: advisories NOT checked: the RustSec advisory database could not be fetched from this machine" >&2
fi

banner "Disk"
echo "build outputs: $(du -sh target fuzz/target 2>/dev/null | awk '{ printf "%s %s  ", $2, $1 }'); $(disk_free) GiB left"
