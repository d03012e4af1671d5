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
    #[error("the model has no tokenizer.chat_template")]
    NoTemplate,
    #[error("chat template: {0}")]
    Template(String),
    #[error("message {index}: role {role:?} is not system, user or assistant")]
    Role { index: usize, role: String },
}

/// A model's chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl ChatTemplate {
    pub fn from_gguf(meta: &Metadata) -> Result<Self, ChatError> {
        let source = meta
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .ok_or(ChatError::NoTemplate)?;
        Self::new(source.to_string())
    }

    pub fn new(source: String) -> Result<Self, ChatError> {
        let mut env = minijinja::Environment::new();
        // Templates are data from the model file: no filesystem loader, and
        // recursion is bounded by minijinja's default fuel-free limits.
        env.add_template_owned("chat", source)
            .map_err(|e| ChatError::Template(e.to_string()))?;
        Ok(ChatTemplate { env })
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
        t.render(minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt })
            .map_err(|e| ChatError::Template(e.to_string()))
    }
}
