//! Tool calling in the chat API: the request's `tools`, `tool_choice` and
//! `parallel_tool_calls` checked and turned into what the template renders
//! and the grammar that holds calls to the functions offered; the messages
//! of a conversation with calls in it (assistant `tool_calls`, `tool`
//! answers); and the calls read back into OpenAI's `tool_calls`.

use super::api::ApiError;
use super::request::bad_field;
use ciel_engine::chat::{ChatTemplate, Message};
use ciel_engine::generate::{Finish, Trigger};
use ciel_engine::grammar::Grammar;
use ciel_engine::grammar::calls::Function;
use ciel_engine::tools::{Calls, ToolSyntax};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The most functions one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// A message as OpenAI's API carries it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiMessage {
    role: String,
    /// Text, `null` (an assistant turn of calls alone), or a list of text
    /// parts.
    #[serde(default)]
    content: Option<Content>,
    tool_calls: Option<Vec<ApiToolCall>>,
    tool_call_id: Option<String>,
    name: Option<String>,
    /// Accepted as OpenAI's: a refusal the assistant wrote earlier.
    #[serde(default, rename = "refusal")]
    _refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ContentPart {
    Text { text: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: ApiFunctionCall,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFunctionCall {
    name: String,
    /// JSON text, as OpenAI's answers carry it.
    arguments: String,
}

/// The conversation as templates read it: text parts joined, each call's
/// arguments parsed (templates write them back with `tojson`).
pub(super) fn messages(api: Vec<ApiMessage>) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::with_capacity(api.len());
    for (i, m) in api.into_iter().enumerate() {
        let content = match m.content {
            None => None,
            Some(Content::Text(t)) => Some(t),
            Some(Content::Parts(parts)) => Some(
                parts
                    .into_iter()
                    .map(|ContentPart::Text { text }| text)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        };
        if content.is_none() && m.tool_calls.is_none() {
            return Err(bad_field(
                &format!("messages[{i}].content"),
                "is required (it may be null only beside tool_calls)",
            ));
        }
        if m.tool_calls.is_some() && m.role != "assistant" {
            return Err(bad_field(
                &format!("messages[{i}].tool_calls"),
                "only an assistant message carries tool calls",
            ));
        }
        let tool_calls = match m.tool_calls {
            None => None,
            Some(calls) => {
                let mut v = Vec::with_capacity(calls.len());
                for (j, c) in calls.into_iter().enumerate() {
                    let at = format!("messages[{i}].tool_calls[{j}]");
                    if c.kind != "function" {
                        return Err(bad_field(&format!("{at}.type"), "must be \"function\""));
                    }
                    let arguments: Value =
                        serde_json::from_str(&c.function.arguments).map_err(|e| {
                            bad_field(
                                &format!("{at}.function.arguments"),
                                format!("not JSON: {e}"),
                            )
                        })?;
                    v.push(json!({"id": c.id, "type": "function",
                                  "function": {"name": c.function.name, "arguments": arguments}}));
                }
                Some(v)
            }
        };
        out.push(Message {
            role: m.role,
            content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
        });
    }
    Ok(out)
}

/// What a request's tools ask: the tools the template renders, and (unless
/// `tool_choice` is `none`) the syntax to read calls in, the grammar that
/// holds them and where it starts.
#[derive(Debug)]
pub(super) struct ToolPlan {
    pub render: Option<Value>,
    pub calls: Option<(ToolSyntax, Arc<Grammar>, Trigger)>,
}

/// `tools`, `tool_choice` and `parallel_tool_calls` checked against each
/// other and the model's template.
pub(super) fn plan(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
    template: &ChatTemplate,
) -> Result<ToolPlan, ApiError> {
    let Some(tools) = tools else {
        if choice.is_some() {
            return Err(bad_field("tool_choice", "needs tools"));
        }
        return Ok(ToolPlan {
            render: None,
            calls: None,
        });
    };
    let functions = functions(tools)?;
    enum Choice<'a> {
        None,
        Auto,
        Required,
        Named(&'a str),
    }
    let choice = match choice {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => {
                return Err(bad_field(
                    "tool_choice",
                    format!("{other:?} is not none, auto, required or a named function"),
                ));
            }
        },
        Some(v) => Choice::Named(named(v, &functions)?),
    };
    // `none`: the model is not shown the tools and its answer is text.
    if matches!(choice, Choice::None) {
        return Ok(ToolPlan {
            render: None,
            calls: None,
        });
    }
    let (takes_tools, syntax) = template.tools();
    if !takes_tools {
        return Err(bad_field(
            "tools",
            "this model's chat template renders no tools, so it cannot be offered functions",
        ));
    }
    let Some(syntax) = syntax else {
        return Err(bad_field(
            "tools",
            "this model's chat template writes tool calls in a syntax this server does not read (it reads Hermes' <tool_call> and Llama 3.x's JSON)",
        ));
    };
    let held: Vec<Function<'_>> = match choice {
        Choice::Named(name) => functions
            .iter()
            .filter(|f| f.name == name)
            .cloned()
            .collect(),
        _ => functions.clone(),
    };
    // A named function is called once (what naming it asks); otherwise as
    // many as `parallel_tool_calls` allows (OpenAI's default: several).
    let many = !matches!(choice, Choice::Named(_)) && parallel.unwrap_or(true);
    let grammar = syntax
        .grammar(&held, many)
        .map_err(|e| bad_field("tools", format!("{}: {}", e.path, e.message)))?;
    let trigger = match choice {
        Choice::Auto => syntax.trigger(),
        // A call must be made: the grammar holds from the first token.
        _ => Trigger {
            text: String::new(),
            at_start: false,
        },
    };
    Ok(ToolPlan {
        render: Some(tools.clone()),
        calls: Some((syntax, Arc::new(grammar), trigger)),
    })
}

