//! The whole ciel path in a VM: the reproducible image boots under QEMU
//! (TCG), its `/init` (the ciel runtime as PID 1) loads the vsock modules,
//! reaches the host shim over virtio-vsock (through `vhost-device-vsock`),
//! completes key release with the simulated platform, loads the sealed demo
//! model streamed from the host, and answers a client through the host shim
//! over attested TLS; then Ctrl-Alt-Del stops it in order and it powers off.
//!
//! Needs QEMU, a kernel and the static runtime: `./scripts/test.sh` runs it
//! as `eval "$(./scripts/vm-assets.sh)" && cargo test --test vm_boot -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use ciel_attestation::Policy;
use ciel_attestation::sim::SimSnpReport;
use ciel_client::Client;
use common::{Running, ciel, free_port, seal_registered, start_kbs};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RESOURCE: &str = "default/model-key/smollm2";
const API_PORT: u32 = 8443;
const RELAY_PORT: u32 = 5001;
const BLOB_PORT: u32 = 5002;

/// What `scripts/vm-assets.sh` provides, by environment variable.
struct Assets {
    kernel: PathBuf,
    modules: PathBuf,
    init: PathBuf,
    qemu: PathBuf,
    vhost_vsock: PathBuf,
}

impl Assets {
    fn from_env() -> Assets {
        let get = |name: &str| {
            let p = PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
                panic!("{name} is not set: run `eval \"$(./scripts/vm-assets.sh)\"` first")
            }));
            assert!(p.exists(), "{name}={} does not exist", p.display());
            p
        };
        Assets {
            kernel: get("CIEL_VM_KERNEL"),
            modules: get("CIEL_VM_MODULES"),
            init: get("CIEL_VM_INIT"),
            qemu: get("CIEL_VM_QEMU"),
            vhost_vsock: get("CIEL_VM_VHOST_VSOCK"),
        }
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Running(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// `ciel image build` of the runtime with the broker's CA and the simulated
/// hierarchy in the image, and `cmdline`.
fn build_image(a: &Assets, out: &Path, files: &[(String, PathBuf)], cmdline: &str) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "image".into(),
        "build".into(),
        "--enclave".into(),
        a.init.clone().into(),
        "--kernel".into(),
        a.kernel.clone().into(),
        "--modules".into(),
        a.modules.clone().into(),
        "--cmdline".into(),
        cmdline.into(),
        "--out".into(),
        out.into(),
    ];
    for (guest, host) in files {
        args.push("--file".into());
        args.push(format!("{guest}={}", host.display()).into());
    }
    let run = ciel(args);
    assert_eq!(run.code, 0, "ciel image build: {}", run.stderr);
}

/// llama.cpp's greedy answer (the shared oracle) to a system message and
/// a question, as the model's chat template renders them.
fn oracle_answer(system: &str, question: &str) -> String {
    let path = common::vectors()
        .parent()
        .unwrap()
        .join("reference/smollm2-llamacpp.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let prompt = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    doc["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["prompt"] == prompt.as_str())
        .map(|g| g["text"].as_str().unwrap().to_string())
        .expect("the oracle has this prompt")
}

/// The host side of one VM: the vsock device (guest CID 3; the guest's
/// connections to host port P arrive at `vm.vsock_P`, and `vm.vsock` takes
/// `CONNECT PORT` for the guest's listeners), then the shim on those sockets.
struct Host {
    vhost_socket: PathBuf,
    port: u16,
    _vhost: Running,
    _shim: Running,
}

