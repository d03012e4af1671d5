//! The OpenAI-compatible API the guest serves inside its attested TLS:
//! `POST /v1/chat/completions` (and `stream: true` as server-sent events),
//! `POST /v1/completions`, `GET /v1/models`, `GET /v1/attestation?nonce=HEX`
//! and `GET /healthz`. Errors use OpenAI's body shape
//! (`{"error": {"message", "type", "param", "code"}}`).
//!
//! Nothing here logs prompt or completion text: only sizes and outcomes.

use super::attested_tls::attest;
use super::request::bad_field;
use super::request::{Prepared, RequestLimits, Route, prepare};
use super::worker::{Busy, Event, Worker};
use crate::kbs_client::EvidenceSource;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ciel_engine::chat::ChatTemplate;
use ciel_engine::generate::Finish;
use ciel_protocol::claims::RuntimeClaims;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body (1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// Everything the handlers share.
pub struct ApiState {
    pub worker: Worker,
    /// The model's chat template; a base model has none.
    pub template: Option<ChatTemplate>,
    pub claims: RuntimeClaims,
    pub platform: Arc<dyn EvidenceSource + Send + Sync>,
    /// The GPUs whose fresh reports `/v1/attestation` carries.
    pub gpus: Arc<dyn crate::gpu::GpuSource>,
    /// Upper bound on `max_tokens` (default when the request names none: 256).
    pub max_tokens_limit: usize,
    /// The sentence-embedding model, when the guest serves one.
    pub embeddings: Option<Arc<super::embeddings::Embeddings>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("model", &self.claims.model.name)
            .finish_non_exhaustive()
    }
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/attestation", get(attestation))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                "unknown route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) param: Option<String>,
    pub(super) message: String,
}

impl ApiError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::INTERNAL_SERVER_ERROR => "internal_error",
            _ => "invalid_request",
        };
        (
            self.status,
            Json(json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": code}})),
        )
            .into_response()
    }
}

pub(super) fn api_error(
    status: StatusCode,
    kind: &'static str,
    param: Option<&str>,
    message: &str,
) -> Response {
    ApiError {
        status,
        kind,
        param: param.map(str::to_string),
        message: message.to_string(),
    }
    .into_response()
}

fn invalid(param: &str, message: impl std::fmt::Display) -> Response {
    bad_field(param, message).into_response()
}

async fn models(State(st): State<Arc<ApiState>>) -> Json<Value> {
    let mut data = vec![
        json!({"id": st.claims.model.name, "object": "model", "created": 0, "owned_by": "ciel"}),
    ];
    if let Some(e) = &st.embeddings {
        data.push(json!({"id": e.name, "object": "model", "created": 0, "owned_by": "ciel"}));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn embeddings(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    let Some(e) = st.embeddings.clone() else {
        return api_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model"),
            "this guest serves no embedding model",
        );
    };
    // Tokenizing up to a megabyte of input is CPU work: off the runtime.
    let checked = Arc::clone(&e);
    let prepared =
        tokio::task::spawn_blocking(move || super::embeddings::prepare(&checked, &body)).await;
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(err)) => return err.into_response(),
        Err(err) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                &format!("preparing the request failed: {err}"),
            );
        }
    };
    match super::embeddings::run(e, prepared).await {
        Ok(v) => Json(v).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

/// Fresh evidence: the boot claims with the client's nonce, attested now.
async fn attestation(State(st): State<Arc<ApiState>>, Query(q): Query<NonceQuery>) -> Response {
    let Some(nonce) = q.nonce else {
        return invalid("nonce", "required (hex, 8 to 64 bytes)");
    };
    let nonce = match hex::decode(&nonce) {
        Ok(n) if (8..=64).contains(&n.len()) => n,
        Ok(n) => return invalid("nonce", format!("{} bytes; 8 to 64 expected", n.len())),
        Err(e) => return invalid("nonce", format!("not hex: {e}")),
    };
    let claims = st.claims.with_nonce(&nonce);
    let (platform, gpus) = (st.platform.clone(), st.gpus.clone());
    match tokio::task::spawn_blocking(move || attest(platform.as_ref(), gpus.as_ref(), claims))
        .await
    {
        Ok(Ok(doc)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            doc.to_json(),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "fresh evidence failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "the platform could not produce evidence",
            )
        }
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "evidence task failed",
        ),
    }
}

