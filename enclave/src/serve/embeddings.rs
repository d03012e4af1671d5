//! `POST /v1/embeddings` in OpenAI's shape, for the sentence-embedding
//! model a guest may serve beside its chat model. Inputs are tokenized and
//! checked first (an input over the model's limit is a 400 naming it, never
//! cut short); vectors are computed off the async runtime, one request at a
//! time, with a bounded number waiting (429 beyond it).

use super::api::ApiError;
use super::request::bad_field;
use axum::http::StatusCode;
use base64::Engine as _;
use ciel_engine::embeddings::{EmbeddingError, EmbeddingModel};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// The embedding model a guest serves, and its queue.
#[derive(Debug)]
pub struct Embeddings {
    pub model: Arc<EmbeddingModel>,
    /// The name clients use for it (`model`, `/v1/models`).
    pub name: String,
    /// One request computes at a time; this many more may wait.
    queue: usize,
    waiting: AtomicUsize,
    running: tokio::sync::Semaphore,
}

impl Embeddings {
    pub fn new(model: EmbeddingModel, name: String, queue: usize) -> Self {
        Embeddings {
            model: Arc::new(model),
            name,
            queue,
            waiting: AtomicUsize::new(0),
            running: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The fields the route takes; any other is a 400 naming it.
const FIELDS: &[&str] = &["input", "model", "encoding_format", "dimensions", "user"];

#[derive(Debug, Deserialize)]
struct Body {
    input: Value,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    /// OpenAI's end-user id: accepted, never logged or stored.
    #[serde(default, rename = "user")]
    _user: Option<String>,
}

/// The texts of `input`: a string, or a list of 1 to [`MAX_INPUTS`] strings.
fn texts(input: Value) -> Result<Vec<String>, ApiError> {
    match input {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) if (1..=MAX_INPUTS).contains(&items.len()) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                Value::Number(_) | Value::Array(_) => Err(bad_field(
                    "input",
                    "token-id inputs are not supported here: send text",
                )),
                _ => Err(bad_field(&format!("input[{i}]"), "not a string")),
            })
            .collect(),
        Value::Array(_) => Err(bad_field(
            "input",
            format!("a list of 1 to {MAX_INPUTS} strings"),
        )),
        _ => Err(bad_field("input", "a string or a list of strings")),
    }
}

/// A checked request: the inputs' token ids and how to write the vectors.
#[derive(Debug)]
pub struct Prepared {
    ids: Vec<Vec<u32>>,
    base64: bool,
}

/// Parses and checks a body: fields, model, inputs tokenized and bounded.
pub fn prepare(e: &Embeddings, bytes: &[u8]) -> Result<Prepared, ApiError> {
    let shape = |err: serde_json::Error| ApiError {
        status: match err.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        },
        kind: "invalid_request_error",
        param: None,
        message: format!("the request body: {err}"),
    };
    let value: Value = serde_json::from_slice(bytes).map_err(shape)?;
    if let Some(k) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !FIELDS.contains(&k.as_str())))
    {
        return Err(bad_field(k, "is not a parameter of this endpoint"));
    }
    let body = Body::deserialize(value).map_err(shape)?;
    if let Some(m) = &body.model
        && *m != e.name
    {
        return Err(super::request::not_served(
            m,
            &format!("this guest's embedding model is {:?}", e.name),
        ));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_field(
                "encoding_format",
                format!("{other:?} is not float or base64"),
            ));
        }
    };
    if let Some(d) = body.dimensions
        && d != e.model.dimensions()
    {
        return Err(bad_field(
            "dimensions",
            format!(
                "this model's vectors have {} dimensions; it cannot make vectors of {d}",
                e.model.dimensions()
            ),
        ));
    }
    let inputs = texts(body.input)?;
    let ids = e.model.tokenize_all(&inputs).map_err(|err| match err {
        EmbeddingError::TooLong { index, .. } | EmbeddingError::Empty(index) => {
            bad_field(&format!("input[{index}]"), err)
        }
        other => bad_field("input", other),
    })?;
    Ok(Prepared { ids, base64 })
}

/// Computes a prepared request's vectors: OpenAI's list, or an error.
pub async fn run(e: Arc<Embeddings>, p: Prepared) -> Result<Value, ApiError> {
    if e.waiting.fetch_add(1, Ordering::SeqCst) > e.queue {
        e.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            param: None,
            message: "the embedding queue is full; retry later".into(),
        });
    }
    let permit = e.running.acquire().await;
    e.waiting.fetch_sub(1, Ordering::SeqCst);
    let _permit = permit.map_err(|_| server_error("the embedding model has stopped"))?;
    let model = Arc::clone(&e.model);
    let tokens: usize = p.ids.iter().map(Vec::len).sum();
    let ids = p.ids;
    let vectors = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|i| model.embed_ids(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|err| server_error(&format!("embedding task: {err}")))?
    .map_err(|err| server_error(&err.to_string()))?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if p.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": e.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

fn server_error(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        param: None,
        message: message.into(),
    }
}
