//! Where a byte stream goes: `vsock://CID:PORT` (CID `any` to listen), `unix:PATH` (optionally
//! `unix:PATH?connect=PORT`, the host side of a Firecracker /
//! cloud-hypervisor / vhost-user-vsock multiplexer, which wants
//! `CONNECT <port>\n` first) or `tcp://HOST:PORT` for development.

use std::fmt;
use std::path::PathBuf;

/// A transport address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Vsock { cid: u32, port: u32 },
    Unix { path: PathBuf, connect: Option<u32> },
    Tcp(String),
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transport address {input:?}: {reason} (expected vsock://CID:PORT, unix:PATH[?connect=PORT] or tcp://HOST:PORT)"
)]
pub struct EndpointError {
    pub input: String,
    pub reason: &'static str,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let err = |reason| EndpointError {
            input: s.to_string(),
            reason,
        };
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or(err("missing :PORT"))?;
            // `any` is VMADDR_CID_ANY, for listening in a guest.
            let cid = match cid {
                "any" => u32::MAX,
                n => n.parse().map_err(|_| err("CID is not a number or `any`"))?,
            };
            let port = port.parse().map_err(|_| err("PORT is not a number"))?;
            return Ok(Endpoint::Vsock { cid, port });
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            let (path, connect) = match rest.rsplit_once("?connect=") {
                Some((p, port)) => (
                    p,
                    Some(
                        port.parse()
                            .map_err(|_| err("connect PORT is not a number"))?,
                    ),
                ),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(err("empty path"));
            }
            return Ok(Endpoint::Unix {
                path: PathBuf::from(path),
                connect,
            });
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':').ok_or(err("missing :PORT"))?;
            if host.is_empty() {
                return Err(err("empty host"));
            }
            port.parse::<u16>()
                .map_err(|_| err("PORT is not a number below 65536"))?;
            return Ok(Endpoint::Tcp(rest.to_string()));
        }
        Err(err("unknown scheme"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Vsock {
                cid: u32::MAX,
                port,
            } => write!(f, "vsock://any:{port}"),
            Endpoint::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Endpoint::Unix {
                path,
                connect: None,
            } => write!(f, "unix:{}", path.display()),
            Endpoint::Unix {
                path,
                connect: Some(p),
            } => write!(f, "unix:{}?connect={p}", path.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for s in [
            "vsock://3:8443",
            "vsock://any:8443",
            "unix:/run/ciel/api.sock",
            "unix:/tmp/v.sock?connect=1024",
            "tcp://127.0.0.1:8080",
            "tcp://[::1]:8080",
        ] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "vsock://x:1",
            "vsock://3",
            "unix:",
            "tcp://:80",
            "tcp://h:99999",
            "http://h:1",
            "unix:/a?connect=x",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