pub(super) fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        // Never seen by a client: it is gone.
        Finish::Abandoned => "cancelled",
    }
}

fn request_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

async fn chat_completions(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    run(st, Route::Chat, body).await
}

async fn completions(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    run(st, Route::Text, body).await
}

/// [`prepare`] with this server's template, tokenizer and limits.
fn prepare_request(st: &ApiState, kind: Route, body: &[u8]) -> Result<Prepared, ApiError> {
    let tokenizer = &st.worker.tokenizer;
    // Chat: the rendered template, BOS/EOS added unless it wrote them.
    // Completions: the prompt as llama.cpp's and vLLM's servers take it,
    // special-token text parsed, BOS/EOS where the model adds them.
    let encode = |text: &str, chat: bool| {
        if chat {
            tokenizer.encode_chat(text)
        } else {
            tokenizer.encode_prompt(text, true)
        }
    };
    let limits = RequestLimits {
        model: &st.claims.model.name,
        max_tokens_limit: st.max_tokens_limit,
        context: st.worker.context,
    };
    prepare(kind, body, st.template.as_ref(), &encode, &limits)
}

async fn run(st: Arc<ApiState>, kind: Route, body: Bytes) -> Response {
    // Rendering and tokenizing a megabyte of prompt is CPU work: off the
    // runtime's threads, so that it never stalls other connections.
    let state = Arc::clone(&st);
    let prepared = tokio::task::spawn_blocking(move || prepare_request(&state, kind, &body)).await;
    let Prepared {
        request: req,
        n,
        stream: streamed,
        include_usage,
        tools,
    } = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                &format!("preparing the request failed: {e}"),
            );
        }
    };
    let prompt_tokens = req.prompt.len();
    let logprobs = req
        .logprobs
        .is_some()
        .then(|| Arc::clone(&st.worker.tokenizer));
    // `n` choices are `n` jobs, choice i drawn with seed + i; if the queue
    // cannot take them all, those already queued are dropped (their
    // closed channels cancel them) and the request is a 429.
    let mut choices = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = req.clone();
        r.sampling.seed = r.sampling.seed.wrapping_add(i as u64);
        match st.worker.submit(r) {
            Ok(rx) => choices.push(rx),
            Err(Busy::Full) => {
                return api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    None,
                    "the request queue is full; retry later",
                );
            }
            Err(Busy::Stopped) => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    None,
                    "the engine has stopped",
                );
            }
        }
    }
    let (id, object) = match kind {
        Route::Chat => (request_id("chatcmpl"), "chat.completion"),
        Route::Text => (request_id("cmpl"), "text_completion"),
    };
    let model = st.claims.model.name.clone();
    let created = crate::unix_now();
    if streamed {
        let head = super::sse::StreamHead {
            kind,
            id,
            model,
            created,
            include_usage,
            logprobs,
            tools,
        };
        return super::sse::stream(choices, head).into_response();
    }
    let mut answers = Vec::with_capacity(n);
    let mut completion_tokens = 0;
    for (index, mut events) in choices.into_iter().enumerate() {
        let done = loop {
            match events.recv().await {
                Some(Event::Text { .. }) => {}
                Some(Event::Done(done)) => break done,
                Some(Event::Failed(e)) => {
                    return api_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, &e);
                }
                None => {
                    return api_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        None,
                        "the engine stopped",
                    );
                }
            }
        };
        completion_tokens += done.ids.len();
        let lp = match &logprobs {
            Some(t) => super::logprobs::to_json(kind, t, &done.logprobs),
            None => Value::Null,
        };
        answers.push(match kind {
            Route::Chat => {
                let (message, finish) = super::tools::chat_answer(&done.text, done.finish, tools);
                json!({"index": index, "message": message, "logprobs": lp, "finish_reason": finish})
            }
            Route::Text => json!({
                "index": index, "text": done.text, "logprobs": lp,
                "finish_reason": finish_reason(done.finish),
            }),
        });
    }
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    Json(json!({
        "id": id, "object": object, "created": created, "model": model,
        "choices": answers, "usage": usage,
    }))
    .into_response()
}
