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

/// A `ciel kbs serve` process on a free loopback port; killed when dropped.
pub struct KbsProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for KbsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ciel kbs init KB`, then a broker that trusts the simulated root `fp`
/// and releases each `(resource, measurement)` only to a simulated SNP guest
/// with that measurement, serving TLS on a free loopback port.
pub fn start_kbs(
    kb: &std::path::Path,
    fp: &str,
    resources: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> KbsProcess {
    let mut cfg = trust_simulated_root(&kbs_init(kb), fp);
    for (i, (path, measurement)) in resources.iter().enumerate() {
        let policy = format!("resource{i}.policy.toml");
        std::fs::write(
            kb.join(&policy),
            format!(
                "danger_simulated_roots = [\"{fp}\"]\n[snp]\nmeasurements = [\"{measurement}\"]\n"
            ),
        )
        .unwrap();
        cfg.push_str(&format!(
            "[[resource]]\npath = \"{path}\"\npolicy_file = \"{policy}\"\n"
        ));
    }
    std::fs::write(kb.join("kbs.toml"), cfg).unwrap();

    let (mut child, port) = spawn_kbs_serve(kb, &[], stderr);
    assert!(
        listening(port, &mut child),
        "the broker exited before listening"
    );
    KbsProcess {
        child,
        url: format!("https://127.0.0.1:{port}"),
    }
}

/// `ciel kbs serve` for the broker directory `kb` (as `ciel kbs init`
/// writes it: kbs.toml, tls.pem, tls.key) on a free loopback port.
fn spawn_kbs_serve(
    kb: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
    stderr: std::process::Stdio,
) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(["kbs", "serve", "--config"])
        .arg(kb.join("kbs.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(kb.join("tls.pem"))
        .arg("--tls-key")
        .arg(kb.join("tls.key"))
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, port)
}

/// Waits (20 s at most) until `port` accepts; false if `child` exits first.
pub fn listening(port: u16, child: &mut std::process::Child) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(std::time::Instant::now() < deadline, "broker did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// `ciel seal` registering the fresh key at the broker set up by [`start_kbs`].
pub fn seal_registered(
    model: &std::path::Path,
    out: &std::path::Path,
    resource: &str,
    url: &str,
    kb: &std::path::Path,
) -> Run {
    let run = ciel([
        "seal".as_ref(),
        "--in".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--resource".as_ref(),
        resource.as_ref(),
        "--kbs".as_ref(),
        url.as_ref(),
        "--admin-key".as_ref(),
        kb.join("admin.key").as_os_str(),
        "--kbs-ca".as_ref(),
        kb.join("tls-ca.pem").as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run
}

/// `ciel attest sim-report --platform P --report-data HEX --out OUT`.
pub fn sim_report(platform: &str, report_data: &str, out: &std::path::Path) -> Run {
    ciel([
        "attest".as_ref(),
        "sim-report".as_ref(),
        "--platform".as_ref(),
        platform.as_ref(),
        "--report-data".as_ref(),
        report_data.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
}

/// A free loopback TCP port (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// [`spawn_kbs_serve`] with `env` set, its stderr in a log: its HTTPS URL,
/// or the log if it exits before listening.
pub fn kbs_serve(
    kb: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<(Running, String), String> {
    let log = kb.join(format!("serve-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let (mut child, port) = spawn_kbs_serve(kb, env, file.into());
    if !listening(port, &mut child) {
        return Err(std::fs::read_to_string(&log).unwrap_or_default());
    }
    Ok((Running(child), format!("https://127.0.0.1:{port}")))
}

/// A fresh simulated SNP hierarchy (its VCEK valid from now) and its root's
/// fingerprint, for `danger_simulated_roots`.
pub fn fresh_sim() -> (ciel_attestation::sim::SnpSim, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sim = ciel_attestation::sim::SnpSim::generate(ciel_attestation::UnixTime(now)).unwrap();
    let fp = hex::encode(sim.root_sha256());
    (sim, fp)
}

/// `ciel kbs init KB` (asserted to succeed); the kbs.toml it wrote.
pub fn kbs_init(kb: &std::path::Path) -> String {
    let init = ciel(["kbs".as_ref(), "init".as_ref(), kb.as_os_str()]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    std::fs::read_to_string(kb.join("kbs.toml")).unwrap()
}

/// A kbs.toml from `ciel kbs init`, trusting the simulated root `fp`
/// (DANGER, tests only) where the written file suggests it.
pub fn trust_simulated_root(config: &str, fp: &str) -> String {
    let hint = "# danger_simulated_roots = [\"<fingerprint printed by ciel attest sim-report>\"]";
    assert!(
        config.contains(hint),
        "ciel kbs init's kbs.toml changed:\n{config}"
    );
    config.replace(hint, &format!("danger_simulated_roots = [\"{fp}\"]"))
}

/// A stand-in model file of `len` bytes after the GGUF magic at `path`;
/// its bytes.
pub fn fake_model(path: &std::path::Path, len: u32) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..len).map(|i| (i % 251) as u8));
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// A model sealed under `key`, opened: its plaintext.
pub fn unsealed(sealed: &std::path::Path, key: &[u8]) -> Vec<u8> {
    use ciel_protocol::sealed::{DataKey, UnsealOptions, unseal_in_memory};
    use std::io::Read;
    let key: [u8; 32] = key.try_into().unwrap();
    let plain = unseal_in_memory(
        std::fs::read(sealed).unwrap(),
        &DataKey::from_bytes(key),
        UnsealOptions::default(),
    )
    .unwrap();
    let mut got = Vec::new();
    plain.reader().read_to_end(&mut got).unwrap();
    got
}

/// A child process killed when dropped, so that a failing test leaves no
/// guest, VM or daemon behind.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
