//! Reading a client's attestation policy from a file, with errors that
//! name the file: the one loader for the CLI and the Python SDK.

use ciel_attestation::Policy;
use std::path::{Path, PathBuf};

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("policy {}: {message}", .path.display())]
pub struct PolicyFileError {
    pub path: PathBuf,
    pub message: String,
}

/// Reads `path`: TOML, or JSON if its name ends in `.json`.
pub fn load(path: &Path) -> Result<Policy, PolicyFileError> {
    let error = |message: String| PolicyFileError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| error(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
    if path.extension().is_some_and(|e| e == "json") {
        Policy::from_json(&text).map_err(|e| error(e.to_string()))
    } else {
        Policy::from_toml(&text).map_err(|e| error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let e = load(&missing).unwrap_err();
        assert!(e.to_string().contains("absent.toml: cannot read"), "{e}");

        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, b"ok = 1\n\xff").unwrap();
        let e = load(&binary).unwrap_err();
        assert!(e.to_string().ends_with("not UTF-8 (byte 7)"), "{e}");

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "[snp]\nmeasurements = []\n").unwrap();
        let e = load(&bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("policy {}: ", bad.display())),
            "{e}"
        );

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "[snp]\nmeasurements = []\n").unwrap();
        assert!(load(&good).is_ok());
    }
}
