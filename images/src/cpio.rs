//! Deterministic `newc` cpio archives (the Linux initramfs format): entries
//! sorted by path, inode numbers assigned in that order, uid/gid 0, mtime 0,
//! device nodes created without root (they are just headers). The same
//! entries always give the same bytes.

use std::collections::BTreeMap;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, data: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// Why an archive could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpioError {
    #[error("cpio entry {0:?}: paths are relative, without NUL, '.' or '..' segments")]
    BadPath(String),
    #[error("cpio entry {0:?}: larger than 4 GiB")]
    TooLarge(String),
    #[error("cpio entry {0:?}: parent directory missing")]
    MissingParent(String),
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A set of entries keyed by path; iteration is sorted, which is the point.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry; its parent directories must be added too.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\0')
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..");
        if bad {
            return Err(CpioError::BadPath(path.to_string()));
        }
        self.entries.insert(path.to_string(), node);
        Ok(())
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    /// The archive bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CpioError> {
        let mut out = Vec::new();
        for path in self.entries.keys() {
            if let Some((parent, _)) = path.rsplit_once('/')
                && !matches!(self.entries.get(parent), Some(Node::Dir { .. }))
            {
                return Err(CpioError::MissingParent(path.clone()));
            }
        }
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::File { mode, data } => (S_IFREG | (mode & 0o7777), 1, data, (0, 0)),
                Node::Dir { mode } => (S_IFDIR | (mode & 0o7777), 2, &[], (0, 0)),
                Node::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Node::CharDevice { mode, major, minor } => {
                    (S_IFCHR | (mode & 0o7777), 1, &[], (*major, *minor))
                }
            };
            let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.clone()))?;
            write_entry(&mut out, path, ino, mode, nlink, size, rdev, data);
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, 0, (0, 0), &[]);
        Ok(out)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    data: &[u8],
) {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        // Inserted out of order on purpose.
        let _ = a.insert(
            "init",
            Node::File {
                mode: 0o755,
                data: b"#!/bin/sh\n".to_vec(),
            },
        );
        let _ = a.insert(
            "dev/console",
            Node::CharDevice {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        let _ = a.insert("dev", Node::Dir { mode: 0o755 });
        let _ = a.insert("lib", Node::Dir { mode: 0o755 });
        let _ = a.insert(
            "lib/ld",
            Node::Symlink {
                target: "../init".into(),
            },
        );
        a
    }

    #[test]
    fn same_entries_same_bytes_sorted_with_fixed_metadata() {
        let (a, b) = (sample().to_bytes(), sample().to_bytes());
        assert_eq!(a, b);
        let bytes = a.unwrap_or_default();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        // Sorted: dev, dev/console, init, lib, lib/ld, trailer.
        let names: Vec<usize> = [
            "dev\0",
            "dev/console\0",
            "init\0",
            "lib\0",
            "lib/ld\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap_or(usize::MAX))
        .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        // The console node: inode 2, S_IFCHR|0600, rdev 5:1.
        let at = text.find("dev/console").unwrap_or(0) - 110;
        let hdr = &text[at..at + 110];
        assert_eq!(&hdr[6..14], "00000002");
        assert_eq!(&hdr[14..22], "00002180");
        assert_eq!(&hdr[78..94], "0000000500000001");
    }

    #[test]
    fn refuses_unsafe_paths_and_orphans() {
        let mut a = Archive::new();
        for p in ["", "/abs", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(a.insert(p, Node::Dir { mode: 0o755 }).is_err(), "{p:?}");
        }
        assert!(a.insert("x/y", Node::Dir { mode: 0o755 }).is_ok());
        assert_eq!(a.to_bytes(), Err(CpioError::MissingParent("x/y".into())));
    }
}
