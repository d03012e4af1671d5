//! The OpenAI-compatible API the guest serves inside its attested TLS:
//! `POST /v1/chat/completions` (and `stream: true` as server-sent events),
//! `POST /v1/completions`, `GET /v1/models`, `GET /v1/attestation?nonce=HEX`
//! and `GET /healthz`. Errors use OpenAI's body shape
//! (`{"error": {"message", "type", "param", "code"}}`).
//!
//! Nothing here logs prompt or completion text: only sizes and outcomes.

use super::attested_tls::attest;
use super::worker::{Busy, Event, Worker};
use crate::kbs_client::EvidenceSource;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ciel_engine::chat::{ChatTemplate, Message};
use ciel_engine::generate::{Finish, Request};
use ciel_engine::sampling::{SamplingError, SamplingParams};
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
    /// Upper bound on `max_tokens` (default when the request names none: 256).
    pub max_tokens_limit: usize,
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

/// A 400 naming the offending field.
fn bad_field(param: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid_request_error",
        param: Some(param.to_string()),
        message: format!("{param}: {message}"),
    }
}

fn invalid(param: &str, message: impl std::fmt::Display) -> Response {
    bad_field(param, message).into_response()
}

/// A JSON body of type `T`, with OpenAI-style errors: 400 for bytes that
/// are not JSON, 422 for JSON of the wrong shape.
fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            kind: "invalid_request_error",
            param: None,
            message: format!("the request body: {e}"),
        }
    })
}

async fn models(State(st): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.claims.model.name, "object": "model", "created": 0, "owned_by": "ciel"}],
    }))
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
    let platform = st.platform.clone();
    match tokio::task::spawn_blocking(move || attest(platform.as_ref(), claims)).await {
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

/// `stop`: a string or a list of up to 4 strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Sampling fields common to both endpoints.
#[derive(Debug, Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Not in OpenAI's API; accepted as llama.cpp's server does.
    top_k: Option<usize>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

/// `stream_options`: with `include_usage`, a last chunk carries the usage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    messages: Vec<Message>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    prompt: String,
    #[serde(flatten)]
    common: Common,
}

/// What a request may ask of this guest.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits<'a> {
    /// The served model's name.
    pub model: &'a str,
    pub max_tokens_limit: usize,
    /// The model's context, in tokens.
    pub context: usize,
}

/// Which endpoint a body is for: the shapes of request and answer differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Text,
}

/// A request checked and ready for the engine.
#[derive(Debug)]
pub struct Prepared {
    pub request: Request,
    pub stream: bool,
    /// Streamed with a last chunk carrying the usage.
    pub include_usage: bool,
}

/// Everything between the bytes of a request body and the engine, without
/// I/O: parse, check every field, render the chat template, tokenize (with
/// `encode`, given the text and whether it is a rendered chat), check the
/// context. Bodies are attacker-controlled; this is what the fuzzer drives.
pub fn prepare(
    route: Route,
    body: &[u8],
    template: Option<&ChatTemplate>,
    encode: &dyn Fn(&str, bool) -> Vec<u32>,
    limits: &RequestLimits<'_>,
) -> Result<Prepared, ApiError> {
    super::request_fields::refuse_unknown(route, body)?;
    let (common, ids) = match route {
        Route::Chat => {
            let b: ChatBody = parse_body(body)?;
            if b.messages.is_empty() {
                return Err(bad_field("messages", "at least one message is required"));
            }
            let Some(template) = template else {
                return Err(bad_field(
                    "messages",
                    "this model has no chat template (tokenizer.chat_template): send raw prompts to /v1/completions",
                ));
            };
            let prompt = template
                .render(&b.messages, true)
                .map_err(|e| bad_field("messages", e))?;
            (b.common, encode(&prompt, true))
        }
        Route::Text => {
            let b: CompletionBody = parse_body(body)?;
            (b.common, encode(&b.prompt, false))
        }
    };
    let stream = common.stream;
    if common.stream_options.is_some() && !stream {
        return Err(bad_field(
            "stream_options",
            "only allowed when stream is true",
        ));
    }
    let include_usage = common
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let request = build_request(limits, &common, ids)?;
    Ok(Prepared {
        request,
        stream,
        include_usage,
    })
}

/// Checks the common fields and builds the engine request.
fn build_request(
    lim: &RequestLimits<'_>,
    c: &Common,
    prompt: Vec<u32>,
) -> Result<Request, ApiError> {
    if let Some(m) = &c.model
        && *m != lim.model
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            param: Some("model".into()),
            message: format!(
                "model {m:?} is not served here (this guest serves {:?})",
                lim.model
            ),
        });
    }
    if c.n.is_some_and(|n| n != 1) {
        return Err(bad_field("n", "only 1 is supported"));
    }
    let max_tokens = c.max_completion_tokens.or(c.max_tokens).unwrap_or(256);
    if max_tokens == 0 || max_tokens > lim.max_tokens_limit {
        return Err(bad_field(
            "max_tokens",
            format!("must be between 1 and {}", lim.max_tokens_limit),
        ));
    }
    if prompt.is_empty() {
        return Err(bad_field("prompt", "is empty"));
    }
    if prompt.len().saturating_add(max_tokens) > lim.context {
        return Err(bad_field(
            "max_tokens",
            format!(
                "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceed the model's context of {} tokens",
                prompt.len(),
                lim.context
            ),
        ));
    }
    let stop = match &c.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(bad_field("stop", "at most 4 non-empty strings"));
    }
    let sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(0.0),
        top_k: c.top_k.unwrap_or(0),
        top_p: c.top_p.unwrap_or(1.0),
        seed: c.seed.unwrap_or(0),
    };
    if let Err(e) = sampling.validate() {
        let param = match e {
            SamplingError::TopP(_) => "top_p",
            _ => "temperature",
        };
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            param: Some(param.into()),
            message: e.to_string(),
        });
    }
    Ok(Request {
        prompt,
        max_tokens,
        sampling,
        stop,
    })
}

pub(super) fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        // Never seen by a client: it is gone.
        Finish::Abandoned => "cancelled",
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

async fn chat_completions(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    run(st, Route::Chat, &body).await
}

async fn completions(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    run(st, Route::Text, &body).await
}

async fn run(st: Arc<ApiState>, kind: Route, body: &[u8]) -> Response {
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
    let Prepared {
        request: req,
        stream: streamed,
        include_usage,
    } = match prepare(kind, body, st.template.as_ref(), &encode, &limits) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let prompt_tokens = req.prompt.len();
    let events = match st.worker.submit(req) {
        Ok(rx) => rx,
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
    };
    let (id, object) = match kind {
        Route::Chat => (request_id("chatcmpl"), "chat.completion"),
        Route::Text => (request_id("cmpl"), "text_completion"),
    };
    let model = st.claims.model.name.clone();
    let created = now_secs();
    if streamed {
        return super::sse::stream(events, kind, id, model, created, include_usage).into_response();
    }
    let mut events = events;
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => {
                return api_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, &e);
            }
            Event::Done(done) => {
                let usage = json!({
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": done.ids.len(),
                    "total_tokens": prompt_tokens + done.ids.len(),
                });
                let choice = match kind {
                    Route::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text},
                        "finish_reason": finish_reason(done.finish),
                    }),
                    Route::Text => json!({
                        "index": 0, "text": done.text, "logprobs": null,
                        "finish_reason": finish_reason(done.finish),
                    }),
                };
                return Json(json!({
                    "id": id, "object": object, "created": created, "model": model,
                    "choices": [choice], "usage": usage,
                }))
                .into_response();
            }
        }
    }
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        None,
        "the engine stopped",
    )
}
