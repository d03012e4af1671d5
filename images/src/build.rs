//! The guest image: a deterministic initramfs with the enclave runtime as
//! `/init`, the kernel modules it loads (in order), the kernel and its
//! command line, and a manifest of digests. The same inputs always give
//! the same bytes, so anyone can rebuild the image and recompute its
//! launch measurement.

use crate::cpio::{Archive, CpioError, Node};

/// Inputs of an image.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    /// The enclave runtime, statically linked; becomes `/init`.
    pub init: Vec<u8>,
    /// Kernel modules in load order: (file name, contents).
    pub modules: Vec<(String, Vec<u8>)>,
    /// Further files: (path in the image, relative; contents). Their parent
    /// directories are created. For what the runtime reads at boot and must
    /// be measured with it: the key broker's CA, a simulated platform's keys.
    pub files: Vec<(String, Vec<u8>)>,
    pub cmdline: String,
}

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("module name {0:?}: only a plain file name ending in .ko is allowed")]
    ModuleName(String),
    #[error("module {0:?} is listed twice")]
    DuplicateModule(String),
    #[error("image file {0:?}: a relative path outside the runtime's own entries is required")]
    FilePath(String),
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error(transparent)]
    Cpio(#[from] CpioError),
}

/// Where modules live in the initramfs, and the file naming their order.
pub const MODULE_DIR: &str = "lib/modules";
pub const MODULE_ORDER: &str = "etc/ciel/modules.order";

/// Builds the initramfs bytes.
pub fn initramfs(inputs: &ImageInputs) -> Result<Vec<u8>, BuildError> {
    if inputs.cmdline.contains('\n') || inputs.cmdline.len() > 4096 {
        return Err(BuildError::Cmdline("one line, at most 4096 bytes".into()));
    }
    let mut a = Archive::new();
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "etc/ciel",
        "lib",
        MODULE_DIR,
        "sys/kernel",
        "sys/kernel/config",
    ] {
        a.insert(dir, Node::Dir { mode: 0o755 })?;
    }
    // The console node exists before any devtmpfs is mounted: the kernel
    // opens it for PID 1's stdio.
    a.insert(
        "dev/console",
        Node::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    a.insert(
        "init",
        Node::File {
            mode: 0o755,
            data: inputs.init.clone(),
        },
    )?;
    let mut order = String::new();
    for (name, data) in &inputs.modules {
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".ko") {
            return Err(BuildError::ModuleName(name.clone()));
        }
        if order.lines().any(|l| l == name) {
            return Err(BuildError::DuplicateModule(name.clone()));
        }
        a.insert(
            &format!("{MODULE_DIR}/{name}"),
            Node::File {
                mode: 0o644,
                data: data.clone(),
            },
        )?;
        order.push_str(name);
        order.push('\n');
    }
    a.insert(
        MODULE_ORDER,
        Node::File {
            mode: 0o644,
            data: order.into_bytes(),
        },
    )?;
    for (path, data) in &inputs.files {
        add_file(&mut a, path, data)?;
    }
    Ok(a.to_bytes()?)
}

/// Adds an extra file, creating its parent directories. Called after the
/// runtime's own entries are in, so none of them (`/init`, the modules,
/// their order, the console, a directory) can be replaced; nor can a file
/// be put where the modules live or under `/dev`, which devtmpfs hides.
fn add_file(a: &mut Archive, path: &str, data: &[u8]) -> Result<(), BuildError> {
    let reserved = path.starts_with(&format!("{MODULE_DIR}/")) || path.starts_with("dev/");
    if reserved || a.get(path).is_some() {
        return Err(BuildError::FilePath(path.to_string()));
    }
    let mut parent = String::new();
    let segments: Vec<&str> = path.split('/').collect();
    for seg in segments.iter().take(segments.len().saturating_sub(1)) {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(seg);
        match a.get(&parent) {
            None => a.insert(&parent, Node::Dir { mode: 0o755 })?,
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(BuildError::FilePath(path.to_string())),
        }
    }
    a.insert(
        path,
        Node::File {
            mode: 0o600,
            data: data.to_vec(),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ImageInputs {
        ImageInputs {
            init: b"\x7fELF-enclave".to_vec(),
            modules: vec![
                ("vsock.ko".into(), b"m1".to_vec()),
                (
                    "vmw_vsock_virtio_transport_common.ko".into(),
                    b"m2".to_vec(),
                ),
            ],
            files: vec![("etc/ciel/kbs-ca.pem".into(), b"PEM".to_vec())],
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn deterministic_with_the_expected_entries() {
        let (a, b) = (initramfs(&inputs()), initramfs(&inputs()));
        assert_eq!(a, b);
        let bytes = a.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "init\0",
            "dev/console\0",
            "lib/modules/vsock.ko\0",
            "etc/ciel/modules.order\0",
            "etc/ciel/kbs-ca.pem\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        // Load order is kept as given, not sorted.
        assert!(text.contains("vsock.ko\nvmw_vsock_virtio_transport_common.ko\n"));
        let mut other = inputs();
        other.init.push(0);
        assert_ne!(initramfs(&other).unwrap_or_default(), bytes);
    }

    #[test]
    fn refuses_odd_module_names_and_multiline_cmdlines() {
        let mut i = inputs();
        i.modules.push(("../evil.ko".into(), vec![]));
        assert!(matches!(initramfs(&i), Err(BuildError::ModuleName(_))));
        let mut i = inputs();
        i.modules.push(("vsock.ko".into(), vec![]));
        assert!(matches!(initramfs(&i), Err(BuildError::DuplicateModule(_))));
        let mut i = inputs();
        i.cmdline = "a\nb".into();
        assert!(initramfs(&i).is_err());
    }

    #[test]
    fn extra_files_get_their_directories_but_cannot_replace_the_runtime() {
        let mut i = inputs();
        i.files = vec![("var/lib/ciel/sim/snp/vcek.key".into(), b"k".to_vec())];
        let bytes = initramfs(&i).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "var\0",
            "var/lib\0",
            "var/lib/ciel/sim/snp\0",
            "var/lib/ciel/sim/snp/vcek.key\0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        for bad in [
            "init",
            "lib/modules/vsock.ko",
            "etc/ciel/modules.order",
            "dev/console",
            "etc/ciel/kbs-ca.pem/x",
            "etc",
            "../x",
            "/etc/x",
        ] {
            let mut i = inputs();
            i.files.push((bad.into(), vec![]));
            assert!(initramfs(&i).is_err(), "{bad}");
        }
    }
}