/// The functions `tools` offers, each checked.
fn functions(tools: &Value) -> Result<Vec<Function<'_>>, ApiError> {
    let list = match tools {
        Value::Array(l) if !l.is_empty() && l.len() <= MAX_TOOLS => l,
        _ => {
            return Err(bad_field(
                "tools",
                format!("must be a list of 1 to {MAX_TOOLS} tools"),
            ));
        }
    };
    // An absent `parameters`: a function of no arguments.
    static NO_PARAMETERS: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| json!({"type": "object", "additionalProperties": false}));
    let mut out: Vec<Function<'_>> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let tool = tool
            .as_object()
            .ok_or_else(|| bad_field(&at, "not an object"))?;
        only_keys(tool, &["type", "function"], &at)?;
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad_field(&format!("{at}.type"), "must be \"function\""));
        }
        let at = format!("{at}.function");
        let f = tool
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| bad_field(&at, "must be an object"))?;
        only_keys(f, &["name", "description", "parameters", "strict"], &at)?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_name(n))
            .ok_or_else(|| bad_field(&format!("{at}.name"), "1 to 64 letters, digits, _ or -"))?;
        if out.iter().any(|g| g.name == name) {
            return Err(bad_field(
                &format!("{at}.name"),
                format!("{name:?} is offered twice"),
            ));
        }
        if f.get("description").is_some_and(|d| !d.is_string()) {
            return Err(bad_field(&format!("{at}.description"), "not a string"));
        }
        if f.get("strict").is_some_and(|s| !s.is_boolean()) {
            return Err(bad_field(&format!("{at}.strict"), "not a boolean"));
        }
        let parameters = match f.get("parameters") {
            None => &*NO_PARAMETERS,
            Some(p) if p.is_object() => p,
            Some(_) => return Err(bad_field(&format!("{at}.parameters"), "not an object")),
        };
        out.push(Function {
            name,
            parameters,
            path: format!("{at}.parameters"),
        });
    }
    Ok(out)
}

/// `{"type": "function", "function": {"name": …}}`, naming an offered one.
fn named<'a>(v: &'a Value, functions: &[Function<'_>]) -> Result<&'a str, ApiError> {
    let name = v
        .as_object()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("function"))
        .and_then(|o| o.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad_field(
                "tool_choice",
                "none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
            )
        })?;
    if !functions.iter().any(|f| f.name == name) {
        return Err(bad_field(
            "tool_choice",
            format!("names {name:?}, which is not among the tools"),
        ));
    }
    Ok(name)
}

fn only_keys(
    map: &serde_json::Map<String, Value>,
    allowed: &[&str],
    at: &str,
) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(bad_field(&format!("{at}.{k}"), "is not a field of it")),
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A call's id, as OpenAI's (`call_` and 24 random hex digits).
fn call_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("call_{}", hex::encode(b))
}

/// OpenAI's `tool_calls`: each call with its id; in a stream's delta, each
/// with its index too.
pub(super) fn to_json(calls: &Calls, streamed: bool) -> Value {
    Value::Array(
        calls
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({"id": call_id(), "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}});
                if streamed {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

/// The assistant's message and finish reason for an answer that may hold
/// calls: with calls read from it, `tool_calls` (its content the text before
/// them, or null) and, where the model ended it, `"tool_calls"`.
pub(super) fn chat_answer(
    text: &str,
    finish: Finish,
    syntax: Option<ToolSyntax>,
) -> (Value, &'static str) {
    match read_calls(text, finish, syntax) {
        (Some(calls), reason) => (
            json!({"role": "assistant", "content": calls.content, "tool_calls": to_json(&calls, false)}),
            reason,
        ),
        (None, reason) => (json!({"role": "assistant", "content": text}), reason),
    }
}

/// The calls an answer holds, if any, and its finish reason: where the
/// model ended an answer of calls, `tool_calls` (whole or streamed alike).
pub(super) fn read_calls(
    text: &str,
    finish: Finish,
    syntax: Option<ToolSyntax>,
) -> (Option<Calls>, &'static str) {
    let calls = syntax.and_then(|s| s.parse(text));
    let reason = match (&calls, finish) {
        (Some(_), Finish::Stop) => "tool_calls",
        _ => super::api::finish_reason(finish),
    };
    (calls, reason)
}
