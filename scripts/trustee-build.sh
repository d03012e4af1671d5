#!/usr/bin/env bash
# Builds Trustee's kbs-client (confidential-containers/trustee, with
# guest-components' kbs_protocol) from source trees brought onto this
# machine, for the key broker's interoperability tests. Trustee is not on
# the crate registries; its git sources must be here already:
#
#   TRUSTEE_SRC            a git directory holding trustee commit $TRUSTEE_REV
#   GUEST_COMPONENTS_SRC   a git directory holding guest-components $GC_REV
#
# (the developers' tools put them under /work/.mirror/…; `git clone` of the
# public repositories works as well). Cached: a second run prints the
# binary's path at once. Prints the path of kbs-client on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

# The trustee commit, and the guest-components commit its Cargo.toml pins.
TRUSTEE_REV=78962cd416dcc8a32f9377e0066a28fe21420f69
GC_REV=da8d93f2797088a5f0636c8c1eeb31da73784fe8

mirror=/work/.mirror
TRUSTEE_SRC=${TRUSTEE_SRC:-$mirror/confidential-containers+trustee/repo}
GUEST_COMPONENTS_SRC=${GUEST_COMPONENTS_SRC:-$mirror/confidential-containers+guest-components/repo}

cache="${CIEL_CACHE:-$HOME/.cache/ciel}/trustee/${TRUSTEE_REV:0:12}"
bin="$cache/kbs-client"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi

for src in "$TRUSTEE_SRC:$TRUSTEE_REV" "$GUEST_COMPONENTS_SRC:$GC_REV"; do
    dir=${src%%:*} rev=${src##*:}
    if ! git --git-dir="$dir" cat-file -e "$rev^{commit}" 2>/dev/null; then
        echo "trustee-build: $dir does not hold commit $rev." >&2
        echo "  Bring the public sources here first (confidential-containers/trustee and" >&2
        echo "  confidential-containers/guest-components), then set TRUSTEE_SRC and" >&2
        echo "  GUEST_COMPONENTS_SRC to their git directories." >&2
        exit 2
    fi
done
ensure_toolchain
ensure_deb protoc protobuf-compiler

work="$cache.work"
rm -rf "$work"
mkdir -p "$work/TR" "$work/GC"
git --git-dir="$TRUSTEE_SRC" archive "$TRUSTEE_REV" | tar -x -C "$work/TR"
git --git-dir="$GUEST_COMPONENTS_SRC" archive "$GC_REV" | tar -x -C "$work/GC"

# kbs-client outside Trustee's workspace, so cargo resolves only what it
# needs (no git dependencies). It sits two levels below the tree because
# its main.rs includes ../../../kbs/sample_policies/*.rego.
standalone="$work/TR/tools/kbsc-standalone"
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

banner "Building Trustee's kbs-client ${TRUSTEE_REV:0:12} (once, several minutes)" >&2
(cd "$standalone" && CARGO_TARGET_DIR="$work/target" cargo build --release -j 2 --quiet >&2)
mkdir -p "$cache"
cp "$work/target/release/kbs-client" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$work"
echo "$bin"
