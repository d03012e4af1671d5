//! HTTP/1.1 services (the key broker, the guest API, metrics endpoints) on
//! the [one server loop](crate::server): per connection, the optional TLS
//! handshake within its deadline, then hyper with a deadline for each
//! request's headers, and a middleware that reads the whole body — capped
//! and within its own deadline — before any handler runs. A slow-drip
//! client (slowloris) therefore holds a slot for a bounded time only, and
//! no body is read without a deadline or a size cap.
//!
//! How a refused body is answered is the service's: the guest speaks
//! OpenAI's error shape, the broker RFC 7807.

use crate::server::{self, Connection, ConnectionCounters, Limits};
use crate::{Listener, Stream};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower_service::Service as _;

/// Deadlines and caps for what an HTTP client sends.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// For a request's headers, and again for its whole body.
    pub request_read: Duration,
    /// Largest request body.
    pub max_body: usize,
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyRefusal {
    /// Larger than [`HttpLimits::max_body`] (413).
    TooLarge { limit: usize },
    /// Not all there within [`HttpLimits::request_read`] (408).
    TooSlow { deadline: Duration },
    /// The connection failed while the body was read (400).
    Unreadable(String),
}

impl BodyRefusal {
    /// The HTTP status that answers it: 413, 408 or 400.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            BodyRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRefusal::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyRefusal::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// A refusal as its status and a line of text, for services with no error
/// shape of their own.
fn refuse_in_plain_text(refusal: &BodyRefusal) -> Response {
    use axum::response::IntoResponse;
    (refusal.status(), refusal.to_string()).into_response()
}

/// Serves a metrics endpoint (`router`, plain HTTP, GETs only so bodies are
/// tiny) on `listener` for as long as the process lives (a scrape needs no
/// drain): 16 connections, 10 s deadlines, 4 KiB bodies, refusals as plain
/// text.
pub async fn serve_metrics(listener: Listener, router: axum::Router) {
    let service = HttpService {
        router,
        tls: None,
        limits: HttpLimits {
            handshake: Duration::from_secs(10),
            request_read: Duration::from_secs(10),
            max_body: 4096,
        },
        refuse_body: refuse_in_plain_text,
    };
    let limits = Limits {
        max_connections: 16,
        grace: Duration::from_secs(1),
    };
    serve(
        listener,
        limits,
        Arc::default(),
        service,
        std::future::pending(),
    )
    .await
}

impl std::fmt::Display for BodyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyRefusal::TooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            BodyRefusal::TooSlow { deadline } => write!(
                f,
                "the request body did not arrive within {} s",
                deadline.as_secs_f64()
            ),
            BodyRefusal::Unreadable(e) => write!(f, "the request body could not be read: {e}"),
        }
    }
}

/// The connection's peer, as a request extension
/// (`axum::Extension<Peer>` in a handler).
#[derive(Debug, Clone)]
pub struct Peer(pub String);

/// An HTTP service: its routes, TLS (or plain HTTP), limits, and how it
/// answers a body it refused.
#[derive(Clone)]
pub struct HttpService {
    pub router: axum::Router,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: HttpLimits,
    pub refuse_body: RefuseBody,
}

/// How a service answers a body it refused.
pub type RefuseBody = fn(&BodyRefusal) -> Response;

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// requests in flight finish within the grace period.
pub async fn serve(
    listener: Listener,
    limits: Limits,
    counters: Arc<ConnectionCounters>,
    service: HttpService,
    shutdown: impl Future<Output = ()>,
) {
    let HttpService {
        router,
        tls,
        limits: http,
        refuse_body,
    } = service;
    let router = router.layer(axum::middleware::from_fn_with_state(
        (http, refuse_body),
        whole_body_in_time,
    ));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    server::serve(listener, limits, counters, shutdown, move |stream, conn| {
        serve_connection(stream, conn, acceptor.clone(), router.clone(), http)
    })
    .await
}

async fn serve_connection(
    stream: Stream,
    mut conn: Connection,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: HttpLimits,
) {
    let peer = conn.peer.clone();
    let io: Stream = match acceptor {
        None => stream,
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(Peer(peer.clone()));
        router.clone().call(req)
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.request_read)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(http);
    let ended = tokio::select! {
        r = http.as_mut() => r,
        () = conn.draining() => {
            // Finish the request in flight, then close.
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// Reads the whole request body, capped, within the deadline, before any
/// handler runs; otherwise the service's own refusal.
async fn whole_body_in_time(
    State((limits, refuse)): State<(HttpLimits, RefuseBody)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, limits.max_body).collect();
    let refusal = match tokio::time::timeout(limits.request_read, read).await {
        Ok(Ok(collected)) => {
            let body = axum::body::Body::from(collected.to_bytes());
            return next.run(Request::from_parts(parts, body)).await;
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => BodyRefusal::TooLarge {
            limit: limits.max_body,
        },
        Ok(Err(e)) => BodyRefusal::Unreadable(e.to_string()),
        Err(_) => BodyRefusal::TooSlow {
            deadline: limits.request_read,
        },
    };
    tracing::warn!(path = %parts.uri.path(), %refusal, "request body refused");
    refuse(&refusal)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
