//! Starting the system under test, and single guests beside it.

use super::*;
pub use crate::common::{Running, free_port};

/// The whole system, stopped (SIGTERM) when dropped.
pub struct System {
    child: Child,
    pub info: Value,
    pub dir: tempfile::TempDir,
}

impl System {
    /// The demo on the simulated SEV-SNP platform.
    pub fn start() -> System {
        Self::start_on("snp")
    }

    /// The demo on the simulated `platform` (`snp` or `tdx`).
    pub fn start_on(platform: &str) -> System {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ciel"))
            .args(["demo", "--platform", platform])
            .args(["--serve", "--boot-timeout", "300", "--workdir"])
            .arg(dir.path().join("w"))
            .arg("--model")
            .arg(ciel_engine::demo_model_path())
            // The sentence-embedding model beside it (/v1/embeddings).
            .arg("--embedding-model")
            .arg(ciel_engine::cached_model("all-MiniLM-L6-v2"))
            // Two simulated GPUs, required by the broker and the client.
            .args(["--gpus", "sim:2"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with('{') {
                    let _ = tx.send(line);
                }
            }
        });
        let info = match rx.recv_timeout(Duration::from_secs(400)) {
            Ok(line) => serde_json::from_str::<Value>(&line).unwrap(),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
                panic!("ciel demo --serve did not become ready:\n{log}");
            }
        };
        assert_eq!(info["ready"], true);
        System { child, info, dir }
    }

    pub fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap().to_string()
    }

    pub fn policy(&self) -> Policy {
        Policy::from_toml(&std::fs::read_to_string(self.s("policy")).unwrap()).unwrap()
    }

    /// The demo guest's peak resident memory (VmHWM), in KiB.
    pub fn guest_peak_rss_kib(&self) -> u64 {
        let guest = self.info["pids"]["guest"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{guest}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    pub fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host shim of the test's own, killed when dropped.
pub struct Host {
    child: Child,
    pub url: String,
}

impl Host {
    /// Clients on a free loopback port, the guest's API at `api`, and, with
    /// `blobs`, the blob service for the models in `dir` at `dir/blobs.sock`.
    pub fn start(dir: &Path, api: &Path, blobs: bool) -> Host {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ciel"));
        cmd.args(["host", "serve", "--listen"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--guest-api")
            .arg(format!("unix:{}", api.display()))
            .stderr(Stdio::null());
        if blobs {
            cmd.arg("--models")
                .arg(dir)
                .arg("--blob-listen")
                .arg(format!("unix:{}", dir.join("blobs.sock").display()));
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || (blobs && !dir.join("blobs.sock").exists())
        {
            assert!(Instant::now() < deadline, "the host shim did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Host {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ciel enclave serve --sim` fetching `smollm2.csm` from the blob service
/// in `dir`, with `kbs` as its broker and the demo's simulated roots (and
/// two of its simulated GPUs unless `extra` says `--gpus`), its API at
/// `api`; `extra` arguments appended. Its stderr goes to `log`.
pub fn guest_command(
    sys: &System,
    dir: &Path,
    api: &Path,
    kbs: &str,
    extra: &[&str],
    log: Stdio,
) -> Command {
    let work = PathBuf::from(sys.s("workdir"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ciel"));
    cmd.args([
        "enclave",
        "serve",
        "--sim",
        "--kbs",
        kbs,
        "--kbs-ca",
        &sys.s("kbs_ca"),
        "--model-from",
        &format!("unix:{}", dir.join("blobs.sock").display()),
        "--model-blob",
        "smollm2.csm",
        "--model-name",
        "smollm2-135m-instruct",
        "--listen",
        &format!("unix:{}", api.display()),
    ])
    .args(extra)
    .args(if extra.contains(&"--gpus") {
        &[][..]
    } else {
        &["--gpus", "sim:2"][..]
    })
    .env("CIEL_DATA_DIR", work.join("data"))
    .stdout(Stdio::null())
    .stderr(log);
    cmd
}

/// A guest beside the demo's, serving: its directory under the test's (with
/// the demo's sealed model), the host shim in front of it, the process, its
/// API socket and its log.
pub struct BootedGuest {
    pub dir: PathBuf,
    pub api: PathBuf,
    pub host: Host,
    pub guest: Running,
    pub log: PathBuf,
}

/// Boots [`guest_command`] in `name` against the demo's key broker, with
/// `extra` arguments, its stderr in `log`; returns once its API is up.
pub fn boot_guest(sys: &System, name: &str, log: &str, extra: &[&str]) -> BootedGuest {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(work.join("models/smollm2.csm"), dir.join("smollm2.csm")).unwrap();
    let api = dir.join("api.sock");
    let host = Host::start(&dir, &api, true);
    let log = dir.join(log);
    let mut guest = Running(
        guest_command(
            sys,
            &dir,
            &api,
            &sys.s("kbs_url"),
            extra,
            Stdio::from(std::fs::File::create(&log).unwrap()),
        )
        .spawn()
        .unwrap(),
    );
    wait_for_api(&mut guest.0, &api, &log);
    BootedGuest {
        dir,
        api,
        host,
        guest,
        log,
    }
}

/// A host shim serving `dir` as its model directory on `dir/blobs.sock`,
/// then `ciel enclave serve` against it with `kbs` as the broker; returns
/// the guest's exit status and stderr, and where its API would have been.
pub fn boot_guest_against(
    sys: &System,
    dir: &Path,
    kbs: &str,
    extra: &[&str],
) -> (std::process::Output, PathBuf) {
    let api = dir.join("api.sock");
    let _host = Host::start(dir, &api, true);
    let guest = guest_command(sys, dir, &api, kbs, extra, Stdio::piped())
        .output()
        .unwrap();
    (guest, api)
}
