//! Chat templates with tools, rendered as Hugging Face's transformers
//! renders them (`reference/templates/rendered.json`, written by
//! `scripts/template-reference.py` with jinja2): Qwen 2.5's (Hermes calls)
//! and Llama 3.1's (JSON calls, `tojson(indent=4)`, tools in the first user
//! message), for a first turn with tools, a conversation with a call and
//! its answer, and one without tools. The same text is what the model was
//! trained on; a separator or key order off by one byte is a different
//! prompt.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use ciel_engine::chat::{ChatTemplate, Message};
use ciel_engine::tools::ToolSyntax;
use std::path::Path;

fn folder() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/templates"
    ))
}

fn template(name: &str) -> ChatTemplate {
    let source = std::fs::read_to_string(folder().join(name)).unwrap();
    ChatTemplate::new(source)
        .unwrap()
        .with_special_tokens("<BOS>", "<EOS>")
}

#[test]
fn templates_with_tools_render_as_transformers_does() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder().join("rendered.json")).unwrap())
            .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let rendered = reference["rendered"].as_object().unwrap();
    assert_eq!(rendered.len(), 2);
    for (name, want) in rendered {
        let t = template(name);
        for (i, case) in cases.iter().enumerate() {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let tools = Some(&case["tools"]).filter(|t| !t.is_null());
            let got = t.render_with_tools(&messages, tools, true).unwrap();
            assert_eq!(got, want[i].as_str().unwrap(), "{name}, case {i}");
        }
    }
}

#[test]
fn templates_say_how_their_models_call_tools() {
    assert_eq!(
        template("qwen2.5-instruct.jinja").tools(),
        (true, Some(ToolSyntax::Hermes))
    );
    assert_eq!(
        template("llama-3.1-instruct.jinja").tools(),
        (true, Some(ToolSyntax::Llama3Json))
    );
    let plain =
        ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}".into()).unwrap();
    assert_eq!(plain.tools(), (false, None));
}
