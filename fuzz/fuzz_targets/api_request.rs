//! The body of an API request, as the guest's handlers see it once TLS is
//! done: parsed, every field checked, the model's own chat template (Jinja)
//! rendered over the messages, tokenized, the context checked. The first
//! byte picks the endpoint (chat or plain completion) and the template:
//! the demo model's, or Qwen 2.5's, which carries tools (so that `tools`,
//! their parameter schemas and `tool_choice` reach the grammar compiler).
#![no_main]
use ciel_engine::chat::ChatTemplate;
use ciel_enclave::serve::request::{RequestLimits, Route, prepare};
use std::sync::OnceLock;

fn template(tools: bool) -> &'static ChatTemplate {
    static PLAIN: OnceLock<ChatTemplate> = OnceLock::new();
    static TOOLS: OnceLock<ChatTemplate> = OnceLock::new();
    if tools {
        return TOOLS.get_or_init(|| {
            ChatTemplate::new(
                include_str!("../../engine/tests/reference/templates/qwen2.5-instruct.jinja")
                    .to_string(),
            )
            .expect("Qwen 2.5's chat template compiles")
        });
    }
    PLAIN.get_or_init(|| {
        ChatTemplate::new(include_str!("../templates/smollm2-chat.jinja").to_string())
            .expect("the demo model's chat template compiles")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let route = if first & 1 == 0 { Route::Chat } else { Route::Text };
    // A byte-level stand-in for the tokenizer: the checks after it see a
    // token count that grows with the text, as the real one does.
    let encode = |text: &str, _chat: bool| text.bytes().map(u32::from).collect();
    let limits = RequestLimits {
        model: "smollm2-135m-instruct",
        max_tokens_limit: 2048,
        context: 8192,
    };
    let tools = first & 2 != 0;
    if let Ok(p) = prepare(route, body, Some(template(tools)), &encode, &limits) {
        assert!(p.request.max_tokens >= 1 && p.request.max_tokens <= 2048);
        assert!(p.request.prompt.len() + p.request.max_tokens <= 8192);
    }
});
