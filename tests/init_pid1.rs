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

fn as_pid1(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount", "--propagation", "private"])
        .arg(env!("CARGO_BIN_EXE_ciel"))
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
    assert!(
        stderr.contains("the runtime ended (Exited(Pid(2), 0)); powering off"),
        "{stderr}"
    );
    assert_eq!(out.status.signal(), Some(SIGINT), "{stderr}");

    // A runtime that fails is reported with its status, and still ends the VM.
    let out = as_pid1(&["enclave", "serve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--kbs <KBS>"), "{stderr}");
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
    let unshare = as_pid1(&[
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
    // PID 1 of the namespace is unshare's child; wait for the runtime (its
    // child) to be up before asking it to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let init = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .unwrap_or_default();
        if let Some(init) = children.split_whitespace().next() {
            let runtime = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
                .unwrap_or_default();
            if !runtime.trim().is_empty() {
                break init.to_string();
            }
        }
        assert!(Instant::now() < deadline, "PID 1 never started its runtime");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill")
        .args(["-TERM", &init])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = unshare.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SIGTERM: asking the runtime to stop"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the runtime ended (Exited(Pid(2), 0)); powering off"),
        "{stderr}"
    );
    assert_eq!(out.status.signal(), Some(SIGINT), "{stderr}");
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
