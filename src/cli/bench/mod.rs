//! `ciel bench [--json] [--quick] [SUITE...]`: every figure measured beside
//! its baseline in the same run, and reported as a ratio to it.
//!
//! Suites: `unseal` (vs. bare `ring` AES-256-GCM and memcpy; sealed vs.
//! plaintext model load), `verify` (real SNP, TDX, NVIDIA evidence),
//! `keyrelease` (loopback broker, simulated evidence, 1 and 16 guests),
//! `proxy` (the host shim vs. a direct socket), `inference` (the bare
//! engine vs. client → host → guest over attested TLS), `load` (1, 8
//! and 32 streaming clients through the host shim: throughput as a ratio to
//! one client, time to first token, inter-token latency, peak memory).

mod device;
mod inference;
mod keyrelease;
mod load;
mod proxy;
mod system;
mod unseal;
mod verify;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Suites to run (default: all): unseal, verify, keyrelease, proxy, inference, load, device.
    pub suites: Vec<String>,
    /// Fewer iterations and smaller inputs (about 2 minutes in all).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object (documented in BENCHMARKS.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The GGUF model for `unseal`, `inference` and `device` (default: the demo model).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// `device`: where candle's kernels run the model (`cpu`, or `cuda:N`
    /// in a CUDA build), against ours on the CPU.
    #[arg(long, default_value = "cpu")]
    pub device: ciel_engine::device::ComputeDevice,
    /// `keyrelease` also with the broker's master key in an HSM: its
    /// PKCS#11 module (for SoftHSM2, set SOFTHSM2_CONF too). A key labelled
    /// ciel-bench is made in the token if it has none.
    #[arg(long, value_name = "MODULE", requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<std::path::PathBuf>,
    /// The HSM token's label.
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_token: Option<String>,
    /// A file holding the token's user PIN.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_pin_file: Option<std::path::PathBuf>,
    /// `keyrelease` also with the broker's state in PostgreSQL, with 1 and
    /// 2 replicas: a libpq URL without password (scripts/postgres.sh
    /// starts a local server and prints one). The tables go in schema
    /// ciel_bench.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// A file holding the PostgreSQL password.
    #[arg(long, value_name = "FILE", requires = "postgres")]
    pub postgres_password_file: Option<std::path::PathBuf>,
}

const SUITES: [&str; 7] = [
    "unseal",
    "verify",
    "keyrelease",
    "proxy",
    "inference",
    "load",
    "device",
];

/// One measured figure, with the baseline it is compared to.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub suite: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// `value / baseline` (or `baseline / value` for latencies: above 1 is
    /// always better for ciel), and what the baseline is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// Collects figures and prints each as it comes (unless `--json`).
pub struct Report {
    pub quick: bool,
    json: bool,
    figures: Vec<Figure>,
    pub model: Option<std::path::PathBuf>,
}

impl Report {
    pub fn add(
        &mut self,
        suite: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) {
        self.push(Figure {
            suite,
            name: name.into(),
            value,
            unit,
            ratio: None,
            baseline: None,
        });
    }

    /// A figure and its ratio to `baseline`.
    pub fn compare(
        &mut self,
        suite: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        ratio: f64,
        baseline: impl Into<String>,
    ) {
        self.push(Figure {
            suite,
            name: name.into(),
            value,
            unit,
            ratio: Some(ratio),
            baseline: Some(baseline.into()),
        });
    }

    fn push(&mut self, f: Figure) {
        if !self.json {
            let ratio = f
                .ratio
                .map(|r| format!("{r:>7.3}x  vs {}", f.baseline.as_deref().unwrap_or("")))
                .unwrap_or_default();
            println!(
                "{:<11} {:<60} {:>12.3} {:<8} {ratio}",
                f.suite, f.name, f.value, f.unit
            );
        }
        self.figures.push(f);
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// The model the unseal, inference and device suites use.
    pub fn model_path(&self) -> std::path::PathBuf {
        self.model
            .clone()
            .unwrap_or_else(ciel_engine::demo_model_path)
    }

    /// That model's path and bytes, or an error saying where to get it.
    pub fn read_model(&self) -> Result<(std::path::PathBuf, Vec<u8>)> {
        let path = self.model_path();
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "model {} (scripts/fetch-model.sh, or --model)",
                path.display()
            )
        })?;
        Ok((path, bytes))
    }
}

/// Durations of `n` runs of `f`.
pub fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// The `p`-th percentile (0..=100) of `v`, in milliseconds.
pub fn percentile_ms(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<Duration> = v.to_vec();
    s.sort();
    let i = ((s.len().saturating_sub(1)) as f64 * p / 100.0).round() as usize;
    s.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// GiB/s for `bytes` in the median of `v`.
pub fn gib_per_s(bytes: usize, v: &[Duration]) -> f64 {
    let ms = percentile_ms(v, 50.0);
    bytes as f64 / (1u64 << 30) as f64 / (ms / 1e3)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "os": std::env::consts::OS,
        "ciel": env!("CARGO_PKG_VERSION"),
    })
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let suites: Vec<String> = if a.suites.is_empty() {
        SUITES.iter().map(|s| s.to_string()).collect()
    } else {
        a.suites.clone()
    };
    if let Some(bad) = suites.iter().find(|s| !SUITES.contains(&s.as_str())) {
        bail!(
            "unknown suite {bad:?}; the suites are {}",
            SUITES.join(", ")
        );
    }
    let hsm = match (&a.pkcs11_module, &a.pkcs11_token, &a.pkcs11_pin_file) {
        (Some(module), Some(token), Some(pin)) => Some(ciel_keybroker::master_key::Pkcs11Config {
            module: module.clone(),
            token_label: token.clone(),
            key_label: "ciel-bench".into(),
            pin_file: pin.clone(),
        }),
        _ => None,
    };
    let mut r = Report {
        quick: a.quick,
        json: a.json,
        figures: Vec::new(),
        model: a.model.clone(),
    };
    let machine = machine();
    if !a.json {
        println!(
            "ciel bench{} on {} ({} threads); ratios above 1 favour ciel over its baseline only where noted",
            if a.quick { " --quick" } else { "" },
            machine["cpu"].as_str().unwrap_or("?"),
            machine["threads"]
        );
    }
    let started = Instant::now();
    for s in &suites {
        match s.as_str() {
            "unseal" => unseal::run(&mut r)?,
            "verify" => verify::run(&mut r)?,
            "keyrelease" => keyrelease::run(
                &mut r,
                hsm.as_ref(),
                a.postgres
                    .as_deref()
                    .map(|url| (url, a.postgres_password_file.as_deref())),
            )?,
            "proxy" => proxy::run(&mut r)?,
            "inference" => inference::run(&mut r)?,
            "load" => load::run(&mut r)?,
            "device" => device::run(&mut r, a.device)?,
            _ => {}
        }
    }
    if a.json {
        let out = serde_json::json!({
            "machine": machine,
            "quick": a.quick,
            "suites": suites,
            "seconds": started.elapsed().as_secs_f64(),
            "figures": r.figures,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("({:.0} s)", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}
