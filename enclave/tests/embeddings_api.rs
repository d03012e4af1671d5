//! `/v1/embeddings` through the guest's API, in process: all-MiniLM-L6-v2
//! (packed as `ciel embeddings pack` does) beside a scripted chat model.
//! Vectors in both encodings equal sentence-transformers' reference;
//! inputs over the model's limit, empty ones, token-id inputs, another
//! model, another vector size and unknown fields are refused by name; a
//! guest without an embedding model answers 404. The model folder comes
//! from `scripts/fetch-model.sh minilm` (the test script runs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use axum::Router;
use axum::http::StatusCode;
use base64::Engine as _;
use ciel_enclave::serve::embeddings::Embeddings;
use ciel_enclave::serve::worker::Worker;
use ciel_engine::embeddings::{EmbeddingModel, read_folder};
use ciel_engine::testing::{Script, tokenizer};
use serde_json::{Value, json};
use std::sync::Arc;

fn embedding_model() -> EmbeddingModel {
    let dir = ciel_engine::cached_model("all-MiniLM-L6-v2");
    let bundle =
        read_folder(&dir).unwrap_or_else(|e| panic!("{e} (scripts/fetch-model.sh minilm)"));
    EmbeddingModel::from_bundle(&bundle).unwrap()
}

fn api(with_embeddings: bool) -> Router {
    let script = Script {
        tokens: vec![1, 2, 0],
        at: 0,
        vocab: 7,
    };
    let limits = ciel_engine::scheduler::Limits::serving(64, 4);
    let worker = Worker::spawn(script, Arc::new(tokenizer()), limits, 4).unwrap();
    let embeddings =
        with_embeddings.then(|| Embeddings::new(embedding_model(), "minilm".into(), 4));
    common::api(worker, None, "chat", embeddings)
}

async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let (status, text) = common::send(app, method, path, body.map(|b| b.to_string())).await;
    (status, serde_json::from_str(&text).unwrap())
}

fn reference() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/reference/minilm-sentence-transformers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_in_both_encodings_equal_the_reference() {
    let app = api(true);
    let (status, models) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "minilm"]);
    let r = reference();
    let cases = &r["cases"].as_array().unwrap()[..4];
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    for format in ["float", "base64"] {
        let body = json!({"model": "minilm", "input": texts, "encoding_format": format});
        let (status, v) = call(&app, "POST", "/v1/embeddings", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["object"].clone(), v["model"].clone()),
            (json!("list"), json!("minilm"))
        );
        let tokens: usize = cases
            .iter()
            .map(|c| c["ids"].as_array().unwrap().len())
            .sum();
        assert_eq!(v["usage"]["prompt_tokens"], json!(tokens));
        for (i, (d, c)) in v["data"].as_array().unwrap().iter().zip(cases).enumerate() {
            assert_eq!(
                (d["index"].clone(), d["object"].clone()),
                (json!(i), json!("embedding"))
            );
            let ours: Vec<f64> = match format {
                "float" => d["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
                _ => base64::engine::general_purpose::STANDARD
                    .decode(d["embedding"].as_str().unwrap())
                    .unwrap()
                    .chunks(4)
                    .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                    .collect(),
            };
            let theirs: Vec<f64> = c["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(ours.len(), 384);
            assert!(cosine(&ours, &theirs) > 1.0 - 1e-4, "{format}, input {i}");
        }
    }
    // A single string is one input.
    let (status, v) = call(&app, "POST", "/v1/embeddings", Some(json!({"input": "hi"}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_embedding_requests_are_refused_by_name() {
    let app = api(true);
    let long = "word ".repeat(300);
    let cases = [
        (
            json!({"input": ["ok", long]}),
            StatusCode::BAD_REQUEST,
            "input[1]",
            "at most 256",
        ),
        (
            json!({"input": ["ok", ""]}),
            StatusCode::BAD_REQUEST,
            "input[1]",
            "empty",
        ),
        (
            json!({"input": [[101, 102]]}),
            StatusCode::BAD_REQUEST,
            "input",
            "token-id",
        ),
        (
            json!({"input": []}),
            StatusCode::BAD_REQUEST,
            "input",
            "1 to 2048",
        ),
        (
            json!({"input": [1.5]}),
            StatusCode::BAD_REQUEST,
            "input",
            "token-id",
        ),
        (
            json!({"input": "x", "dimensions": 64}),
            StatusCode::BAD_REQUEST,
            "dimensions",
            "384",
        ),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            StatusCode::BAD_REQUEST,
            "encoding_format",
            "hex",
        ),
        (
            json!({"input": "x", "model": "chat"}),
            StatusCode::NOT_FOUND,
            "model",
            "minilm",
        ),
    ];
    for (body, status, param, says) in cases {
        let (got, v) = call(&app, "POST", "/v1/embeddings", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["param"], json!(param), "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    // An unknown field is refused naming it.
    let (got, v) = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"input": "x", "pooling": "max"})),
    )
    .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "pooling", "{v}");
    // A guest without an embedding model.
    let (got, v) = call(
        &api(false),
        "POST",
        "/v1/embeddings",
        Some(json!({"input": "x"})),
    )
    .await;
    assert_eq!(got, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no embedding model"),
        "{v}"
    );
}
