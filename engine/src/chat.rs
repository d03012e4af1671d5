//! Chat prompts: the model's own `tokenizer.chat_template` (Jinja), rendered
//! with minijinja, so the prompt is exactly what the model was trained on.

use super::gguf::{Metadata, Value};
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    #[error("chat template: {0}")]
    Template(String),
    #[error("message {index}: role {role:?} is not system, user or assistant")]
    Role { index: usize, role: String },
}

/// A model's chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// The texts of the model's BOS and EOS tokens (`{{ bos_token }}`).
    bos_token: String,
    eos_token: String,
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
            let message = Message {
                role: "user".into(),
                content: text.into(),
            };
            let rendered = t.render(&[message], true)?;
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
        let mut t = Self::new(source.to_string())?;
        t.bos_token = token("tokenizer.ggml.bos_token_id");
        t.eos_token = token("tokenizer.ggml.eos_token_id");
        Ok(Some(t))
    }

    pub fn new(source: String) -> Result<Self, ChatError> {
        let mut env = minijinja::Environment::new();
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
        env.add_template_owned("chat", source)
            .map_err(|e| ChatError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn marker
    /// when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        for (index, m) in messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
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
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| ChatError::Template(e.to_string()))
    }
}
