#!/usr/bin/env bash
# Builds Trustee's kbs-client, or Trustee's KBS itself, from the public
# sources of confidential-containers/trustee (and the repositories its
# manifests name), for the key broker's interoperability tests. Trustee is
# not on the crate registries; its git sources must be on this machine:
#
#   TRUSTEE_SRC            a git directory holding trustee commit $TRUSTEE_REV
#   GUEST_COMPONENTS_SRC   a git directory holding guest-components $GC_REV
#   CORIM_SRC, SEV_SRC     (kbs only) veraison/corim-rs and virtee/sev at the
#                          commits Trustee's manifests pin
#
# (the developers' tools put them under /work/.mirror/…; `git clone` of the
# public repositories works as well).
#
#   scripts/trustee-build.sh [kbs-client]   prints the path of kbs-client
#   scripts/trustee-build.sh kbs            prints the path of Trustee's kbs
#   scripts/trustee-build.sh policies       prints the directory of Trustee's
#                                           sample resource policies (*.rego)
#
# Cached: a second run prints the path at once. Only crates come from the
# registry. With --cached it only prints what an earlier run built (exit 3
# when there is none): the test command uses that, so that a machine that
# happens to hold the sources never spends its test run building Trustee
# (kbs-client ~6 min, the KBS ~35 min on 2 vCPUs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

cached_only=false
if [ "${1:-}" = --cached ]; then
    cached_only=true
    shift
fi
product=${1:-kbs-client}
case "$product" in
kbs-client | kbs | policies) ;;
*)
    echo "usage: $0 [--cached] [kbs-client|kbs|policies]" >&2
    exit 2
    ;;
esac

# The trustee commit, and the commits its manifests pin.
TRUSTEE_REV=78962cd416dcc8a32f9377e0066a28fe21420f69
GC_REV=da8d93f2797088a5f0636c8c1eeb31da73784fe8
CORIM_REV=8d297d090521e1a8ee40c6a8bda97ff708e7302c
SEV_REV=d487809188c3c92e397bc92e2cb2a85eb982c980

mirror=/work/.mirror
TRUSTEE_SRC=${TRUSTEE_SRC:-$mirror/confidential-containers+trustee/repo}
GUEST_COMPONENTS_SRC=${GUEST_COMPONENTS_SRC:-$mirror/confidential-containers+guest-components/repo}
CORIM_SRC=${CORIM_SRC:-$mirror/veraison+corim-rs/repo}
SEV_SRC=${SEV_SRC:-$mirror/virtee+sev/repo}

cache="${CIEL_CACHE:-$HOME/.cache/ciel}/trustee/${TRUSTEE_REV:0:12}"
bin="$cache/$product"
if [ -e "$bin" ]; then
    echo "$bin"
    exit 0
fi
if $cached_only; then
    echo "trustee-build: no $product built here yet (run scripts/trustee-build.sh $product)" >&2
    exit 3
fi

