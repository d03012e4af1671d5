//! The binary as the guest's PID 1, in a fresh PID and mount namespace
//! (`unshare`, as root; CI runs as root): it mounts what the runtime needs,
//! runs itself with its arguments as the runtime, passes SIGTERM on, reaps
//! the runtime and powers off. In a child PID namespace, `reboot(2)`'s
//! power-off ends that namespace's init with SIGINT, which `unshare` passes
//! on as its own end — the kernel's sign that the power-off was asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// `unshare` passes on the signal that ended the namespace's init.
const SIGINT: i32 = 2;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under the name the kernel runs, `init` (as PID 1 by any
/// other name it is the plain CLI, as a container's entrypoint is).
fn init_binary() -> std::path::PathBuf {
    static LINK: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    LINK.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ciel-init-pid1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("init");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ciel"), &link).unwrap();
        link
    })
    .clone()
}

fn as_pid1(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    // A fresh network namespace too: its loopback interface starts down,
    // as a VM's does, and the runtime below needs 127.0.0.1.
    c.args([
        "--pid",
        "--fork",
        "--mount",
        "--net",
        "--propagation",
        "private",
    ])
    .arg(init_binary())
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

#[test]
fn as_pid_1_the_runtime_runs_and_its_end_powers_the_vm_off() {
    let out = as_pid1(&["--version"]).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.starts_with("ciel "),
        "the runtime's own output: {stdout}"
    );
    assert!(
        stderr.contains("ciel-init: mounted proc on /proc"),
        "{stderr}"
    );
    assert!(stderr.contains("ciel-init: loopback up"), "{stderr}");
    assert!(
        stderr.contains("the runtime ended (Exited(Pid(2), 0)); powering off"),
        "{stderr}"
    );
    assert_eq!(out.status.signal(), Some(SIGINT), "{stderr}");

    // A runtime that fails is reported with its status, and still ends the VM.
    let out = as_pid1(&["enclave", "serve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen <LISTEN>"), "{stderr}");
    assert!(
        stderr.contains("(Exited(Pid(2), 2)); powering off"),
        "{stderr}"
    );
    assert_eq!(out.status.signal(), Some(SIGINT), "{stderr}");
}

#[test]
fn sigterm_to_pid_1_stops_the_runtime_gracefully_then_powers_off() {
    // A long-running runtime that drains and exits 0 on SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let mut unshare = as_pid1(&[
        "host",
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--guest-api",
        &format!("unix:{}", dir.path().join("none.sock").display()),
        "--grace-secs",
        "1",
    ])
    .spawn()
    .unwrap();
    // The console, line by line: the runtime is ready for SIGTERM once it
    // says its API proxy listens (its signal handler is in place by then).
    let console = unshare.stderr.take().unwrap();
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(console)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("API proxy") => break,
            Ok(_) => {}
            Err(_) => panic!("the runtime never came up under PID 1"),
        }
    }
    // PID 1 of the namespace is unshare's child.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let init = children.split_whitespace().next().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &init])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = unshare.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(
        stderr.contains("SIGTERM: asking the runtime to stop"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the runtime ended (Exited(Pid(2), 0)); powering off"),
        "{stderr}"
    );
    assert_eq!(status.signal(), Some(SIGINT), "{stderr}");
}

#[test]
fn pid_1_looks_for_modules_where_the_image_build_puts_them() {
    assert_eq!(
        format!("/{}", ciel_images::build::MODULE_DIR),
        ciel_enclave::init::MODULE_DIR
    );
    assert_eq!(
        format!("/{}", ciel_images::build::MODULE_ORDER),
        ciel_enclave::init::MODULE_ORDER
    );
}

#[test]
fn as_pid_1_by_another_name_it_is_the_plain_cli() {
    // A container's entrypoint (`/ciel …`) is PID 1 too; there the
    // container runtime owns mounts and power, so nothing of init runs.
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--propagation", "private"])
        .arg(env!("CARGO_BIN_EXE_ciel"))
        .arg("--version")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ciel "));
    assert!(!stderr.contains("ciel-init"), "{stderr}");
}
