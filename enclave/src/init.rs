//! The guest's PID 1. In the image the runtime is `/init`; the kernel starts
//! it with the words after `--` on its (measured) command line, e.g.
//! `console=ttyS0 -- enclave serve --kbs … --listen vsock://any:8000`.
//! As PID 1 it mounts what the runtime needs (`/proc`, `/sys`, `/dev`),
//! loads the image's kernel modules in their recorded order (virtio, vsock
//! transports, configfs), mounts configfs (for configfs-tsm), sets the
//! loopback interface up, runs the runtime as its child with those words,
//! reaps every child, passes SIGTERM/SIGINT/SIGPWR (and Ctrl-Alt-Del, as
//! SIGINT) on to the runtime, and powers the VM off when the runtime ends —
//! a guest never lingers without its service.

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
    // Ctrl-Alt-Del (a VMM's "send key", or an operator at the console)
    // then reaches PID 1 as SIGINT and stops the runtime in order, instead
    // of resetting the VM under its clients. (Outside the initial PID
    // namespace the kernel refuses this, harmlessly.)
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        say(format_args!("Ctrl-Alt-Del stays a reset: {e}"));
    }
    let loaded = load_modules(Path::new(MODULE_DIR), Path::new(MODULE_ORDER));
    say(format_args!("{loaded} module(s) loaded"));
    mount_fs(CONFIGFS);
    // The runtime bridges its key-broker TLS over 127.0.0.1, and a fresh
    // kernel's loopback interface is down.
    match loopback_up() {
        Ok(()) => say(format_args!("loopback up")),
        Err(e) => say(format_args!("cannot bring the loopback interface up: {e}")),
    }
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
fn load_modules(dir: &Path, order: &Path) -> usize {
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

/// Sets `lo` up with one rtnetlink request (RTM_NEWLINK, IFF_UP) and
/// waits for the kernel's acknowledgement. Safe wrappers only: nix has no
/// interface-flags call, but netlink is just bytes on a socket.
pub fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
    use std::os::fd::AsRawFd;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST_ACK: u16 = 0x1 | 0x4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    let index = nix::net::if_::if_nametoindex("lo")?;
    let sock = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // nlmsghdr (length, type, flags, sequence, port) then ifinfomsg
    // (family, pad, type, index, flags, change mask).
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[0, 0, 0, 0]);
    msg.extend_from_slice(&index.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes());
    nix::sys::socket::send(sock.as_raw_fd(), &msg, MsgFlags::empty())?;
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    // The acknowledgement: nlmsghdr with type NLMSG_ERROR, then the error
    // code (0 for success, else a negative errno).
    let reply = buf.get(..n).unwrap_or_default();
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    let code = reply
        .get(16..20)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes);
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(Errno::from_raw(-e)),
        _ => Err(Errno::EPROTO),
    }
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
