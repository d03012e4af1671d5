//! configfs-tsm (`/sys/kernel/config/tsm/report`): the kernel's
//! vendor-neutral way for a guest to get an attestation report. The file
//! protocol (Documentation/ABI/testing/configfs-tsm):
//!
//! 1. `mkdir report/<name>` creates a request;
//! 2. write the 64-byte `inblob` (our `report_data`);
//! 3. read `generation`, then `outblob` (the report or quote), then
//!    `generation` again: if it changed, another writer raced us and the
//!    report may not be for our `inblob`;
//! 4. read `auxblob` (SNP: the certificate table) and `provider`;
//! 5. `rmdir` the request.
//!
//! The file operations go through [`TsmFs`] so the protocol is tested
//! against an imitation of the kernel's behaviour.

use std::io;
use std::path::{Path, PathBuf};

/// The configfs-tsm root on a real guest.
pub const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// The file operations configfs-tsm needs.
pub trait TsmFs {
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl TsmFs for RealFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// A report obtained through configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The evidence (SNP report or TDX quote).
    pub outblob: Vec<u8>,
    /// Auxiliary data (SNP certificate table), when the provider gives one.
    pub auxblob: Option<Vec<u8>>,
    /// "sev_guest", "tdx_guest", ...
    pub provider: String,
}

/// Why no report was obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsmError {
    #[error("configfs-tsm {step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "configfs-tsm {path}: generation changed from {before} to {after} while reading outblob (a concurrent writer)"
    )]
    Raced {
        path: PathBuf,
        before: u64,
        after: u64,
    },
    #[error("configfs-tsm {path}: generation is {0:?}, not a number", String::from_utf8_lossy(.got))]
    Generation { path: PathBuf, got: Vec<u8> },
    #[error("configfs-tsm {path}: empty outblob")]
    Empty { path: PathBuf },
}

/// Requests a report binding `report_data` under `root` (normally
/// [`TSM_REPORT_ROOT`]). The request directory is removed afterwards,
/// whatever happened.
pub fn get_report(
    fs: &impl TsmFs,
    root: &Path,
    name: &str,
    report_data: &[u8; 64],
) -> Result<TsmReport, TsmError> {
    let dir = root.join(name);
    fs.mkdir(&dir).map_err(|source| TsmError::Io {
        step: "mkdir",
        path: dir.clone(),
        source,
    })?;
    let result = request(fs, &dir, report_data);
    let removed = fs.rmdir(&dir);
    let report = result?;
    removed.map_err(|source| TsmError::Io {
        step: "rmdir",
        path: dir.clone(),
        source,
    })?;
    Ok(report)
}

fn request(fs: &impl TsmFs, dir: &Path, report_data: &[u8; 64]) -> Result<TsmReport, TsmError> {
    let io = |step: &'static str, path: PathBuf| move |source| TsmError::Io { step, path, source };
    let inblob = dir.join("inblob");
    fs.write(&inblob, report_data)
        .map_err(io("write", inblob.clone()))?;
    let before = generation(fs, dir)?;
    let out_path = dir.join("outblob");
    let outblob = fs.read(&out_path).map_err(io("read", out_path.clone()))?;
    let after = generation(fs, dir)?;
    if before != after {
        return Err(TsmError::Raced {
            path: dir.to_path_buf(),
            before,
            after,
        });
    }
    if outblob.is_empty() {
        return Err(TsmError::Empty { path: out_path });
    }
    let aux_path = dir.join("auxblob");
    let auxblob = match fs.read(&aux_path) {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(TsmError::Io {
                step: "read",
                path: aux_path,
                source,
            });
        }
    };
    let prov_path = dir.join("provider");
    let provider = fs.read(&prov_path).map_err(io("read", prov_path.clone()))?;
    Ok(TsmReport {
        outblob,
        auxblob,
        provider: String::from_utf8_lossy(&provider).trim().to_string(),
    })
}

fn generation(fs: &impl TsmFs, dir: &Path) -> Result<u64, TsmError> {
    let path = dir.join("generation");
    let raw = fs.read(&path).map_err(|source| TsmError::Io {
        step: "read",
        path: path.clone(),
        source,
    })?;
    String::from_utf8_lossy(&raw)
        .trim()
        .parse()
        .map_err(|_| TsmError::Generation { path, got: raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Imitates the kernel over a real temporary directory: writing
    /// `inblob` bumps `generation`; reading `outblob` produces a "report"
    /// embedding the inblob. `race` makes another writer bump the
    /// generation while outblob is read.
    struct FakeKernel {
        race: bool,
        rmdirs: Cell<u32>,
    }

    impl TsmFs for FakeKernel {
        fn mkdir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            std::fs::write(path.join("generation"), "0\n")?;
            std::fs::write(path.join("provider"), "sev_guest\n")
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            let dir = path.parent().ok_or(io::ErrorKind::NotFound)?;
            let g: u64 = std::fs::read_to_string(dir.join("generation"))?
                .trim()
                .parse()
                .unwrap_or(0);
            std::fs::write(dir.join("generation"), format!("{}\n", g + 1))?;
            std::fs::write(path, data)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            if path.ends_with("outblob") {
                let dir = path.parent().ok_or(io::ErrorKind::NotFound)?;
                let mut report = b"REPORT:".to_vec();
                report.extend(std::fs::read(dir.join("inblob"))?);
                if self.race {
                    self.write(&dir.join("inblob"), &[0u8; 64])?;
                }
                return Ok(report);
            }
            std::fs::read(path)
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.rmdirs.set(self.rmdirs.get() + 1);
            std::fs::remove_dir_all(path)
        }
    }

    #[test]
    fn reads_the_report_for_our_inblob_and_cleans_up() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fs = FakeKernel {
            race: false,
            rmdirs: Cell::new(0),
        };
        let r =
            get_report(&fs, root.path(), "ciel-1", &[7u8; 64]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&r.outblob[..7], b"REPORT:");
        assert_eq!(&r.outblob[7..], &[7u8; 64]);
        assert_eq!(r.provider, "sev_guest");
        assert_eq!(r.auxblob, None);
        assert!(!root.path().join("ciel-1").exists());
    }

    #[test]
    fn a_concurrent_writer_is_detected_and_the_request_removed() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fs = FakeKernel {
            race: true,
            rmdirs: Cell::new(0),
        };
        let err = get_report(&fs, root.path(), "ciel-2", &[1u8; 64]).err();
        assert!(
            matches!(
                err,
                Some(TsmError::Raced {
                    before: 1,
                    after: 2,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(fs.rmdirs.get(), 1);
        assert!(!root.path().join("ciel-2").exists());
    }

    #[test]
    fn missing_configfs_is_a_clear_error() {
        let err = get_report(&RealFs, Path::new("/nonexistent/tsm/report"), "x", &[0; 64]).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("mkdir /nonexistent/tsm/report/x"), "{msg}");
    }
}
