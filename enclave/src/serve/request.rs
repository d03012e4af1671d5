//! A request body, from bytes to the engine's [`Request`], without I/O:
//! parse once, refuse unknown fields, check every field, render the chat
//! template, tokenize, check the context. Bodies are attacker-controlled;
//! this is what the `api_request` fuzz target drives.

use super::api::ApiError;
use axum::http::StatusCode;
use ciel_engine::chat::ChatTemplate;
use ciel_engine::generate::Request;
use ciel_engine::grammar::{Grammar, json};
use ciel_engine::logprobs::MAX_TOP;
use ciel_engine::sampling::{SamplingError, SamplingParams};
use ciel_engine::tools::ToolSyntax;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// A 400 naming the offending field.
pub(super) fn bad_field(param: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid_request_error",
        param: Some(param.to_string()),
        message: format!("{param}: {message}"),
    }
}

/// A JSON body of type `T`, with OpenAI-style errors: 400 for bytes that
/// are not JSON, 422 for JSON of the wrong shape.
fn parse_body<T: serde::de::DeserializeOwned>(route: Route, bytes: &[u8]) -> Result<T, ApiError> {
    let body_error = |e: serde_json::Error| {
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
    };
    // Parsed once: the fields are checked on the tree, which then becomes
    // the typed body.
    let value: Value = serde_json::from_slice(bytes).map_err(body_error)?;
    super::request_fields::refuse_unknown(route, &value)?;
    T::deserialize(value).map_err(body_error)
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
    n: Option<usize>,
    response_format: Option<Value>,
}

/// `response_format`: free text, any JSON object, or JSON matching a
/// schema; the JSON ones by constrained decoding.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaFormat {
    name: String,
    /// Absent: any JSON value.
    schema: Option<Value>,
    /// Accepted for what it describes; not read.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    /// Whether the answer must match: here it always does.
    #[serde(default, rename = "strict")]
    _strict: Option<bool>,
}

/// The grammar a `response_format` asks for (`None`: free text).
fn response_grammar(format: Option<&Value>) -> Result<Option<Arc<Grammar>>, ApiError> {
    let format = format
        .map(|v| ResponseFormat::deserialize(v).map_err(|e| bad_field("response_format", e)))
        .transpose()?;
    let grammar = match &format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => json::json_object(),
        Some(ResponseFormat::JsonSchema { json_schema: f }) => {
            if f.name.is_empty()
                || f.name.len() > 64
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad_field(
                    "response_format",
                    "json_schema.name: 1 to 64 letters, digits, _ or -",
                ));
            }
            let any = Value::Object(serde_json::Map::new());
            json::json_schema(f.schema.as_ref().unwrap_or(&any)).map_err(|e| {
                bad_field(
                    "response_format",
                    format!("json_schema.schema {}: {}", e.path, e.message),
                )
            })?
        }
    };
    Ok(Some(Arc::new(grammar)))
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
    messages: Vec<super::tools::ApiMessage>,
    /// Functions the model may call, how it must (`none`, `auto`,
    /// `required`, one named), and whether several at once.
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// Report the chosen tokens' log-probabilities ...
    logprobs: Option<bool>,
    /// ... with this many alternatives each (0 to 20).
    top_logprobs: Option<usize>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    prompt: String,
    /// The legacy API's form: alternatives per token (0 to 20), the chosen
    /// token's log-probability always included.
    logprobs: Option<usize>,
    #[serde(flatten)]
    common: Common,
}

/// The most choices (`n`) one request may ask for: each is a generation of
/// its own in the engine's queue.
pub const MAX_CHOICES: usize = 8;

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
    /// How many choices to generate, each its own job.
    pub n: usize,
    pub stream: bool,
    /// Streamed with a last chunk carrying the usage.
    pub include_usage: bool,
    /// The answer may hold tool calls, written in this syntax.
    pub tools: Option<ToolSyntax>,
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
    let mut tool_calls = None;
    let (common, ids, logprobs) = match route {
        Route::Chat => {
            let b: ChatBody = parse_body(route, body)?;
            let logprobs = match (b.logprobs, b.top_logprobs) {
                (Some(true), top) => Some(top_count("top_logprobs", top.unwrap_or(0))?),
                (_, Some(_)) => {
                    return Err(bad_field("top_logprobs", "needs logprobs set to true"));
                }
                _ => None,
            };
            if b.messages.is_empty() {
                return Err(bad_field("messages", "at least one message is required"));
            }
            let Some(template) = template else {
                return Err(bad_field(
                    "messages",
                    "this model has no chat template (tokenizer.chat_template): send raw prompts to /v1/completions",
                ));
            };
            let plan = super::tools::plan(
                b.tools.as_ref(),
                b.tool_choice.as_ref(),
                b.parallel_tool_calls,
                template,
            )?;
            if plan.calls.is_some() && b.common.response_format.is_some() {
                return Err(bad_field(
                    "response_format",
                    "is not supported together with tools (unless tool_choice is none)",
                ));
            }
            let messages = super::tools::messages(b.messages)?;
            let prompt = template
                .render_with_tools(&messages, plan.render.as_ref(), true)
                .map_err(|e| bad_field("messages", e))?;
            tool_calls = plan.calls;
            (b.common, encode(&prompt, true), logprobs)
        }
        Route::Text => {
            let b: CompletionBody = parse_body(route, body)?;
            let logprobs = b.logprobs.map(|k| top_count("logprobs", k)).transpose()?;
            (b.common, encode(&b.prompt, false), logprobs)
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
    let mut request = build_request(limits, &common, ids)?;
    request.logprobs = logprobs;
    request.grammar = response_grammar(common.response_format.as_ref())?;
    let tools = tool_calls.map(|(syntax, grammar, trigger)| {
        request.grammar = Some(grammar);
        request.trigger = Some(trigger);
        syntax
    });
    let n = match common.n {
        None => 1,
        Some(n) if (1..=MAX_CHOICES).contains(&n) => n,
        Some(_) => {
            return Err(bad_field(
                "n",
                format!("must be between 1 and {MAX_CHOICES}"),
            ));
        }
    };
    Ok(Prepared {
        request,
        n,
        stream,
        include_usage,
        tools,
    })
}

/// A count of alternatives per token, within OpenAI's limit.
fn top_count(param: &str, k: usize) -> Result<usize, ApiError> {
    if k > MAX_TOP {
        return Err(bad_field(param, format!("at most {MAX_TOP}")));
    }
    Ok(k)
}

/// A 404 naming `model`: a model this guest does not serve (`served` says
/// which it does).
pub(super) fn not_served(model: &str, served: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        param: Some("model".into()),
        message: format!("model {model:?} is not served here ({served})"),
    }
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
        return Err(not_served(m, &format!("this guest serves {:?}", lim.model)));
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
                "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceed this guest's context of {} tokens (the model's, bounded by the K/V memory budget)",
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
        logprobs: None,
        ..Request::default()
    })
}
