//! Accepting API connections with bounds on everything a client controls:
//! how many connections it holds, how long its TLS handshake may take, and
//! how long it may take to send a request. A slow-drip client (slowloris)
//! therefore holds a connection slot for a bounded time only, and no
//! request body is ever read without a deadline or a size cap.

use super::api::{MAX_BODY, api_error};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use ciel_transport::Listener;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

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

/// Accepts connections until SIGINT/SIGTERM; each gets a TLS handshake and
/// HTTP/1.1 within `limits`. In-flight connections finish.
pub async fn serve(
    listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    limits: ConnectionLimits,
) {
    let shutdown = ciel_transport::shutdown_signal();
    serve_until(listener, tls, router, limits, shutdown).await
}

/// [`serve`], stopping when `shutdown` completes.
pub async fn serve_until(
    listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.request_read,
        whole_body_in_time,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => {
                tracing::info!("shutting down: no new connections");
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: at the connection limit");
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.request_read)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Reads the whole request body, at most [`MAX_BODY`] bytes, within the
/// deadline, before any handler runs: 408 for a body that drips, 413 for one
/// that is too large.
async fn whole_body_in_time(
    State(deadline): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, MAX_BODY).collect();
    let bytes = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                None,
                &format!("the request body is larger than {MAX_BODY} bytes"),
            );
        }
        Ok(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!("the request body could not be read: {e}"),
            );
        }
        Err(_) => {
            tracing::warn!(
                seconds = deadline.as_secs_f64(),
                "request body not received in time"
            );
            return api_error(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                None,
                &format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs_f64()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
