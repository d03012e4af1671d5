//! # ciel-host
//!
//! The untrusted host shim: it carries ciphertext between clients, the key
//! broker and the guest, and serves the sealed model. Nothing it does can
//! make a verifier accept; it is built to be boring and bounded.
//!
//! This crate starts with the transport addresses every connection names.

#![forbid(unsafe_code)]

pub mod launch;

use std::fmt;
use std::path::PathBuf;

/// Where to connect or listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// AF_VSOCK context ID and port.
    Vsock { cid: u32, port: u32 },
    /// A Unix socket; with `port`, the Firecracker / cloud-hypervisor /
    /// vhost-user-vsock host side that expects `CONNECT <port>\n` first.
    Unix { path: PathBuf, port: Option<u32> },
    /// TCP, for development.
    Tcp { host: String, port: u16 },
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("address {0:?}: expected vsock://CID:PORT, unix:PATH[#PORT] or tcp://HOST:PORT")]
    Scheme(String),
    #[error("address {addr:?}: {what} {value:?} is not a valid number")]
    Number {
        addr: String,
        what: &'static str,
        value: String,
    },
    #[error("address {0:?}: empty path or host")]
    Empty(String),
}

/// vsock CIDs with special meaning that a guest-facing address must not use.
pub const VMADDR_CID_HYPERVISOR: u32 = 0;
pub const VMADDR_CID_LOCAL: u32 = 1;
/// The host itself.
pub const VMADDR_CID_HOST: u32 = 2;

impl Transport {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let num = |what: &'static str, v: &str| -> Result<u32, AddressError> {
            v.parse().map_err(|_| AddressError::Number {
                addr: s.into(),
                what,
                value: v.into(),
            })
        };
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or_else(|| AddressError::Scheme(s.into()))?;
            return Ok(Transport::Vsock {
                cid: num("CID", cid)?,
                port: num("port", port)?,
            });
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            let (path, port) = match rest.rsplit_once('#') {
                Some((p, port)) => (p, Some(num("port", port)?)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(AddressError::Empty(s.into()));
            }
            return Ok(Transport::Unix {
                path: PathBuf::from(path),
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| AddressError::Scheme(s.into()))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(AddressError::Empty(s.into()));
            }
            let port = port.parse().map_err(|_| AddressError::Number {
                addr: s.into(),
                what: "port",
                value: port.into(),
            })?;
            return Ok(Transport::Tcp {
                host: host.into(),
                port,
            });
        }
        Err(AddressError::Scheme(s.into()))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Transport::Unix { path, port: None } => write!(f, "unix:{}", path.display()),
            Transport::Unix {
                path,
                port: Some(p),
            } => write!(f, "unix:{}#{p}", path.display()),
            Transport::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Transport::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_each_transport() {
        for s in [
            "vsock://3:8443",
            "unix:/run/ciel/guest.sock",
            "unix:/run/fc/v.sock#1024",
            "tcp://127.0.0.1:8443",
            "tcp://[::1]:80",
        ] {
            let t = Transport::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            Transport::parse("vsock://3:8443"),
            Ok(Transport::Vsock { cid: 3, port: 8443 })
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for s in [
            "",
            "3:8443",
            "vsock://x:1",
            "vsock://3",
            "vsock://3:99999999999",
            "unix:",
            "tcp://:80",
            "tcp://h:70000",
            "http://h:1",
        ] {
            assert!(Transport::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
