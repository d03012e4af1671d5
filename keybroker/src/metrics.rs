//! The broker's Prometheus metrics (OpenMetrics text at `/metrics`, on a
//! listener of its own so that it need not face the guests' network):
//! requests and their latency per endpoint, releases, refusals by reason,
//! sessions, and the server loop's connection counters.
//!
//! Labels come from closed sets (endpoint names, refusal kinds), never from
//! a request, so a client cannot grow the series without bound; no metric
//! carries a key, a nonce or evidence.

use crate::problem::Kind;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ciel_transport::server::ConnectionCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    endpoint: &'static str,
    reason: &'static str,
}

/// Every series the broker exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    releases: Counter,
    refusals: Family<RefusalLabels, Counter>,
    sessions_started: Counter,
    sessions_open: Gauge,
    /// The server loop's counters for the broker's listener.
    pub connections: Arc<ConnectionCounters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ciel_kbs");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms to ~4 s: a release is a few ms; evidence with large
        // collateral, a slow disk for the audit log, are the tail.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let releases = Counter::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let sessions_started = Counter::default();
        let sessions_open = Gauge::default();
        let connections = Arc::new(ConnectionCounters::default());
        registry.register(
            "requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response, by endpoint",
            latency.clone(),
        );
        registry.register(
            "releases",
            "Resources released (an audited release, a JWE sent)",
            releases.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused, by endpoint and reason (the problem type)",
            refusals.clone(),
        );
        registry.register(
            "sessions_started",
            "Sessions begun at /auth",
            sessions_started.clone(),
        );
        registry.register(
            "sessions_open",
            "Sessions held now (attested or waiting for evidence, not yet expired)",
            sessions_open.clone(),
        );
        registry.register_collector(Box::new(Connections(connections.clone())));
        Metrics {
            registry,
            requests,
            latency,
            releases,
            refusals,
            sessions_started,
            sessions_open,
            connections,
        }
    }

    /// Records one finished request.
    fn observe(&self, endpoint: &'static str, response: &Response, seconds: f64) {
        let status = response.status().as_u16();
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
        if let Some(kind) = response.extensions().get::<Kind>() {
            let reason = kind.reason();
            self.refusals
                .get_or_create(&RefusalLabels { endpoint, reason })
                .inc();
        } else if response.status().is_success() {
            match endpoint {
                "resource" => {
                    self.releases.inc();
                }
                "auth" => {
                    self.sessions_started.inc();
                }
                _ => {}
            }
        }
    }

    /// The OpenMetrics text, with `sessions_open` as of now.
    pub fn render(&self, sessions_open: usize) -> String {
        self.sessions_open
            .set(i64::try_from(sessions_open).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The endpoint a route serves, from a closed set.
fn endpoint_of(route: Option<&str>) -> &'static str {
    match route {
        Some("/kbs/v0/auth") => "auth",
        Some("/kbs/v0/attest") => "attest",
        Some(r) if r.starts_with("/kbs/v0/resource/") => "resource",
        Some(r) if r.starts_with("/kbs/v0/admin/") => "admin",
        _ => "other",
    }
}

/// Middleware: times every request and counts its outcome.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let t0 = Instant::now();
    let response = next.run(req).await;
    metrics.observe(endpoint, &response, t0.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`, answered with what `text` renders at each scrape.
pub fn router(text: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = text();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
                    .into_response()
            }
        }),
    )
}

/// The server loop's counters, read at each scrape.
#[derive(Debug)]
struct Connections(Arc<ConnectionCounters>);

impl Collector for Connections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let counters = [
            ("connections_accepted", "Connections accepted", &c.accepted),
            (
                "connections_refused",
                "Connections closed at once: the broker was at its connection cap",
                &c.refused,
            ),
            (
                "accept_errors",
                "Failed accept calls (backed off)",
                &c.accept_errors,
            ),
        ];
        for (name, help, v) in counters {
            let m = ConstCounter::new(v.load(Ordering::Relaxed));
            m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
        }
        let open =
            ConstGauge::new(i64::try_from(c.active.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "connections_open",
            "Connections open now",
            None,
            open.metric_type(),
        )?)
    }
}