sources=("$TRUSTEE_SRC:$TRUSTEE_REV")
case "$product" in
kbs-client) sources+=("$GUEST_COMPONENTS_SRC:$GC_REV") ;;
kbs) sources+=("$GUEST_COMPONENTS_SRC:$GC_REV" "$CORIM_SRC:$CORIM_REV" "$SEV_SRC:$SEV_REV") ;;
esac
for src in "${sources[@]}"; do
    dir=${src%%:*} rev=${src##*:}
    if ! git --git-dir="$dir" cat-file -e "$rev^{commit}" 2>/dev/null; then
        echo "trustee-build: $dir does not hold commit $rev." >&2
        echo "  Bring the public sources here first (confidential-containers/trustee," >&2
        echo "  confidential-containers/guest-components; for kbs also veraison/corim-rs" >&2
        echo "  and virtee/sev), then set TRUSTEE_SRC, GUEST_COMPONENTS_SRC, CORIM_SRC and" >&2
        echo "  SEV_SRC to their git directories." >&2
        exit 2
    fi
done
if [ "$product" = policies ]; then
    # Data, not a build: Trustee's own resource policies, as its sources hold them.
    mkdir -p "$bin.tmp"
    git --git-dir="$TRUSTEE_SRC" archive "$TRUSTEE_REV" kbs/sample_policies |
        tar -x -C "$bin.tmp" --strip-components=2
    mv "$bin.tmp" "$bin"
    echo "$bin"
    exit 0
fi
ensure_toolchain
ensure_deb protoc protobuf-compiler

work="$cache.$product.work"
rm -rf "$work"
mkdir -p "$cache"
mkdir -p "$work/TR" "$work/GC"
git --git-dir="$TRUSTEE_SRC" archive "$TRUSTEE_REV" | tar -x -C "$work/TR"
git --git-dir="$GUEST_COMPONENTS_SRC" archive "$GC_REV" | tar -x -C "$work/GC"

build_kbs_client() {
    # kbs-client outside Trustee's workspace, so cargo resolves only what it
    # needs (no git dependencies). It sits two levels below the tree because
    # its main.rs includes ../../../kbs/sample_policies/*.rego.
    local standalone="$work/TR/tools/kbsc-standalone"
    mkdir -p "$standalone"
    cp -r "$work/TR/tools/kbs-client/src" "$standalone/"
    cat >"$standalone/Cargo.toml" <<EOF
[package]
name = "kbs-client"
version = "0.1.0"
edition = "2021"

[[bin]]
name = "kbs-client"
path = "src/main.rs"

[lib]
path = "src/lib.rs"

[dependencies]
anyhow = "1"
base64 = "0.22"
clap = { version = "4", features = ["derive"] }
jsonwebtoken = { version = "10", default-features = false, features = ["use_pem", "rust_crypto"] }
kbs_protocol = { path = "$work/GC/attestation-agent/kbs_protocol", default-features = false, features = ["background_check", "passport", "rust-crypto"] }
reqwest = { version = "0.12", default-features = false, features = ["cookies", "json", "rustls-tls"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["full"] }
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }

[workspace]
EOF
    (cd "$standalone" && CARGO_TARGET_DIR="$work/target" cargo build --release -j 2 --quiet >&2)
    cp "$work/target/release/kbs-client" "$bin.tmp"
}

build_kbs() {
    # Trustee's KBS with its built-in attestation service and only the
    # verifiers that need no vendor library (sample, for the interop tests):
    # the workspace cut to the KBS and what it uses, Trustee's git
    # dependencies patched to the trees here, and the optional git
    # dependencies of verifiers left off replaced by empty stand-ins (never
    # compiled: no feature turns them on).
    mkdir -p "$work/CORIM" "$work/SEV"
    git --git-dir="$CORIM_SRC" archive "$CORIM_REV" | tar -x -C "$work/CORIM"
    git --git-dir="$SEV_SRC" archive "$SEV_REV" | tar -x -C "$work/SEV"
    python3 - "$work" <<'PY'
import os, re, sys
work = sys.argv[1]
# The stand-ins carry the versions Trustee's Cargo.lock records, so that the
# lock's entries are patched rather than fetched.
lock = open(f"{work}/TR/Cargo.lock").read()
for stub in ["intel-tee-quote-verification-rs", "veraison-apiclient", "ccatoken"]:
    version = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(stub), lock).group(1)
    os.makedirs(f"{work}/stubs/{stub}/src", exist_ok=True)
    open(f"{work}/stubs/{stub}/Cargo.toml", "w").write(
        f'[package]\nname = "{stub}"\nversion = "{version}"\nedition = "2021"\n')
    open(f"{work}/stubs/{stub}/src/lib.rs", "w").close()
path = f"{work}/TR/Cargo.toml"
s = open(path).read()
# sev from git (its workspace dependency and its [patch.crates-io]): from
# the tree here instead.
git_sev = 'sev = { git = "https://github.com/virtee/sev", rev = "d487809188c3c92e397bc92e2cb2a85eb982c980" }'
assert git_sev in s, "Cargo.toml: sev is no longer taken from git"
s = s.replace(git_sev, f'sev = {{ path = "{work}/SEV" }}')
s = re.sub(r'members = \[.*?\]', 'members = [\n    "kbs",\n    "attestation-service",\n    "rvps",\n    "deps/verifier",\n    "deps/eventlog",\n    "deps/key-value-storage",\n    "deps/policy-engine",\n]', s, count=1, flags=re.S)
s += f'''
[patch."https://github.com/confidential-containers/guest-components.git"]
kms = {{ path = "{work}/GC/confidential-data-hub/kms" }}
[patch."https://github.com/veraison/corim-rs"]
corim-rs = {{ path = "{work}/CORIM" }}
[patch."https://github.com/intel/confidential-computing.tee.dcap"]
intel-tee-quote-verification-rs = {{ path = "{work}/stubs/intel-tee-quote-verification-rs" }}
[patch."https://github.com/veraison/rust-apiclient"]
veraison-apiclient = {{ path = "{work}/stubs/veraison-apiclient" }}
[patch."https://github.com/veraison/rust-ccatoken"]
ccatoken = {{ path = "{work}/stubs/ccatoken" }}
'''
open(path, "w").write(s)
# Every verifier on x86 needs vendor libraries (Intel DCAP, NVIDIA's SDK):
# the KBS gets the sample verifier only.
path = f"{work}/TR/kbs/Cargo.toml"
s = open(path).read()
old = 'attestation-service = { path = "../attestation-service", default-features = false, features = [\n    "all-verifier",\n], optional = true }'
assert old in s, "kbs/Cargo.toml: the x86 attestation-service line moved"
s = s.replace(old, 'attestation-service = { path = "../attestation-service", default-features = false, optional = true }', 1)
open(path, "w").write(s)
PY
    # Trustee's Cargo.lock stays: cargo re-resolves only the patched crates.
    (cd "$work/TR" && CARGO_TARGET_DIR="$work/target" cargo build --release -j 2 --quiet \
        -p kbs --bin kbs --no-default-features --features coco-as-builtin >&2)
    cp "$work/target/release/kbs" "$bin.tmp"
}

banner "Building Trustee's $product ${TRUSTEE_REV:0:12} (once, several minutes)" >&2
"build_${product//-/_}"
mv "$bin.tmp" "$bin"
rm -rf "$work"
echo "$bin"
