//! What the in-process API tests share: a guest API state without a
//! platform (they never ask for attestation) and one request through the
//! router.
#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ciel_enclave::kbs_client::EvidenceSource;
use ciel_enclave::serve::api::{ApiState, router};
use ciel_enclave::serve::embeddings::Embeddings;
use ciel_enclave::serve::worker::Worker;
use ciel_engine::chat::ChatTemplate;
use ciel_protocol::claims::{ModelClaims, RuntimeClaims};
use http_body_util::BodyExt;
use std::sync::Arc;

/// No evidence here: these tests never ask for attestation.
struct NoPlatform;

impl EvidenceSource for NoPlatform {
    fn tee(&self) -> &str {
        "snp"
    }
    fn evidence(&self, _: [u8; 64]) -> Result<serde_json::Value, String> {
        Err("no platform in this test".into())
    }
}

/// The guest API over `worker` and `template`, its chat model named
/// `model`, with `embeddings` beside it if given.
pub fn api(
    worker: Worker,
    template: Option<ChatTemplate>,
    model: &str,
    embeddings: Option<Embeddings>,
) -> Router {
    let claims_of = |name: &str| ModelClaims {
        name: name.into(),
        sha256: String::new(),
    };
    let claims = RuntimeClaims {
        version: 1,
        platform: "snp".into(),
        runtime: "test".into(),
        tls_spki_sha256: String::new(),
        model: claims_of(model),
        embedding_model: embeddings.as_ref().map(|e| claims_of(&e.name)),
        nonce: None,
        gpus: Vec::new(),
        issued_at: None,
    };
    router(Arc::new(ApiState {
        worker,
        template,
        claims,
        platform: Arc::new(NoPlatform),
        gpus: Arc::new(ciel_enclave::gpu::NoGpus),
        max_tokens_limit: 256,
        embeddings: embeddings.map(Arc::new),
    }))
}

/// One request through the router: the status and the body's text.
pub async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let mut service = app.clone();
    std::future::poll_fn(|cx| {
        tower_service::Service::<Request<Body>>::poll_ready(&mut service, cx)
    })
    .await
    .unwrap();
    let response = tower_service::Service::call(&mut service, request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}
