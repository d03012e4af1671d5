//! `ciel host serve`: the shim's three services.
//!
//! - **API proxy**: client connections (TCP or Unix) are joined byte for
//!   byte to the guest's API port. Client TLS terminates in the guest; the
//!   shim never sees plaintext and never touches the bytes.
//! - **Blob service**: the guest fetches the sealed model by name, in
//!   ranges ([`ciel_protocol::control`]); names cannot leave the model
//!   directory.
//! - **Key-broker relay**: the guest's outbound connections go to the one
//!   configured broker and nowhere else (TLS to the broker is end to end).
//! - **Collateral service** ([`ciel_collateral::service`]): AMD KDS, Intel
//!   PCS and NVIDIA RIM/OCSP items, cached on disk and refreshed before they
//!   expire, over HTTP to the guest (vsock) and to clients; nothing it
//!   serves is trusted by anyone (every item is signature-checked), so a
//!   lying shim can only make verification fail.
//!
//! Every service has a connection cap and an idle timeout; on SIGINT or
//! SIGTERM the shim stops accepting and gives open connections a grace
//! period to finish.

use crate::metrics::{Metrics, ServiceMetrics};
use ciel_protocol::control::{self, MAX_BLOB_READ, Message};
use ciel_transport::server::{self, Limits};
use ciel_transport::{Endpoint, Listener, Stream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What the shim serves.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// Where clients connect (TCP for the world, Unix for local clients).
    pub listen: Vec<Endpoint>,
    /// The guest's API port.
    pub guest_api: Endpoint,
    /// The blob service: where the guest connects, and the directory of
    /// sealed models it may read.
    pub blobs: Option<(Endpoint, PathBuf)>,
    /// The key-broker relay: where the guest connects, and the broker.
    pub kbs_relay: Option<(Endpoint, Endpoint)>,
    /// The collateral service: where it listens (the guest's vsock port,
    /// clients' TCP), the service, and how often due items are refreshed.
    pub collateral: Option<CollateralConfig>,
    /// Connections per service.
    pub max_connections: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// How long open connections may finish after a shutdown signal.
    pub grace: Duration,
}

/// The collateral service's listeners and state.
#[derive(Debug, Clone)]
pub struct CollateralConfig {
    pub listen: Vec<Endpoint>,
    pub service: Arc<ciel_collateral::Service>,
    pub refresh_every: Duration,
}

/// Why the shim could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    #[error("listening on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("model directory {path}: {source}")]
    ModelDir {
        path: String,
        source: std::io::Error,
    },
}

