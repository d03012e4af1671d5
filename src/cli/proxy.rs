//! `ciel proxy`'s forwarding: every request from a local OpenAI client goes
//! to the guest on its own attested connection (verified again in the
//! handshake), and the answer — streamed or not — comes back unchanged.
//! A guest that no longer passes the policy gets a 502, never the request.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ciel_client::{Client, ClientError};
use http_body_util::BodyExt;
use std::sync::Arc;

/// Largest request body forwarded (1 MiB, as the guest accepts).
const MAX_BODY: usize = 1 << 20;

pub fn router(client: Arc<Client>) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(client)
}

/// Serves the proxy on the one server loop until SIGINT/SIGTERM: local
/// clients' bodies capped and read within a deadline before forwarding.
/// The signal handlers are installed when this is called (inside the
/// runtime), before the returned future first runs.
pub fn serve(
    listener: ciel_transport::Listener,
    client: Arc<Client>,
) -> impl std::future::Future<Output = ()> + Send {
    use ciel_transport::http::{HttpLimits, HttpService};
    use std::time::Duration;
    let service = HttpService {
        router: router(client),
        tls: None,
        limits: HttpLimits {
            handshake: Duration::from_secs(10),
            request_read: Duration::from_secs(30),
            max_body: MAX_BODY,
        },
        refuse_body: |r| error(r.status(), r.to_string()),
    };
    let limits = ciel_transport::server::Limits {
        max_connections: 256,
        grace: Duration::from_secs(30),
    };
    let shutdown = ciel_transport::shutdown_signal();
    ciel_transport::http::serve(listener, limits, Arc::default(), service, shutdown)
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"message": message, "type": "proxy_error", "param": null, "code": null}})),
    )
        .into_response()
}

async fn forward(State(client): State<Arc<Client>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // Already read whole, capped, by the server loop.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    let body = (!body.is_empty()).then_some(body);
    match client.send(parts.method, &path, body).await {
        Ok(resp) => {
            let (parts, incoming) = resp.into_parts();
            let mut out = Response::new(Body::new(incoming));
            *out.status_mut() = parts.status;
            for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
                if let Some(v) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            out.headers_mut().insert(
                "x-ciel-attested",
                HeaderValue::from_static("verified-per-connection"),
            );
            out
        }
        Err(e @ ClientError::Refused { .. }) => {
            tracing::error!(error = %e, "upstream attestation refused; request not forwarded");
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
