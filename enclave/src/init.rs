//! The guest's PID 1. In the image the runtime is `/init`; the kernel starts
//! it with the words after `--` on its (measured) command line, e.g.
//! `console=ttyS0 -- enclave serve --kbs … --listen vsock://any:8000`.
//! As PID 1 it mounts what the runtime needs (`/proc`, `/sys`, `/dev`),
//! loads the image's kernel modules in their recorded order (virtio, vsock
//! transports, configfs), mounts configfs (for configfs-tsm), runs the
//! runtime as its child with those words, reaps every child, passes
//! SIGTERM/SIGINT/SIGPWR on to the runtime, and powers the VM off when the
//! runtime ends — a guest never lingers without its service.

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;

/// Where the image keeps its modules and their load order
/// (`ciel_images::build::{MODULE_DIR, MODULE_ORDER}`, rooted at `/`).
pub const MODULE_DIR: &str = "/lib/modules";
pub const MODULE_ORDER: &str = "/etc/ciel/modules.order";

/// Signals PID 1 waits for; the runtime's own `main` unblocks them again
/// (a blocked mask survives `exec`).
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
    ] {
        set.add(s);
    }
    set
}

/// File systems PID 1 mounts before loading modules: (source, target, type).
const EARLY_MOUNTS: [(&str, &str, &str); 3] = [
    ("proc", "/proc", "proc"),
    ("sysfs", "/sys", "sysfs"),
    ("devtmpfs", "/dev", "devtmpfs"),
];

/// configfs (for configfs-tsm) comes after the modules: distribution
/// kernels such as Debian's cloud kernel build it as one.
const CONFIGFS: (&str, &str, &str) = ("configfs", "/sys/kernel/config", "configfs");

fn mount_fs((source, target, fstype): (&str, &str, &str)) {
    let _ = std::fs::create_dir_all(target);
    match mount(
        Some(source),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) => say(format_args!("mounted {fstype} on {target}")),
        Err(Errno::EBUSY) => {}
        // configfs may be absent from the kernel: the runtime then says so
        // itself when it looks for configfs-tsm.
        Err(e) => say(format_args!("mount {fstype} on {target}: {e}")),
    }
}

fn say(what: std::fmt::Arguments<'_>) {
    eprintln!("ciel-init: {what}");
}

/// Mounts, loads modules, runs `program args` as the runtime and supervises
/// it; never returns (powers off). `program` is normally `/init` itself.
pub fn run(program: &Path, args: &[OsString]) -> ! {
    let signals = supervised_signals();
    if let Err(e) = signals.thread_block() {
        say(format_args!("cannot block signals: {e}"));
    }
    for fs in EARLY_MOUNTS {
        mount_fs(fs);
    }
    load_modules(Path::new(MODULE_DIR), Path::new(MODULE_ORDER));
    mount_fs(CONFIGFS);
    let status = match std::process::Command::new(program).args(args).spawn() {
        Ok(child) => supervise(Pid::from_raw(child.id() as i32), &signals),
        Err(e) => {
            say(format_args!("cannot start {}: {e}", program.display()));
            None
        }
    };
    say(format_args!(
        "the runtime ended ({}); powering off",
        status.map_or("no status".to_string(), |s| format!("{s:?}"))
    ));
    nix::unistd::sync();
    let e = match reboot(RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    say(format_args!("power off failed: {e}"));
    std::process::exit(1)
}

/// Loads each module named in `order` from `dir`; one already loaded is
/// fine, any other failure is reported and the rest still loaded.
pub fn load_modules(dir: &Path, order: &Path) -> usize {
    let Ok(list) = std::fs::read_to_string(order) else {
        return 0;
    };
    let mut loaded = 0;
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let result = match std::fs::File::open(&path) {
            Ok(f) => nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()),
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        match result {
            Ok(()) | Err(Errno::EEXIST) => loaded += 1,
            Err(e) => say(format_args!("module {}: {e}", path.display())),
        }
    }
    loaded
}

/// Waits for signals: reaps every exited child (orphans re-parented to
/// PID 1 included), forwards termination requests to the runtime, and
/// returns the runtime's exit status once it has ended.
fn supervise(runtime: Pid, signals: &SigSet) -> Option<WaitStatus> {
    loop {
        // Reap first: a child may have ended before its SIGCHLD could wait.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) if status.pid() == Some(runtime) => return Some(status),
                Ok(_) => continue,
                Err(Errno::ECHILD) => return None,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    say(format_args!("waitpid: {e}"));
                    return None;
                }
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(s) => {
                say(format_args!("{s}: asking the runtime to stop"));
                let _ = kill(runtime, Signal::SIGTERM);
            }
            Err(e) => say(format_args!("sigwait: {e}")),
        }
    }
}
