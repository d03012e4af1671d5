//! Helpers shared by the end-to-end tests: where the shared vectors are,
//! and running the `ciel` binary.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// `../shared/vectors` beside the checkout (override: `CIEL_VECTORS`).
pub fn vectors() -> PathBuf {
    let dir = std::env::var_os("CIEL_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    assert!(
        dir.join("scenarios.json").is_file(),
        "shared test vectors not found at {} (set CIEL_VECTORS)",
        dir.display()
    );
    dir
}

pub fn vector(rel: &str) -> PathBuf {
    vectors().join(rel)
}

/// Output of one `ciel` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn reason_codes(&self) -> Vec<String> {
        self.json()["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["code"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs `ciel` with `args` and an isolated data dir.
pub fn ciel<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(args)
        .env("CIEL_DATA_DIR", data_dir())
        .output()
        .expect("run ciel");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A data dir shared by the tests of one test binary.
pub fn data_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
        .to_path_buf()
}

pub fn scenarios() -> serde_json::Value {
    let text = std::fs::read_to_string(vector("scenarios.json")).expect("read scenarios.json");
    serde_json::from_str(&text).expect("scenarios.json")
}
