//! # ciel-transport
//!
//! Byte streams between the untrusted host and the guest, whatever carries
//! them: AF_VSOCK (`vsock://CID:PORT`), Unix sockets (`unix:PATH`, and
//! `unix:PATH?connect=PORT` for the host side of Firecracker,
//! cloud-hypervisor and vhost-user-vsock, which multiplex guest ports over
//! one socket after a `CONNECT <port>\n` / `OK <n>\n` exchange) and TCP for
//! development. Addresses are [`Endpoint`]s from `ciel-protocol`.
//!
//! Every service runs on [`server::serve`], the one server loop (HTTP
//! services on [`http::serve`] over it).
//!
//! Nothing here trusts the other side: what flows over these streams is
//! TLS, sealed ciphertext or size-capped control frames.

#![forbid(unsafe_code)]

pub mod http;
pub mod server;

pub use ciel_protocol::endpoint::Endpoint;
use std::io;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

/// Any stream a transport yields.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream.
pub type Stream = Box<dyn Io>;

/// How long the `CONNECT` handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
    Vsock(VsockListener),
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Listener {
    /// Binds `ep`. A stale Unix socket file at the path is replaced; any
    /// other file there is an error.
    pub async fn bind(ep: &Endpoint) -> io::Result<Self> {
        match ep {
            Endpoint::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr.as_str()).await?)),
            Endpoint::Unix {
                path,
                connect: None,
            } => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                }
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
            Endpoint::Unix {
                connect: Some(_), ..
            } => Err(invalid(format!(
                "{ep}: ?connect= is for connecting through a vsock multiplexer, not for listening"
            ))),
            Endpoint::Vsock { cid, port } => Ok(Listener::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    /// The next connection and a description of its peer (for logs).
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), a.to_string()))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), format!("unix:{}", path.display())))
            }
            Listener::Vsock(l) => {
                let (s, a) = l.accept().await?;
                Ok((Box::new(s), format!("vsock://{}:{}", a.cid(), a.port())))
            }
        }
    }

    /// The bound TCP address (with the port the OS chose for `:0`); an
    /// error for other transports.
    pub fn tcp_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            _ => Err(invalid("not a TCP listener".into())),
        }
    }

    /// The bound address (TCP: with the port the OS chose for `:0`).
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?.to_string())),
            Listener::Unix(_, path) => Ok(Endpoint::Unix {
                path: path.clone(),
                connect: None,
            }),
            Listener::Vsock(l) => {
                let a = l.local_addr()?;
                Ok(Endpoint::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                })
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects to `ep`, doing the `CONNECT <port>` handshake where asked.
pub async fn connect(ep: &Endpoint) -> io::Result<Stream> {
    match ep {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr.as_str()).await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        Endpoint::Unix {
            path,
            connect: None,
        } => Ok(Box::new(UnixStream::connect(path).await?)),
        Endpoint::Unix {
            path,
            connect: Some(port),
        } => {
            let s = UnixStream::connect(path).await?;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, vsock_mux_handshake(s, *port))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{ep}: CONNECT handshake timed out"),
                    )
                })?
        }
        Endpoint::Vsock { cid, port } => Ok(Box::new(
            VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

/// Firecracker's hybrid-vsock handshake: `CONNECT <port>\n`, then the
/// multiplexer answers `OK <host port>\n` (at most 32 bytes are read).
async fn vsock_mux_handshake(mut s: UnixStream, port: u32) -> io::Result<Stream> {
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut reader = BufReader::new(s);
    let mut line = Vec::new();
    let mut limited = (&mut reader).take(32);
    limited.read_until(b'\n', &mut line).await?;
    let text = String::from_utf8_lossy(&line);
    if !text.starts_with("OK ") || !text.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "vsock multiplexer refused CONNECT {port}: {:?}",
                text.trim_end()
            ),
        ));
    }
    // Bytes the multiplexer sent after the line stay in the buffer.
    Ok(Box::new(reader))
}

/// Resolves on SIGINT or SIGTERM: every long-running service (guest API,
/// host shim) stops accepting on it and drains. The handlers are installed
/// when this is called, not when the future is first polled, so a signal
/// that comes before the service's loop first waits on it (one sent right
/// after the service said it listens) still stops it gracefully instead of
/// killing it. Call it inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {}
            () = wait(int) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn unix_and_tcp_carry_bytes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        for ep in [
            Endpoint::Unix {
                path: dir.path().join("s.sock"),
                connect: None,
            },
            Endpoint::Tcp("127.0.0.1:0".into()),
        ] {
            let l = Listener::bind(&ep).await.unwrap();
            let target = l.local_endpoint().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 5];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            });
            let mut c = connect(&target).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"hello");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn connect_handshake_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mux.sock");
        let l = UnixListener::bind(&path).unwrap();
        let mux = tokio::spawn(async move {
            for answer in ["OK 1073741824\nrest", "NO\n"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 13];
                s.read_exact(&mut b).await.unwrap();
                assert_eq!(&b, b"CONNECT 5000\n");
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let ep = Endpoint::Unix {
            path,
            connect: Some(5000),
        };
        let mut ok = connect(&ep).await.unwrap();
        let mut rest = [0u8; 4];
        ok.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");
        let refused = connect(&ep).await.err().unwrap();
        assert!(
            refused.to_string().contains("refused CONNECT 5000"),
            "{refused}"
        );
        mux.await.unwrap();
    }
}
