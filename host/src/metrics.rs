//! Counters the shim exports in Prometheus' text format. They count
//! connections, bytes and errors per service; they never see content
//! (which is TLS or sealed ciphertext anyway).

use ciel_transport::server::ConnectionCounters;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One service's counters.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// The server loop's: accepted, open, refused at the cap, accept errors.
    pub connections: Arc<ConnectionCounters>,
    /// Connections whose other side could not be reached.
    pub unreachable: AtomicU64,
    pub bytes_to_guest: AtomicU64,
    pub bytes_from_guest: AtomicU64,
    pub errors_total: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A metric: name, Prometheus type, help text, and its value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ServiceMetrics) -> u64,
);

/// All of the shim's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub api: ServiceMetrics,
    pub blobs: ServiceMetrics,
    pub kbs_relay: ServiceMetrics,
    /// The collateral service's connections (its own counters are
    /// [`ciel_collateral::service::ServiceMetrics`]).
    pub collateral: ServiceMetrics,
    /// The collateral service, once started: its cache hits, fetches,
    /// refreshes and upstream errors are rendered with the rest.
    pub collateral_service: std::sync::OnceLock<Arc<ciel_collateral::Service>>,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let services = [
            ("api", &self.api),
            ("blobs", &self.blobs),
            ("kbs_relay", &self.kbs_relay),
            ("collateral", &self.collateral),
        ];
        let series: [Series; 6] = [
            (
                "ciel_host_connections_total",
                "counter",
                "Connections accepted.",
                |m| get(&m.connections.accepted),
            ),
            (
                "ciel_host_connections_active",
                "gauge",
                "Connections open now.",
                |m| get(&m.connections.active),
            ),
            (
                "ciel_host_connections_refused_total",
                "counter",
                "Connections refused at the cap or failing to reach the other side.",
                |m| get(&m.connections.refused) + get(&m.unreachable),
            ),
            (
                "ciel_host_bytes_to_guest_total",
                "counter",
                "Bytes carried towards the guest.",
                |m| get(&m.bytes_to_guest),
            ),
            (
                "ciel_host_bytes_from_guest_total",
                "counter",
                "Bytes carried from the guest.",
                |m| get(&m.bytes_from_guest),
            ),
            (
                "ciel_host_errors_total",
                "counter",
                "I/O errors, timeouts and failed accepts.",
                |m| get(&m.errors_total) + get(&m.connections.accept_errors),
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, m) in services {
                let _ = writeln!(out, "{name}{{service=\"{service}\"}} {}", get(m));
            }
        }
        if let Some(c) = self.collateral_service.get() {
            out.push_str(&c.render_metrics());
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` (the one server loop, plain HTTP)
/// for as long as the process lives.
pub async fn serve(listener: ciel_transport::Listener, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    ciel_transport::http::serve_metrics(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_for_every_service() {
        let m = Metrics::default();
        m.api.bytes_to_guest.fetch_add(42, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("ciel_host_bytes_to_guest_total{service=\"api\"} 42\n"));
        assert!(text.contains("# TYPE ciel_host_connections_active gauge\n"));
        assert_eq!(text.matches("{service=\"kbs_relay\"}").count(), 6);
    }
}
