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