/// Starts every service and runs until `shutdown` resolves, then drains.
pub async fn run(
    cfg: ShimConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ShimError> {
    let bind = |ep: Endpoint| async move {
        Listener::bind(&ep).await.map_err(|source| ShimError::Bind {
            endpoint: ep.to_string(),
            source,
        })
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Limits {
        max_connections: cfg.max_connections,
        grace: cfg.grace,
    };
    let service = |pick: fn(&Metrics) -> &ServiceMetrics| Service {
        metrics: metrics.clone(),
        pick,
        idle: cfg.idle_timeout,
        limits,
        stop: stop_rx.clone(),
    };
    let mut tasks = Vec::new();
    for ep in &cfg.listen {
        let l = bind(ep.clone()).await?;
        tracing::info!(listen = %ep, guest = %cfg.guest_api, "API proxy");
        tasks.push(tokio::spawn(forward_service(
            l,
            cfg.guest_api.clone(),
            service(|m| &m.api),
        )));
    }
    if let Some((ep, dir)) = &cfg.blobs {
        std::fs::read_dir(dir).map_err(|source| ShimError::ModelDir {
            path: dir.display().to_string(),
            source,
        })?;
        let l = bind(ep.clone()).await?;
        tracing::info!(listen = %ep, dir = %dir.display(), "blob service");
        tasks.push(tokio::spawn(blob_service(
            l,
            dir.clone(),
            service(|m| &m.blobs),
        )));
    }
    if let Some((ep, broker)) = &cfg.kbs_relay {
        let l = bind(ep.clone()).await?;
        tracing::info!(listen = %ep, broker = %broker, "key-broker relay");
        tasks.push(tokio::spawn(forward_service(
            l,
            broker.clone(),
            service(|m| &m.kbs_relay),
        )));
    }
    if let Some(c) = &cfg.collateral {
        let _ = metrics.collateral_service.set(c.service.clone());
        let refresher = tokio::spawn(c.service.clone().refresh_loop(c.refresh_every));
        for ep in &c.listen {
            let l = bind(ep.clone()).await?;
            tracing::info!(listen = %ep, cache = %c.service.store.dir().display(), "collateral service");
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(ciel_transport::http::serve(
                l,
                limits,
                metrics.collateral.connections.clone(),
                collateral_http(c.service.clone(), cfg.idle_timeout),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        tasks.push(tokio::spawn(async move {
            let mut stop = stop_rx.clone();
            let _ = stop.wait_for(|s| *s).await;
            refresher.abort();
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    // Each service drains within the grace period on its own.
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// The collateral service as HTTP: GETs and OCSP requests only, so bodies
/// are small; errors in plain text.
fn collateral_http(
    service: Arc<ciel_collateral::Service>,
    idle: Duration,
) -> ciel_transport::http::HttpService {
    ciel_transport::http::HttpService {
        router: service.router(),
        tls: None,
        limits: ciel_transport::http::HttpLimits {
            handshake: idle,
            request_read: Duration::from_secs(30).min(idle),
            max_body: 64 * 1024,
        },
        refuse_body: |r| {
            use axum::response::IntoResponse;
            (r.status(), r.to_string()).into_response()
        },
    }
}

/// A service's limits, counters and stop signal.
#[derive(Clone)]
struct Service {
    metrics: Arc<Metrics>,
    pick: fn(&Metrics) -> &ServiceMetrics,
    idle: Duration,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Service {
    fn m(&self) -> &ServiceMetrics {
        (self.pick)(&self.metrics)
    }

    /// Runs the one server loop until stopped: `handle` per connection,
    /// within the cap. Returns once every connection has ended or been cut
    /// at the grace period.
    async fn accept_loop<F, Fut>(self, listener: Listener, handle: F)
    where
        F: Fn(Stream, String, Service) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let counters = self.m().connections.clone();
        server::serve(listener, self.limits, counters, stopped, |stream, conn| {
            handle(stream, conn.peer, self.clone())
        })
        .await
    }
}

/// Joins each accepted connection to `target`.
async fn forward_service(listener: Listener, target: Endpoint, svc: Service) {
    svc.accept_loop(listener, move |client, peer, svc| {
        let target = target.clone();
        async move {
            let guest = match ciel_transport::connect(&target).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(%peer, %target, error = %e, "cannot reach the other side");
                    svc.m().unreachable.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            if let Err(e) = pump(client, guest, &svc).await {
                tracing::debug!(%peer, error = %e, "connection ended");
                svc.m().errors_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
}

fn millis_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// Copies both ways until both sides are done or nothing moved for the
/// idle timeout (in either direction: a long answer streaming out keeps a
/// quiet client connection alive).
async fn pump(client: Stream, guest: Stream, svc: &Service) -> std::io::Result<()> {
    let t0 = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (cr, cw) = tokio::io::split(client);
    let (gr, gw) = tokio::io::split(guest);
    let up = copy_one_way(cr, gw, &last, t0, svc.idle, &svc.m().bytes_to_guest);
    let down = copy_one_way(gr, cw, &last, t0, svc.idle, &svc.m().bytes_from_guest);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

async fn copy_one_way(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    last: &AtomicU64,
    t0: Instant,
    idle: Duration,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                let quiet = millis_since(t0).saturating_sub(last.load(Ordering::Relaxed));
                if quiet >= idle.as_millis() as u64 {
                    let _ = to.shutdown().await;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "idle timeout",
                    ));
                }
                continue;
            }
        };
        if n == 0 {
            // Half-close: the other direction may still be talking.
            let _ = to.shutdown().await;
            return Ok(());
        }
        let chunk = buf.get(..n).unwrap_or_default();
        // Sockets have no write buffer to flush: write_all is delivery.
        to.write_all(chunk).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last.store(millis_since(t0), Ordering::Relaxed);
    }
}

/// Answers one control request per connection.
async fn blob_service(listener: Listener, dir: PathBuf, svc: Service) {
    let dir = Arc::new(dir);
    svc.accept_loop(listener, move |stream, peer, svc| {
        let dir = dir.clone();
        async move {
            let idle = svc.idle;
            match tokio::time::timeout(idle, serve_blob_request(stream, &dir, &svc)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "blob request failed");
                    svc.m().errors_total.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    tracing::warn!(%peer, "blob request timed out");
                    svc.m().errors_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
}

async fn send(s: &mut Stream, msg: &Message) -> std::io::Result<()> {
    let bytes = control::encode(msg).map_err(std::io::Error::other)?;
    s.write_all(&bytes).await
}

async fn refuse(s: &mut Stream, code: &str, message: String) -> std::io::Result<()> {
    send(
        s,
        &Message::Error {
            code: code.into(),
            message,
        },
    )
    .await
}

async fn open_blob(dir: &Path, name: &str) -> Result<(tokio::fs::File, u64), (String, String)> {
    if !control::valid_blob_name(name) {
        return Err(("bad_name".into(), format!("{name:?} is not a blob name")));
    }
    let path = dir.join(name);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ("not_found".to_string(), format!("{name}: {e}")))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ("io".to_string(), format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(("not_found".into(), format!("{name} is not a file")));
    }
    Ok((file, meta.len()))
}

async fn serve_blob_request(mut s: Stream, dir: &Path, svc: &Service) -> std::io::Result<()> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = control::frame_len(header).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    let msg = match control::decode(&body) {
        Ok(m) => m,
        Err(e) => return refuse(&mut s, "bad_request", e.to_string()).await,
    };
    match msg {
        Message::BlobStat { name } => match open_blob(dir, &name).await {
            Ok((_, len)) => send(&mut s, &Message::BlobInfo { name, len }).await,
            Err((code, m)) => refuse(&mut s, &code, m).await,
        },
        Message::BlobRead { name, offset, len } => {
            let (mut file, size) = match open_blob(dir, &name).await {
                Ok(x) => x,
                Err((code, m)) => return refuse(&mut s, &code, m).await,
            };
            let end = offset.checked_add(len);
            if len > MAX_BLOB_READ || end.is_none_or(|e| e > size) {
                return refuse(
                    &mut s,
                    "bad_range",
                    format!("{name}: range {offset}+{len} is outside 0..{size} or above {MAX_BLOB_READ} bytes"),
                )
                .await;
            }
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            send(&mut s, &Message::BlobData { offset, len }).await?;
            let copied = tokio::io::copy(&mut file.take(len), &mut s).await?;
            svc.m().bytes_to_guest.fetch_add(copied, Ordering::Relaxed);
            s.flush().await
        }
        other => refuse(&mut s, "bad_request", format!("{other:?} is not a request")).await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(dir: &Path, guest: Endpoint) -> (ShimConfig, Endpoint) {
        let listen = Endpoint::Unix {
            path: dir.join("front.sock"),
            connect: None,
        };
        let cfg = ShimConfig {
            listen: vec![listen.clone()],
            guest_api: guest,
            blobs: Some((
                Endpoint::Unix {
                    path: dir.join("blobs.sock"),
                    connect: None,
                },
                dir.join("models"),
            )),
            kbs_relay: None,
            collateral: None,
            max_connections: 4,
            // Long, so that a prompt end of stream cannot be mistaken for
            // the idle timeout.
            idle_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(1),
        };
        (cfg, listen)
    }

    /// Connects once the shim listens (it binds on its own task), rather
    /// than guessing how long that takes on a loaded machine.
    async fn connect_when_listening(ep: &Endpoint) -> ciel_transport::Stream {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ciel_transport::connect(ep).await {
                Ok(s) => return s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the shim never listened on {ep}: {e}"),
            }
        }
    }

    /// A guest that closes right after reading the request: the client must
    /// see the end of the stream at once, not after the idle timeout.
    #[tokio::test]
    async fn a_closing_guest_ends_the_client_connection_promptly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let guest_ep = Endpoint::Unix {
            path: dir.path().join("guest.sock"),
            connect: None,
        };
        let guest = Listener::bind(&guest_ep).await.unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = guest.accept().await.unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(b"bye").await.unwrap();
                drop(s);
            }
        });
        let (cfg, front) = config(dir.path(), guest_ep);
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shim = tokio::spawn(run(cfg, metrics.clone(), async {
            let _ = stopped.await;
        }));
        let mut c = connect_when_listening(&front).await;
        c.write_all(b"ping").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got))
            .await
            .expect("the client saw no end of stream before the idle timeout")
            .unwrap();
        assert_eq!(got, b"bye");
        assert_eq!(metrics.api.bytes_to_guest.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.api.bytes_from_guest.load(Ordering::Relaxed), 3);
        let _ = stop.send(());
        shim.await.unwrap().unwrap();
    }

    /// Blob names cannot escape the directory, ranges are checked, and a
    /// good range comes back byte for byte.
    #[tokio::test]
    async fn blob_service_checks_names_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/m.csm"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        let (cfg, _) = config(
            dir.path(),
            Endpoint::Unix {
                path: dir.path().join("none.sock"),
                connect: None,
            },
        );
        let blobs = cfg.blobs.clone().unwrap().0;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shim = tokio::spawn(run(cfg, Arc::new(Metrics::default()), async {
            let _ = stopped.await;
        }));
        drop(connect_when_listening(&blobs).await);
        let ask = |msg: Message| {
            let blobs = blobs.clone();
            async move {
                let mut s = ciel_transport::connect(&blobs).await.unwrap();
                s.write_all(&control::encode(&msg).unwrap()).await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                let len = control::frame_len(rest[..4].try_into().unwrap()).unwrap();
                (
                    control::decode(&rest[4..4 + len]).unwrap(),
                    rest[4 + len..].to_vec(),
                )
            }
        };
        let (m, _) = ask(Message::BlobStat {
            name: "m.csm".into(),
        })
        .await;
        assert_eq!(
            m,
            Message::BlobInfo {
                name: "m.csm".into(),
                len: 10
            }
        );
        let (m, data) = ask(Message::BlobRead {
            name: "m.csm".into(),
            offset: 3,
            len: 4,
        })
        .await;
        assert_eq!(m, Message::BlobData { offset: 3, len: 4 });
        assert_eq!(data, b"3456");
        for (msg, code) in [
            (
                Message::BlobStat {
                    name: "../secret".into(),
                },
                "bad_name",
            ),
            (
                Message::BlobStat {
                    name: "absent".into(),
                },
                "not_found",
            ),
            (
                Message::BlobRead {
                    name: "m.csm".into(),
                    offset: 8,
                    len: 4,
                },
                "bad_range",
            ),
            (
                Message::BlobRead {
                    name: "m.csm".into(),
                    offset: u64::MAX,
                    len: 2,
                },
                "bad_range",
            ),
            (
                Message::BlobInfo {
                    name: "m.csm".into(),
                    len: 1,
                },
                "bad_request",
            ),
        ] {
            match ask(msg.clone()).await.0 {
                Message::Error { code: c, .. } => assert_eq!(c, code, "{msg:?}"),
                other => panic!("{msg:?} answered {other:?}"),
            }
        }
        let _ = stop.send(());
        shim.await.unwrap().unwrap();
    }
}