impl Host {
    fn start(assets: &Assets, dir: &Path, models: &Path, kbs_url: &str) -> Host {
        let vsock = dir.join("vm.vsock");
        let vhost_socket = dir.join("vhost-user.sock");
        let vhost = spawn(
            Command::new(&assets.vhost_vsock)
                .arg("--guest-cid=3")
                .arg(format!("--socket={}", vhost_socket.display()))
                .arg(format!("--uds-path={}", vsock.display())),
            &dir.join("vhost.log"),
        );
        wait_for(
            "vhost-device-vsock's socket",
            Duration::from_secs(20),
            || vhost_socket.exists(),
        );
        let port = free_port();
        let shim = spawn(
            Command::new(env!("CARGO_BIN_EXE_ciel"))
                .args(["host", "serve", "--listen"])
                .arg(format!("tcp://127.0.0.1:{port}"))
                .arg(format!(
                    "--guest-api=unix:{}?connect={API_PORT}",
                    vsock.display()
                ))
                .arg(format!("--models={}", models.display()))
                .arg(format!(
                    "--blob-listen=unix:{}_{BLOB_PORT}",
                    vsock.display()
                ))
                .arg(format!(
                    "--kbs-relay-listen=unix:{}_{RELAY_PORT}",
                    vsock.display()
                ))
                .arg(format!(
                    "--kbs-upstream=tcp://{}",
                    kbs_url.trim_start_matches("https://")
                )),
            &dir.join("host.log"),
        );
        wait_for("the host shim", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Host {
            vhost_socket,
            port,
            _vhost: vhost,
            _shim: shim,
        }
    }
}

/// QEMU without KVM (TCG), 2 vCPUs and 1.5 GiB, the image's kernel, initrd
/// and command line, virtio-vsock through the vhost-user device, the serial
/// console to a file and the monitor on a Unix socket.
fn qemu(
    assets: &Assets,
    image: &Path,
    vhost_socket: &Path,
    console: &Path,
    monitor: &Path,
) -> Command {
    let cmdline = std::fs::read_to_string(image.join("cmdline")).unwrap();
    let mut c = Command::new(&assets.qemu);
    c.args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-smp", "2", "-m", "1536"])
        // vhost-user needs the guest's memory shared with the device.
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=1536M,share=on",
            "-numa",
            "node,memdev=mem",
        ])
        .arg("-kernel")
        .arg(image.join("kernel"))
        .arg("-initrd")
        .arg(image.join("initrd"))
        .args(["-append", cmdline.trim_end()])
        .arg("-chardev")
        .arg(format!("socket,id=vsock,path={}", vhost_socket.display()))
        .args(["-device", "vhost-user-vsock-pci,chardev=vsock"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()));
    c
}

