//! The container image, as a Kata Confidential Containers pod would run it:
//! `ciel image oci` twice from the same static binary gives the same
//! digest; under podman the image's guest takes its settings from init-data,
//! its sealed model from an (untrusted) HTTP object store,
//! its evidence from a (simulated) pod attestation agent whose HOST_DATA
//! binds that init-data, gets its key from the broker, and answers a client
//! that verified it — HOST_DATA pinned by the client's policy.
//!
//! Needs podman and the static binary: `./scripts/test.sh` runs it as
//!   eval "$(./scripts/container-assets.sh)" && cargo test --test oci_image -- --ignored
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
#[path = "common/object_store.rs"]
mod object_store;
use common::{Running, ciel, data_dir, free_port, seal_registered, sim_report, start_kbs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run ./scripts/container-assets.sh"))
}

/// podman with what runs on CI's VMs: runc on cgroupfs (crun refuses a
/// hybrid cgroup v1 hierarchy), and limits under the host's hard limits.
fn podman() -> Command {
    let mut c = Command::new(env_path("CIEL_PODMAN"));
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_image(out: &Path) -> String {
    let run = ciel([
        "image".as_ref(),
        "oci".as_ref(),
        "--binary".as_ref(),
        env_path("CIEL_OCI_BINARY").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--tag".as_ref(),
        "test".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let digest = run.stdout.trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    digest
}

fn wait_for_port(port: u16, what: &str, deadline: Duration, log: &Path) {
    let end = Instant::now() + deadline;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "{what} did not listen on {port} within {deadline:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes the test's container, image and layout, whatever happens.
struct PodmanCleanup {
    container: String,
    image: String,
    layout: PathBuf,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        if std::env::var_os("CIEL_PODMAN").is_some() {
            let _ = podman().args(["rm", "-f", &self.container]).output();
            let _ = podman().args(["rmi", "-f", &self.image]).output();
        }
        let _ = std::fs::remove_dir_all(&self.layout);
    }
}

#[test]
#[ignore = "needs podman and the static binary: ./scripts/container-assets.sh"]
fn the_image_rebuilds_to_the_same_digest_and_serves_a_verified_answer_under_podman() {
    let tmp = tempfile::tempdir().unwrap();
    // podman names an image pulled from a layout after its path, which must
    // then be lowercase: the first layout lives under a name of ours.
    let layout_dir = std::env::temp_dir().join(format!("ciel-oci-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&layout_dir);
    let container = format!("ciel-oci-test-{}", std::process::id());
    let mut cleanup = PodmanCleanup {
        container: container.clone(),
        image: String::new(),
        layout: layout_dir.clone(),
    };
    let digest = build_image(&layout_dir);
    assert_eq!(
        build_image(&tmp.path().join("b")),
        digest,
        "not reproducible"
    );
    assert_eq!(
        std::fs::read(layout_dir.join("index.json")).unwrap(),
        std::fs::read(tmp.path().join("b/index.json")).unwrap()
    );

    // The image in podman's store, by the digest the build printed.
    let image = format!("localhost/ciel-oci-test:{}", &digest[7..19]);
    cleanup.image = image.clone();
    let layout = format!("oci:{}:test", layout_dir.display());
    let id = podman_ok(&["pull", "-q", &layout]);
    podman_ok(&["tag", id.trim(), &image]);
    let inspected = podman_ok(&["image", "inspect", "--format", "{{.Digest}}", &image]);
    assert_eq!(inspected.trim(), digest);
    let version = podman_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        &image,
        "--version",
    ]);
    assert!(version.starts_with("ciel "), "{version}");

    // Broker, sealed model and the host's blob service (untrusted), on
    // the host's loopback.
    let kb = tmp.path().join("kbs");
    let sim = sim_report("snp", "00", &tmp.path().join("probe.bin"));
    assert_eq!(sim.code, 0, "{}", sim.stderr);
    let ark = std::fs::read(data_dir().join("sim/snp/ark.der")).unwrap();
    let fp = hex::encode(ring::digest::digest(&ring::digest::SHA256, &ark));
    let measurement = hex::encode(ciel_attestation::sim::SimSnpReport::default().measurement);
    let broker = start_kbs(
        &kb,
        &fp,
        &[("default/model-key/pod", &measurement)],
        Stdio::null(),
    );
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    seal_registered(
        &ciel_engine::demo_model_path(),
        &models.join("model.csm"),
        "default/model-key/pod",
        &broker.url,
        &kb,
    );
    let (api_port, agent_port) = (free_port(), free_port());
    // No host shim in a pod: the sealed model comes from an (untrusted)
    // object store.
    let (store, _store_stop) = object_store::serve(&models, object_store::Behaviour::Honest);

    // The pod's init-data: the broker, its CA and the model, all attested.
    let ca = std::fs::read_to_string(kb.join("tls-ca.pem")).unwrap();
    let init_data = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"ciel.toml\" = '''\nkbs = \"{}\"\nkbs_ca = \"\"\"\n{}\"\"\"\nmodel_from = \"http://{store}/models\"\nmodel_blob = \"model.csm\"\n'''\n",
        broker.url,
        ca.trim_end()
    );
    let init_path = tmp.path().join("initdata.toml");
    std::fs::write(&init_path, &init_data).unwrap();
    let digests = ciel([
        "image".as_ref(),
        "init-data".as_ref(),
        "--json".as_ref(),
        init_path.as_os_str(),
    ]);
    assert_eq!(digests.code, 0, "{}", digests.stderr);
    let digests: serde_json::Value = serde_json::from_str(&digests.stdout).unwrap();
    let host_data = digests["snp_host_data"].as_str().unwrap().to_string();

    // The pod VM's attestation agent, simulated, launched with that init-data.
    let agent_log = tmp.path().join("agent.log");
    let _agent = Running(
        Command::new(env!("CARGO_BIN_EXE_ciel"))
            .args(["attest", "sim-agent", "--listen"])
            .arg(format!("127.0.0.1:{agent_port}"))
            .arg("--init-data")
            .arg(&init_path)
            .env("CIEL_DATA_DIR", data_dir())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(
        agent_port,
        "the attestation agent",
        Duration::from_secs(20),
        &agent_log,
    );

    // The guest, in the image, with nothing on its command line but where
    // to find the agent and the init-data.
    let guest_log = tmp.path().join("guest.log");
    let mut guest = podman()
        .args(["run", "--rm", "--name", &container, "--network", "host"])
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg("-v")
        .arg(format!(
            "{}:/etc/ciel/initdata.toml:ro",
            init_path.display()
        ))
        .args([&image, "enclave", "serve", "--coco-agent"])
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .args(["--init-data", "/etc/ciel/initdata.toml", "--listen"])
        .arg(format!("tcp://127.0.0.1:{api_port}"))
        .args(["--kv-memory", "256MiB"])
        .stderr(std::fs::File::create(&guest_log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(240);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        if let Some(status) = guest.try_wait().unwrap() {
            panic!(
                "the guest container ended ({status}):\n{}",
                std::fs::read_to_string(&guest_log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < end,
            "the guest did not serve:\n{}",
            std::fs::read_to_string(&guest_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A client whose policy pins HOST_DATA to this init-data verifies the
    // pod and gets an answer.
    let policy = tmp.path().join("client.policy.toml");
    std::fs::write(
        &policy,
        format!("danger_simulated_roots = [\"{fp}\"]\n[snp]\nhost_data = [\"{host_data}\"]\n"),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{api_port}");
    let verify = ciel([
        "verify".as_ref(),
        url.as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("init-data"), "{}", verify.stdout);
    assert!(verify.stdout.contains("text form"), "{}", verify.stdout);
    let chat = ciel([
        "chat".as_ref(),
        url.as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--max-tokens".as_ref(),
        "8".as_ref(),
        "Why is the sky blue?".as_ref(),
    ]);
    assert_eq!(chat.code, 0, "{}", chat.stderr);
    assert!(chat.stdout.trim().len() > 10, "{:?}", chat.stdout);
    eprintln!(
        "image {digest}\n{}\nanswer: {}",
        verify.stdout,
        chat.stdout.trim()
    );

    // Pinned to other init-data, the same client refuses the pod.
    std::fs::write(
        &policy,
        format!(
            "danger_simulated_roots = [\"{fp}\"]\n[snp]\nhost_data = [\"{}\"]\n",
            "00".repeat(32)
        ),
    )
    .unwrap();
    let refused = ciel([
        "verify".as_ref(),
        url.as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);

    let _ = podman().args(["stop", "-t", "5", &container]).output();
    let _ = guest.wait();
    let log = std::fs::read_to_string(&guest_log).unwrap_or_default();
    assert!(log.contains("init-data bound by the evidence"), "{log}");
}
