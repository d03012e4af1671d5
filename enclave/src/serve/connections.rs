//! The API on the one server loop ([`ciel_transport::http`]): bounds on
//! everything a client controls (connections held, TLS handshake time,
//! request read time, body size), and refusals in OpenAI's error shape.

use super::api::{MAX_BODY, api_error};
use axum::response::Response;
use ciel_transport::Listener;
use ciel_transport::http::{BodyRefusal, HttpLimits, HttpService};
use ciel_transport::server::{ConnectionCounters, Limits};
use std::sync::Arc;
use std::time::Duration;

/// What one client may hold and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections; one more is closed at once.
    pub max_connections: usize,
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// For a request's headers, and again for its whole body.
    pub request_read: Duration,
}

/// How long answers in flight may finish after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(30);

/// Accepts connections until SIGINT/SIGTERM; each gets a TLS handshake and
/// HTTP/1.1 within `limits`. In-flight requests finish. The signal
/// handlers are installed when this is called (inside the runtime), before
/// the returned future first runs.
pub fn serve(
    listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    limits: ConnectionLimits,
) -> impl std::future::Future<Output = ()> + Send {
    let shutdown = ciel_transport::shutdown_signal();
    let service = HttpService {
        router,
        tls: Some(tls),
        limits: HttpLimits {
            handshake: limits.handshake,
            request_read: limits.request_read,
            max_body: MAX_BODY,
        },
        refuse_body,
    };
    let limits = Limits {
        max_connections: limits.max_connections,
        grace: GRACE,
    };
    let counters = Arc::new(ConnectionCounters::default());
    ciel_transport::http::serve(listener, limits, counters, service, shutdown)
}

/// 413 for a body that is too large, 408 for one that drips, 400 for one
/// that cannot be read.
fn refuse_body(refusal: &BodyRefusal) -> Response {
    api_error(
        refusal.status(),
        "invalid_request_error",
        None,
        &refusal.to_string(),
    )
}
