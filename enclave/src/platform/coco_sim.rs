//! An imitation of the Confidential Containers attestation agent's REST
//! API (`GET /aa/evidence?runtime_data=…`) on the SIMULATED SEV-SNP
//! platform, for development and tests without a Kata pod: it treats its
//! input as the real one does (the query value decoded as UTF-8, at most 64
//! bytes, zero-padded into `report_data`; loopback clients only; GET only)
//! and answers in the real attester's shape (Trustee's `snp` evidence: the
//! report and certificate table as arrays of byte values). Its evidence is
//! trusted only by a policy that names the simulated root.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_transport::http::Peer;
use std::collections::HashMap;
use std::sync::Arc;

/// The simulated platform behind the imitation, and the report fields a
/// host would set at launch (`host_data` for init-data).
/// (`sim` is owned or borrowed: anything that dereferences to the
/// [`SnpSim`].)
#[derive(Debug)]
pub struct SimAgent<S> {
    pub sim: S,
    pub template: SimSnpReport,
}

impl<S: std::ops::Deref<Target = SnpSim>> SimAgent<S> {
    /// The evidence document for `runtime_data`, as the real SNP attester
    /// makes it: at most 64 bytes, zero-padded into `report_data`.
    pub fn evidence(&self, runtime_data: &[u8]) -> Result<serde_json::Value, String> {
        if runtime_data.len() > 64 {
            return Err("SNP Attester: Report data must be no more than 64 bytes".into());
        }
        let mut report_data = [0u8; 64];
        for (o, b) in report_data.iter_mut().zip(runtime_data) {
            *o = *b;
        }
        let report = self
            .sim
            .report_binding(&self.template, report_data)
            .map_err(|e| e.to_string())?;
        let entry = |kind: &str, der: &[u8]| serde_json::json!({"cert_type": kind, "data": der});
        Ok(serde_json::json!({
            "attestation_report": report,
            "cert_chain": [
                entry("VCEK", self.sim.vcek_der()),
                entry("ASK", self.sim.ask_der()),
                entry("ARK", self.sim.ark_der()),
            ],
        }))
    }
}

/// The REST routes (`/aa/evidence`).
pub fn router<S>(agent: Arc<SimAgent<S>>) -> axum::Router
where
    S: std::ops::Deref<Target = SnpSim> + Send + Sync + 'static,
{
    axum::Router::new()
        .route("/aa/evidence", axum::routing::get(evidence::<S>))
        .with_state(agent)
}

async fn evidence<S>(
    State(agent): State<Arc<SimAgent<S>>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Response
where
    S: std::ops::Deref<Target = SnpSim> + Send + Sync + 'static,
{
    let loopback = peer
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if !loopback {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(runtime_data) = params.get("runtime_data") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let agent = agent.clone();
    let bytes = runtime_data.clone().into_bytes();
    match tokio::task::spawn_blocking(move || agent.evidence(&bytes)).await {
        Ok(Ok(doc)) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            doc.to_string(),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
