# Shared by the scripts: small, idempotent installers.

banner() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ensure_toolchain() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust (rustup) first" >&2
        exit 2
    fi
    # rust-toolchain.toml pins the version; rustup installs it if missing.
    cargo --version >/dev/null
    command -v python3 >/dev/null 2>&1 || { echo "python3 is needed by the scripts" >&2; exit 2; }
}

# A tool from crates, installed once into cargo's bin dir (cached across
# runs) unless `CMD...` already prints a line starting with WANT; progress
# goes to stderr, so scripts that print results on stdout can use it.
#   ensure_cargo_tool WANT CRATE VERSION_REQ CMD...
ensure_cargo_tool() {
    local want=$1 crate=$2 version=$3
    shift 3
    if "$@" 2>/dev/null | grep -q "^$want"; then
        return
    fi
    banner "Installing $crate $version (once)" >&2
    cargo install --locked --quiet "$crate" --version "$version" >&2
}

ensure_cargo_deny() {
    ensure_cargo_tool "cargo-deny 0.20" cargo-deny "~0.20" cargo deny --version
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages, installed once (apt-get as root or through sudo) unless
# COMMAND is already on the PATH.   ensure_deb COMMAND PACKAGE...
ensure_deb() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return
    banner "Installing $* (once)" >&2
    as_root apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# ciel, statically linked against glibc (no loader or shared libraries):
# the VM image's /init and the container image's /ciel, in the `guest`
# profile. RUSTFLAGS replaces .cargo/config.toml's flags, so the x86-64-v3
# baseline is repeated here. Prints the binary's path.
build_static_ciel() {
    banner "Building ciel, statically linked" >&2
    RUSTFLAGS="-C target-cpu=x86-64-v3 -C target-feature=+crt-static" cargo build --locked --quiet \
        --profile guest --target x86_64-unknown-linux-gnu -p ciel --bin ciel >&2
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    echo "$target_dir/x86_64-unknown-linux-gnu/guest/ciel"
}
