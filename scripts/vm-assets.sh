#!/usr/bin/env bash
# Everything the VM boot test (tests/vm_boot.rs) needs, installed or built
# once and cached; idempotent. Prints `export NAME=VALUE` lines for the test:
#
#   eval "$(./scripts/vm-assets.sh)" && cargo test --test vm_boot -- --ignored
#
# - qemu-system-x86_64 (Debian package qemu-system-x86; TCG, no KVM needed)
# - Debian's cloud kernel, SHA-256 pinned, with the modules the guest loads
#   (virtio PCI, vsock over virtio, configfs), in load order
# - vhost-device-vsock (the rust-vmm vhost-user vsock device; cargo install)
# - the ciel binary linked statically (it is the image's /init)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

cache="${CIEL_CACHE:-$HOME/.cache/ciel}/vm"
kernel_pkg=linux-image-6.1.0-48-cloud-amd64
kernel_deb_sha=1cc5f8ddd400cd87c8b524d8b985fffa47e5a5f87284d2125f8420f582d6b93e
vhost_version=0.3.0
# The guest loads these, in this order (Debian's modules.dep has no say in
# an initramfs without modprobe): the virtio PCI transport, vsock over
# virtio, then configfs (for configfs-tsm on confidential hardware).
modules=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport configfs)

# The kernel and modules, extracted from the pinned .deb into $cache/kernel.
ensure_kernel() {
    local dir="$cache/kernel" stamp="$cache/kernel/.from-$kernel_deb_sha"
    [ -f "$stamp" ] && return
    banner "Fetching $kernel_pkg (SHA-256 pinned, once)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && { apt-get download -q "$kernel_pkg" >&2 2>/dev/null ||
        { as_root apt-get update -q >&2 && apt-get download -q "$kernel_pkg" >&2; }; })
    local deb
    deb=$(ls "$work"/*.deb)
    if ! echo "$kernel_deb_sha  $deb" | sha256sum -c --status; then
        echo "$deb: SHA-256 is not the pinned $kernel_deb_sha; refusing it" >&2
        exit 1
    fi
    dpkg-deb -x "$deb" "$work/x"
    rm -rf "$dir" && mkdir -p "$dir/modules"
    cp "$work"/x/boot/vmlinuz-* "$dir/vmlinuz"
    : > "$dir/modules/load-order"
    local m path
    for m in "${modules[@]}"; do
        path=$(find "$work/x/lib/modules" -name "$m.ko" | head -n 1)
        [ -n "$path" ] || { echo "$kernel_pkg has no $m.ko" >&2; exit 1; }
        cp "$path" "$dir/modules/"
        echo "$m.ko" >> "$dir/modules/load-order"
    done
    touch "$stamp"
}


ensure_toolchain
ensure_deb qemu-system-x86_64 qemu-system-x86
ensure_kernel
ensure_cargo_tool "vhost-device-vsock $vhost_version" vhost-device-vsock "=$vhost_version" \
    vhost-device-vsock --version
init=$(build_static_ciel)
cat <<EOF
export CIEL_VM_KERNEL='$cache/kernel/vmlinuz'
export CIEL_VM_MODULES='$cache/kernel/modules'
export CIEL_VM_INIT='$init'
export CIEL_VM_QEMU='$(command -v qemu-system-x86_64)'
export CIEL_VM_VHOST_VSOCK='$(command -v vhost-device-vsock)'
EOF
