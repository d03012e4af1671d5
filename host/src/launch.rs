//! QEMU command lines for confidential guests: AMD SEV-SNP (`sev-snp-guest`
//! with `kernel-hashes=on`, so the kernel, initrd and command line are in
//! the launch measurement) and Intel TDX (`tdx-guest`), with guest memory
//! from memfd, vhost-vsock for the host shim, and VFIO passthrough of GPUs
//! in confidential-computing mode. Built as an argument vector (never a
//! shell string), so nothing in a path or command line is interpreted.

use std::path::PathBuf;

/// The confidential platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Snp,
    Tdx,
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub platform: Platform,
    pub qemu: PathBuf,
    /// OVMF (SNP: an AmdSev build with kernel hashes; TDX: TDVF).
    pub firmware: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// vsock context ID of the guest.
    pub guest_cid: u32,
    /// PCI addresses of GPUs to pass through (e.g. `0000:41:00.0`).
    pub gpus: Vec<String>,
    /// SNP: CPU model (`EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`).
    pub cpu_model: String,
}

/// Why a launch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    #[error("launch: {0}")]
    Invalid(String),
}

fn valid_bdf(s: &str) -> bool {
    // [domain:]bus:device.function, hex.
    let (rest, func) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c))
        && match parts.as_slice() {
            [dom, bus, dev] => hex(dom, 4) && hex(bus, 2) && hex(dev, 2),
            [bus, dev] => hex(bus, 2) && hex(dev, 2),
            _ => false,
        }
}

/// The QEMU argument vector (program first).
pub fn qemu_args(s: &LaunchSpec) -> Result<Vec<String>, LaunchError> {
    let bad = |m: String| LaunchError::Invalid(m);
    if s.vcpus == 0 || s.vcpus > 512 {
        return Err(bad(format!("{} vCPUs (1..=512)", s.vcpus)));
    }
    if s.memory_mib < 512 {
        return Err(bad(format!(
            "{} MiB of memory (at least 512)",
            s.memory_mib
        )));
    }
    if s.guest_cid < 3 {
        return Err(bad(format!(
            "vsock CID {} is reserved (0-2); use 3 or above",
            s.guest_cid
        )));
    }
    if let Some(g) = s.gpus.iter().find(|g| !valid_bdf(g)) {
        return Err(bad(format!(
            "GPU address {g:?} is not a PCI BDF like 0000:41:00.0"
        )));
    }
    let p = |x: &PathBuf| x.display().to_string();
    let mut a: Vec<String> = vec![s.qemu.display().to_string()];
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    let mem = format!("{}M", s.memory_mib);
    push(&["-nodefaults", "-nographic", "-no-user-config"]);
    push(&["-smp", &s.vcpus.to_string(), "-m", &mem]);
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=ram1,size={mem},share=true,prealloc=false"),
    ]);
    match s.platform {
        Platform::Snp => {
            push(&["-accel", "kvm", "-cpu", &s.cpu_model]);
            push(&[
                "-machine",
                "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
            ]);
            // kernel-hashes=on puts the kernel, initrd and command line
            // hashes into the measured OVMF page: the launch digest covers them.
            push(&[
                "-object",
                "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
            ]);
        }
        Platform::Tdx => {
            push(&["-accel", "kvm", "-cpu", "host"]);
            push(&[
                "-machine",
                "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1",
            ]);
            push(&["-object", "tdx-guest,id=tdx0"]);
        }
    }
    push(&[
        "-bios",
        &p(&s.firmware),
        "-kernel",
        &p(&s.kernel),
        "-initrd",
        &p(&s.initrd),
        "-append",
        &s.cmdline,
    ]);
    push(&[
        "-device",
        &format!("vhost-vsock-pci,guest-cid={}", s.guest_cid),
    ]);
    push(&["-serial", "stdio"]);
    for (i, gpu) in s.gpus.iter().enumerate() {
        // One root port per GPU; large 64-bit MMIO for Hopper BARs.
        push(&[
            "-device",
            &format!("pcie-root-port,id=gpu-port{i},bus=pcie.0,chassis={}", i + 1),
        ]);
        push(&["-device", &format!("vfio-pci,host={gpu},bus=gpu-port{i}")]);
    }
    if !s.gpus.is_empty() {
        push(&["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=262144"]);
    }
    Ok(a)
}

/// The vector as one line a person can paste (single-quoted where needed).
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|x| {
            if !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@%+".contains(c))
            {
                x.clone()
            } else {
                format!("'{}'", x.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(platform: Platform) -> LaunchSpec {
        LaunchSpec {
            platform,
            qemu: "qemu-system-x86_64".into(),
            firmware: "/usr/share/ovmf/OVMF.amdsev.fd".into(),
            kernel: "/images/vmlinuz".into(),
            initrd: "/images/initrd.cpio".into(),
            cmdline: "console=ttyS0 ciel.kbs=https://kbs:8443".into(),
            vcpus: 4,
            memory_mib: 8192,
            guest_cid: 3,
            gpus: vec!["0000:41:00.0".into()],
            cpu_model: "EPYC-Genoa".into(),
        }
    }

    fn pairs(a: &[String]) -> Vec<(String, String)> {
        a.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect()
    }

    #[test]
    fn snp_command_measures_the_kernel_and_passes_the_gpu() {
        let a = qemu_args(&spec(Platform::Snp)).unwrap_or_default();
        let p = pairs(&a);
        assert!(p.contains(&(
            "-object".into(),
            "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on".into()
        )));
        assert!(
            p.iter()
                .any(|(k, v)| k == "-machine" && v.contains("confidential-guest-support=sev0"))
        );
        assert!(p.contains(&(
            "-device".into(),
            "vfio-pci,host=0000:41:00.0,bus=gpu-port0".into()
        )));
        assert!(p.contains(&("-device".into(), "vhost-vsock-pci,guest-cid=3".into())));
        assert!(p.contains(&(
            "-append".into(),
            "console=ttyS0 ciel.kbs=https://kbs:8443".into()
        )));
        assert!(shell_line(&a).contains("-append 'console=ttyS0 ciel.kbs=https://kbs:8443'"));
    }

    #[test]
    fn tdx_command_uses_a_td() {
        let a = qemu_args(&spec(Platform::Tdx)).unwrap_or_default();
        let p = pairs(&a);
        assert!(p.contains(&("-object".into(), "tdx-guest,id=tdx0".into())));
        assert!(p.iter().any(|(k, v)| k == "-machine"
            && v.contains("kernel-irqchip=split,confidential-guest-support=tdx0")));
        assert!(!a.iter().any(|x| x.contains("sev-snp")));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut s = spec(Platform::Snp);
        s.gpus = vec!["41:00.0; rm -rf /".into()];
        assert!(qemu_args(&s).is_err());
        let mut s = spec(Platform::Snp);
        s.guest_cid = 2;
        assert!(qemu_args(&s).is_err());
        let mut s = spec(Platform::Tdx);
        s.vcpus = 0;
        assert!(qemu_args(&s).is_err());
        assert!(
            valid_bdf("41:00.0")
                && valid_bdf("0000:c1:00.7")
                && !valid_bdf("0000:41:00.8")
                && !valid_bdf("41:0.0")
        );
    }
}