#[test]
#[ignore = "boots a VM: needs `eval \"$(./scripts/vm-assets.sh)\"` (./scripts/test.sh runs it)"]
fn the_image_boots_and_answers_over_vsock() {
    let assets = Assets::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The owner: a simulated hierarchy, a broker that releases the model's
    // key to a simulated guest with the expected measurement, the sealed model.
    let (sim, fp) = common::fresh_sim();
    let measurement = hex::encode(SimSnpReport::default().measurement);
    let kb = dir.join("kbs");
    let kbs = start_kbs(
        &kb,
        &fp,
        &[(RESOURCE, &measurement)],
        std::fs::File::create(dir.join("kbs.log")).unwrap().into(),
    );
    let models = dir.join("models");
    std::fs::create_dir(&models).unwrap();
    let model = ciel_engine::demo_model_path();
    seal_registered(&model, &models.join("smollm2.csm"), RESOURCE, &kbs.url, &kb);

    // The image: the broker's CA pinned and the simulated platform's keys
    // inside (so measured with it), the runtime's arguments on the kernel
    // command line.
    // (The simulated keys in the layout `ciel --sim` reads from
    // $CIEL_DATA_DIR/sim/snp.)
    let mut files = vec![("etc/ciel/kbs-ca.pem".to_string(), kb.join("tls-ca.pem"))];
    std::fs::create_dir(dir.join("sim")).unwrap();
    for (name, bytes) in sim.to_files().unwrap() {
        let host = dir.join("sim").join(name);
        std::fs::write(&host, bytes).unwrap();
        files.push((format!("var/lib/ciel/sim/snp/{name}"), host));
    }
    let cmdline = format!(
        "console=ttyS0 panic=-1 CIEL_DATA_DIR=/var/lib/ciel RUST_LOG=info -- enclave serve --sim \
         --kbs {} --kbs-ca /etc/ciel/kbs-ca.pem --kbs-via vsock://2:{RELAY_PORT} \
         --model-from vsock://2:{BLOB_PORT} --model-blob smollm2.csm \
         --model-name smollm2-135m-instruct --listen vsock://any:{API_PORT} --kbs-timeout 120",
        kbs.url
    );
    // The runtime must not depend on where it was built, or nobody could
    // rebuild the image bit for bit: no checkout path inside.
    let init = std::fs::read(&assets.init).unwrap();
    let checkout = env!("CARGO_MANIFEST_DIR").as_bytes();
    assert!(
        !init.windows(checkout.len()).any(|w| w == checkout),
        "{} embeds the checkout path {}",
        assets.init.display(),
        env!("CARGO_MANIFEST_DIR")
    );
    eprintln!(
        "runtime (/init): {} bytes, sha256 {}",
        init.len(),
        sha256_hex(&init)
    );
    let image = dir.join("image");
    build_image(&assets, &image, &files, &cmdline);
    // Rebuilt from the same inputs, the image is the same, byte for byte.
    build_image(&assets, &dir.join("again"), &files, &cmdline);
    let initrd = std::fs::read(image.join("initrd")).unwrap();
    assert_eq!(initrd, std::fs::read(dir.join("again/initrd")).unwrap());
    eprintln!(
        "image: initrd {} bytes, sha256 {}",
        initrd.len(),
        sha256_hex(&initrd)
    );

    let host = Host::start(&assets, dir, &models, &kbs.url);

    // The VM.
    let console = dir.join("console.log");
    let monitor = dir.join("monitor.sock");
    let booted = Instant::now();
    let mut vm = spawn(
        &mut qemu(&assets, &image, &host.vhost_socket, &console, &monitor),
        &dir.join("qemu.log"),
    );
    let report = |what: &str| -> String {
        format!(
            "{what}\n--- guest console ---\n{}\n--- qemu ---\n{}\n--- host shim ---\n{}\n--- vhost-device-vsock ---\n{}\n--- key broker ---\n{}",
            read_lossy(&console),
            read_lossy(&dir.join("qemu.log")),
            read_lossy(&dir.join("host.log")),
            read_lossy(&dir.join("vhost.log")),
            read_lossy(&dir.join("kbs.log")),
        )
    };
    let deadline = booted + Duration::from_secs(900);
    // The runtime's "serving" line (the only one naming its TLS key).
    while !read_lossy(&console).contains("tls_spki_sha256") {
        if let Ok(Some(status)) = vm.0.try_wait() {
            panic!(
                "{}",
                report(&format!("the VM stopped ({status}) before serving"))
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            report("the guest did not serve within 900 s")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let serving_after = booted.elapsed();

    // A client through the host shim: attested TLS to the guest in the VM.
    let policy = Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{fp}\"]\n[snp]\nmeasurements = [\"{measurement}\"]\n"
    ))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("https://127.0.0.1:{}", host.port);
    let client = rt
        .block_on(Client::connect(&url, policy))
        .unwrap_or_else(|e| panic!("{}", report(&format!("connect: {e}"))));
    let model_sha = sha256_hex(&std::fs::read(&model).unwrap());
    assert_eq!(client.verification().claims.model.sha256, model_sha);
    // Greedy, 8 tokens: llama.cpp's top choice leads its runner-up by at
    // least 1.3 logits at each of them, so any correct engine agrees.
    let system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
    let question = "Explain in a few sentences why the sky is blue.";
    let answer = rt
        .block_on(client.chat(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "max_tokens": 8,
        })))
        .unwrap_or_else(|e| panic!("{}", report(&format!("chat: {e}"))));
    let first_answer_after = booted.elapsed();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 8);
    assert!(
        text.len() > 20 && oracle_answer(system, question).starts_with(text),
        "{}",
        report(&format!("the VM's answer {text:?} is not llama.cpp's"))
    );
    eprintln!(
        "boot to serving: {:.1} s; boot to first answer: {:.1} s (QEMU TCG); answer: {text:?}",
        serving_after.as_secs_f64(),
        first_answer_after.as_secs_f64()
    );

    // Ctrl-Alt-Del: PID 1 passes it on as SIGINT, the runtime stops in
    // order, and the VM powers itself off.
    let mut mon = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
    mon.write_all(b"sendkey ctrl-alt-delete\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = vm.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            report("the VM did not power off")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let console_text = read_lossy(&console);
    assert!(
        status.success(),
        "{}",
        report(&format!("QEMU exited {status}"))
    );
    assert!(
        console_text.contains("SIGINT: asking the runtime to stop")
            && console_text.contains("powering off"),
        "{}",
        report("no orderly stop on the console")
    );
    // PID 1 loaded every module the image lists.
    let listed = std::fs::read_to_string(assets.modules.join("load-order"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        console_text.contains(&format!("ciel-init: {listed} module(s) loaded")),
        "{}",
        report("not every module loaded")
    );
    // Neither the prompt nor the answer shows on the guest's console.
    assert!(!console_text.contains(question) && !console_text.contains(text));
}
