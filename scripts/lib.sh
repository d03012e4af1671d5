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

# cargo-deny, installed once into cargo's bin dir (cached across runs).
ensure_cargo_deny() {
    local want=0.20
    if cargo deny --version 2>/dev/null | grep -q "cargo-deny $want"; then
        return
    fi
    banner "Installing cargo-deny $want (once)"
    cargo install --locked --quiet cargo-deny --version "~$want"
}
