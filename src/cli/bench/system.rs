//! The whole system as separate processes (`ciel demo --serve`) for the
//! suites that measure through it; stopped (SIGTERM) when dropped.

use anyhow::{Context, Result, bail};
use ciel_client::Client;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct System {
    child: Child,
    pub info: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl System {
    /// Starts broker, host and guest on `model` and waits until verified.
    pub fn start(model: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["demo", "--serve", "--workdir"])
            .arg(dir.path().join("w"))
            .arg("--model")
            .arg(model)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ciel demo --serve")?;
        let stdout = child.stdout.take().context("demo stdout")?;
        let mut system = System {
            child,
            info: serde_json::Value::Null,
            _dir: dir,
        };
        let Some(ready) = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with('{'))
        else {
            bail!("ciel demo --serve did not become ready (run `ciel demo` to see why)");
        };
        system.info = serde_json::from_str(&ready)?;
        Ok(system)
    }

    /// A verified client of the guest.
    pub fn client(&self, rt: &tokio::runtime::Runtime) -> Result<Client> {
        let policy = super::super::files::load_policy(Path::new(
            self.info["policy"].as_str().unwrap_or_default(),
        ))?;
        let url = self.info["url"].as_str().unwrap_or_default();
        Ok(rt.block_on(Client::connect(url, policy))?)
    }

    /// The guest process's peak resident memory (VmHWM), in MiB.
    pub fn guest_peak_mib(&self) -> Option<f64> {
        let pid = self.info["pids"]["guest"].as_u64()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
