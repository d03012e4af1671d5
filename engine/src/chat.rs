//! Chat prompts: the model's own `tokenizer.chat_template` (Jinja), rendered
//! with minijinja, so the prompt is exactly what the model was trained on.

use super::gguf::{Metadata, Value};
use crate::tools::ToolSyntax;
use serde::Serialize;

/// One chat message, as chat templates read it (Hugging Face's shape).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    /// `None`: an assistant turn of tool calls alone.
    pub content: Option<String>,
    /// An assistant turn's calls: `{"id", "type": "function", "function":
    /// {"name", "arguments"}}`, the arguments as a JSON value (what the
    /// templates write back with `tojson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A tool's answer: which call it answers, and the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message of text.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: Some(content.into()),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    #[error("chat template: {0}")]
    Template(String),
    #[error("message {index}: role {role:?} is not system, user, assistant or tool")]
    Role { index: usize, role: String },
}

/// A model's chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// The texts of the model's BOS and EOS tokens (`{{ bos_token }}`).
    bos_token: String,
    eos_token: String,
    /// Whether it renders the tools offered, and the call syntax it
    /// teaches (`None`: one not parsed here).
    takes_tools: bool,
    tool_syntax: Option<ToolSyntax>,
}

/// The prompt one user message becomes, as text and ids: the model's chat
/// rendering where it has a template, else the text itself, continued raw
/// (a base model).
pub fn user_prompt(
    template: Option<&ChatTemplate>,
    tokenizer: &crate::tokenizer::Tokenizer,
    text: &str,
) -> Result<(String, Vec<u32>), ChatError> {
    Ok(match template {
        Some(t) => {
            let rendered = t.render(&[Message::new("user", text)], true)?;
            let ids = tokenizer.encode_chat(&rendered);
            (rendered, ids)
        }
        None => (text.to_string(), tokenizer.encode_prompt(text, true)),
    })
}

impl ChatTemplate {
    /// The model's template; `None` for a base model, which has none (it
    /// continues raw text and is not asked chats).
    pub fn from_gguf(meta: &Metadata) -> Result<Option<Self>, ChatError> {
        let Some(source) = meta.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = source
            .as_str()
            .ok_or_else(|| ChatError::Template("tokenizer.chat_template is not a string".into()))?;
        let token = |key: &str| -> String {
            let id = meta.get(key).and_then(Value::as_u64);
            let tokens = meta.get("tokenizer.ggml.tokens").and_then(Value::as_array);
            match (id, tokens) {
                (Some(id), Some(t)) => usize::try_from(id)
                    .ok()
                    .and_then(|i| t.get(i))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        let t = Self::new(source.to_string())?;
        Ok(Some(t.with_special_tokens(
            &token("tokenizer.ggml.bos_token_id"),
            &token("tokenizer.ggml.eos_token_id"),
        )))
    }

    /// The texts `{{ bos_token }}` and `{{ eos_token }}` render.
    pub fn with_special_tokens(mut self, bos: &str, eos: &str) -> Self {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    pub fn new(source: String) -> Result<Self, ChatError> {
        let mut env = minijinja::Environment::new();
        // As Hugging Face's environment: a block tag's newline and the
        // blanks before it are not output.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates are data from the model file: no filesystem loader, and
        // recursion is bounded by minijinja's default fuel-free limits.
        // Templates refuse what they cannot render (Gemma's: a system
        // message) by calling `raise_exception`, as in Hugging Face's.
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        // Hugging Face's `tojson` is Python's `json.dumps` (`", "` and
        // `": "` between items, `indent=`): tools and call arguments are
        // written into the prompt exactly as the model was trained on.
        env.add_filter("tojson", python_json);
        let takes_tools = crate::tools::takes_tools(&source);
        let tool_syntax = ToolSyntax::of_template(&source);
        env.add_template_owned("chat", source)
            .map_err(|e| ChatError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos_token: String::new(),
            eos_token: String::new(),
            takes_tools,
            tool_syntax,
        })
    }

    /// Whether the template renders tools, and how the model writes calls
    /// (`None` where it renders none, or in a syntax not parsed here).
    pub fn tools(&self) -> (bool, Option<ToolSyntax>) {
        (self.takes_tools, self.tool_syntax)
    }

    /// The prompt for `messages`, ending with the assistant's turn marker
    /// when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`Self::render`] with the tools offered (`[{"type": "function",
    /// "function": {…}}]`, as OpenAI's request carries them).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        for (index, m) in messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ChatError::Role {
                    index,
                    role: m.role.clone(),
                });
            }
        }
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Template(e.to_string()))?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => tools,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| ChatError::Template(e.to_string()))
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, as
/// Hugging Face's templates call it through `tojson`.
fn python_json(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let fail = |e: &dyn std::fmt::Display| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    };
    let json = serde_json::to_value(&value).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n.min(16)];
            let f = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            json.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
        }
        None => json.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonSeparators,
        )),
    };
    written.map_err(|e| fail(&e))?;
    let text = String::from_utf8(out).map_err(|e| fail(&e))?;
    Ok(minijinja::Value::from_safe_string(text))
}

/// JSON with Python's default separators: `", "` and `": "`.
struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}
