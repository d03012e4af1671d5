#!/usr/bin/env bash
# What the container-image test (tests/oci_image.rs) needs, installed or
# built once; idempotent. Prints `export NAME=VALUE` lines for the test:
#
#   eval "$(./scripts/container-assets.sh)" && cargo test --test oci_image -- --ignored
#
# - podman, and runc as its OCI runtime (Debian packages): crun refuses the
#   hybrid cgroup v1 hierarchy some CI VMs have, runc with cgroupfs runs there
# - the ciel binary linked statically (the image's /ciel; the VM image's
#   /init is the same build)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_toolchain
ensure_deb podman podman netavark
ensure_deb runc runc
binary=$(build_static_ciel)
cat <<EOF
export CIEL_OCI_BINARY='$binary'
export CIEL_PODMAN='$(command -v podman)'
EOF
