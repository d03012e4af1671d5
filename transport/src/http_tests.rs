//! Silent, slow and oversized clients against the real server loop, over a
//! Unix socket, with short limits so that each case ends in well under a
//! second of waiting.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::Endpoint;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const MAX_BODY: usize = 4096;

const HTTP: HttpLimits = HttpLimits {
    handshake: Duration::from_millis(300),
    request_read: Duration::from_millis(300),
    max_body: MAX_BODY,
};

const LIMITS: Limits = Limits {
    max_connections: 4,
    grace: Duration::from_millis(100),
};

/// The service's own answer to a refused body.
fn refuse_body(r: &BodyRefusal) -> Response {
    (r.status(), format!("refused: {r}")).into_response()
}

/// How long a test waits for the server to act; far above the limits.
const PATIENCE: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["guest".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Arc::new(config)
}

/// These tests are about timing, not identity: any certificate will do.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Server {
    path: PathBuf,
    counters: Arc<ConnectionCounters>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    start_with(LIMITS, HTTP).await
}

async fn start_with(limits: Limits, http: HttpLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = Listener::bind(&Endpoint::Unix {
        path: path.clone(),
        connect: None,
    })
    .await
    .unwrap();
    let router = axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|axum::Extension(Peer(p)): axum::Extension<Peer>| async move { p }),
        )
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = HttpService {
        router,
        tls: Some(server_tls()),
        limits: http,
        refuse_body,
    };
    let counters = Arc::new(ConnectionCounters::default());
    tokio::spawn(serve(listener, limits, counters.clone(), service, async {
        let _ = stopped.await;
    }));
    Server {
        path,
        counters,
        _dir: dir,
        _stop: stop,
    }
}

async fn tls_connect(path: &PathBuf) -> tokio_rustls::client::TlsStream<UnixStream> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    let tcp = UnixStream::connect(path).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("guest").unwrap(), tcp)
        .await
        .unwrap()
}

/// Writes `bytes` one at a time, 50 ms apart, while reading: returns what
/// the server sent before it closed. Panics if it never closes.
async fn drip_until_closed<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    s: S,
    bytes: &[u8],
) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(s);
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "the server kept a dripping connection open");
    got
}

async fn get_ok(path: &PathBuf) -> String {
    get_path(path, "/ok").await
}

async fn get_path(path: &PathBuf, what: &str) -> String {
    let mut s = tls_connect(path).await;
    s.write_all(
        format!("GET {what} HTTP/1.1\r\nhost: guest\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn handshakes_that_drip_are_dropped_and_their_slots_come_back() {
    let server = start().await;
    // As many slow-drip handshakes as there are connection slots: a TLS
    // record header, one byte at a time, forever.
    let drips: Vec<_> = (0..LIMITS.max_connections)
        .map(|_| {
            let path = server.path.clone();
            tokio::spawn(async move {
                let s = UnixStream::connect(&path).await.unwrap();
                drip_until_closed(s, &[0x16, 0x03, 0x01]).await
            })
        })
        .collect();
    for d in drips {
        assert!(
            d.await.unwrap().is_empty(),
            "no reply to a partial handshake"
        );
    }
    // The slots are free again: an honest client is served.
    assert!(get_ok(&server.path).await.ends_with("ok"));
}

#[tokio::test]
async fn headers_that_drip_are_cut_off() {
    let server = start().await;
    let mut s = tls_connect(&server.path).await;
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: guest\r\n")
        .await
        .unwrap();
    let reply = drip_until_closed(s, b"x-slow: yes\r\n").await;
    assert!(
        !String::from_utf8_lossy(&reply).contains("200 OK"),
        "a request whose headers never ended was answered"
    );
}

#[tokio::test]
async fn a_body_that_drips_gets_408_naming_the_deadline() {
    let server = start().await;
    let mut s = tls_connect(&server.path).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: guest\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    let reply = String::from_utf8(drip_until_closed(s, b"{").await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.contains("refused: the request body did not arrive within 0.3 s"),
        "{reply}"
    );
}

#[tokio::test]
async fn bodies_are_capped_and_honest_requests_pass() {
    let server = start().await;
    let mut s = tls_connect(&server.path).await;
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: guest\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is written.
    let _ = s.write_all(&vec![b'a'; MAX_BODY + 1]).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("refused: the request body is larger than 4096 bytes"),
        "{reply}"
    );

    let mut s = tls_connect(&server.path).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: guest\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("5 bytes"), "{reply}");
}

#[tokio::test]
async fn handlers_see_the_peer() {
    let server = start().await;
    let reply = get_path(&server.path, "/peer").await;
    assert!(
        reply.ends_with(&format!("unix:{}", server.path.display())),
        "{reply}"
    );
}

/// 100 silent clients and 100 whose handshakes drip, all holding their
/// connections for as long as the deadlines allow (here far longer than the
/// test): a client arriving after them is answered at once.
#[tokio::test]
async fn silent_and_dripping_clients_do_not_delay_an_honest_one() {
    let server = start_with(
        Limits {
            max_connections: 1000,
            grace: Duration::from_millis(100),
        },
        HttpLimits {
            handshake: Duration::from_secs(60),
            request_read: Duration::from_secs(60),
            max_body: MAX_BODY,
        },
    )
    .await;
    let mut attackers = Vec::new();
    for i in 0..200 {
        let s = UnixStream::connect(&server.path).await.unwrap();
        attackers.push(tokio::spawn(async move {
            let (_rd, mut wr) = tokio::io::split(s);
            if i % 2 == 0 {
                // Silent: holds the connection open.
                std::future::pending::<()>().await;
            }
            for b in [0x16u8, 0x03, 0x01].iter().cycle() {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Every one of them is in the server's hands before the honest client.
    let t0 = std::time::Instant::now();
    while server.counters.accepted.load(Ordering::Relaxed) < 200 {
        assert!(
            t0.elapsed() < PATIENCE,
            "the slow clients were not all accepted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = std::time::Instant::now();
    assert!(get_ok(&server.path).await.ends_with("ok"));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "an honest request took {took:?} behind 200 slow clients"
    );
    for a in attackers {
        a.abort();
    }
}
