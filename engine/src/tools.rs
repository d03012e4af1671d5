//! Tool calling: which syntax a model's chat template teaches it for
//! calls, the grammar that holds a call to the functions offered, where a
//! call starts in free text, and the calls read back out of an answer.
//!
//! Two syntaxes, as the templates of the families that carry tools write
//! them: Hermes' (Qwen 2.5 and 3, Hermes, …): `<tool_call>\n{"name": …,
//! "arguments": {…}}\n</tool_call>`, several in a row; and Llama 3.x's: the
//! answer is one JSON object `{"name": …, "parameters": {…}}`.

use crate::generate::Trigger;
use crate::grammar::Grammar;
use crate::grammar::calls::{CallShape, Function, tool_calls};
use crate::grammar::json::SchemaError;
use serde_json::Value;

/// How a model writes a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// `<tool_call>{"name", "arguments"}</tool_call>`, any number.
    Hermes,
    /// One `{"name", "parameters"}` object as the whole answer.
    Llama3Json,
}

/// A call read out of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

/// An answer split into its text and its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calls {
    /// The text before the first call (`None`: there was none).
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

impl ToolSyntax {
    /// The syntax a chat template teaches (`None`: it renders no tools, or
    /// writes calls in a form not parsed here).
    pub fn of_template(source: &str) -> Option<Self> {
        if !takes_tools(source) {
            return None;
        }
        if source.contains(HERMES_OPEN) {
            Some(ToolSyntax::Hermes)
        } else if source.contains("<|start_header_id|>") && source.contains("\"parameters\"") {
            Some(ToolSyntax::Llama3Json)
        } else {
            None
        }
    }

    fn shape(self) -> CallShape<'static> {
        match self {
            ToolSyntax::Hermes => CallShape {
                open: HERMES_OPEN.as_bytes(),
                close: HERMES_CLOSE.as_bytes(),
                arguments_key: "arguments",
            },
            ToolSyntax::Llama3Json => CallShape {
                open: b"",
                close: b"",
                arguments_key: "parameters",
            },
        }
    }

    /// Whether one answer may carry several calls.
    pub fn calls_many(self) -> bool {
        self == ToolSyntax::Hermes
    }

    /// The grammar of calls to `functions`: several where the syntax
    /// allows and `parallel`, else exactly one.
    pub fn grammar(
        self,
        functions: &[Function<'_>],
        parallel: bool,
    ) -> Result<Grammar, SchemaError> {
        tool_calls(self.shape(), functions, parallel && self.calls_many())
    }

    /// Where a call starts in free text (`tool_choice: auto`): from there
    /// on the grammar holds the model to a well-formed call.
    pub fn trigger(self) -> Trigger {
        match self {
            ToolSyntax::Hermes => Trigger {
                text: HERMES_OPEN.into(),
                at_start: false,
            },
            ToolSyntax::Llama3Json => Trigger {
                text: "{".into(),
                at_start: true,
            },
        }
    }

    /// The calls in `text`, and the text before them; `None` when `text`
    /// holds no call or a malformed one (an answer cut short by
    /// `max_tokens`): it is then an answer of text alone.
    pub fn parse(self, text: &str) -> Option<Calls> {
        match self {
            ToolSyntax::Hermes => {
                let start = text.find(HERMES_OPEN)?;
                let mut calls = Vec::new();
                let mut rest = &text[start..];
                loop {
                    rest = rest.trim_start();
                    if rest.is_empty() {
                        break;
                    }
                    let body = rest.strip_prefix(HERMES_OPEN)?;
                    let end = body.find(HERMES_CLOSE)?;
                    calls.push(call(&body[..end], "arguments")?);
                    rest = &body[end + HERMES_CLOSE.len()..];
                }
                let content = text[..start].trim();
                Some(Calls {
                    content: (!content.is_empty()).then(|| content.to_string()),
                    calls,
                })
            }
            ToolSyntax::Llama3Json => {
                let object = text.trim();
                if !object.starts_with('{') {
                    return None;
                }
                Some(Calls {
                    content: None,
                    calls: vec![call(object, "parameters")?],
                })
            }
        }
    }
}

/// Whether a chat template renders the tools offered (it reads `tools`).
pub fn takes_tools(source: &str) -> bool {
    source.contains("tools")
}

/// `{"name": "…", "<key>": {…}}` as a call.
fn call(json: &str, arguments_key: &str) -> Option<ToolCall> {
    let value: Value = serde_json::from_str(json.trim()).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get(arguments_key)?;
    if !arguments.is_object() {
        return None;
    }
    Some(ToolCall {
        name,
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::grammar::Matcher;
    use serde_json::json;
    use std::sync::Arc;

    fn matches(g: &Arc<Grammar>, text: &str) -> bool {
        let mut m = Matcher::new(Arc::clone(g));
        m.advance(text.as_bytes()) && m.is_complete()
    }

    fn weather() -> Value {
        json!({"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["c", "f"]}}, "required": ["city"]})
    }

    #[test]
    fn templates_name_their_syntax() {
        assert_eq!(
            ToolSyntax::of_template(
                "{% for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call>"
            ),
            Some(ToolSyntax::Hermes)
        );
        assert_eq!(
            ToolSyntax::of_template(
                "{%- if tools %}<|start_header_id|>{\"name\": function name, \"parameters\": …}"
            ),
            Some(ToolSyntax::Llama3Json)
        );
        // Tools rendered, calls in a form not parsed here; no tools at all.
        assert_eq!(ToolSyntax::of_template("{{ tools }} [TOOL_CALLS]"), None);
        assert_eq!(ToolSyntax::of_template("<|im_start|>{{ m.content }}"), None);
    }

    #[test]
    fn the_grammar_holds_calls_to_the_functions_and_their_schemas() {
        let params = weather();
        let none = json!({"type": "object", "additionalProperties": false});
        let fs = [
            Function {
                name: "get_weather",
                parameters: &params,
                path: "tools[0].function.parameters".into(),
            },
            Function {
                name: "now",
                parameters: &none,
                path: "tools[1].function.parameters".into(),
            },
        ];
        let g = Arc::new(ToolSyntax::Hermes.grammar(&fs, true).unwrap());
        let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert!(matches(&g, one));
        assert!(matches(
            &g,
            &format!("{one}\n<tool_call>{{\"name\":\"now\",\"arguments\":{{}}}}</tool_call>")
        ));
        // Unknown function, missing required argument, value outside the
        // enum, arguments of the other function, no call at all.
        for bad in [
            "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"P\", \"unit\": \"k\"}}</tool_call>",
            "<tool_call>{\"name\": \"now\", \"arguments\": {\"city\": \"P\"}}</tool_call>",
            "",
        ] {
            assert!(!matches(&g, bad), "{bad}");
        }
        // One call only when not parallel.
        let single = Arc::new(ToolSyntax::Hermes.grammar(&fs, false).unwrap());
        assert!(matches(&single, one));
        assert!(!matches(&single, &format!("{one}\n{one}")));
        // Llama 3.x: the object alone, `parameters`, never several.
        let l = Arc::new(ToolSyntax::Llama3Json.grammar(&fs, true).unwrap());
        assert!(matches(
            &l,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"c\"}}"
        ));
        assert!(!matches(
            &l,
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"
        ));
    }

    #[test]
    fn a_schema_that_cannot_be_held_is_named_with_its_tool() {
        let params =
            json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "x"}}});
        let fs = [Function {
            name: "f",
            parameters: &params,
            path: "tools[0].function.parameters".into(),
        }];
        let e = ToolSyntax::Hermes.grammar(&fs, true).unwrap_err();
        assert_eq!(e.path, "tools[0].function.parameters/properties/s/pattern");
    }

    #[test]
    fn calls_are_read_back_with_the_text_before_them() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>";
        let c = ToolSyntax::Hermes.parse(text).unwrap();
        assert_eq!(c.content.as_deref(), Some("Let me look."));
        assert_eq!(
            c.calls,
            [
                ToolCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
        // No call, a call cut short, text after the calls: no calls read.
        assert_eq!(ToolSyntax::Hermes.parse("It is sunny."), None);
        assert_eq!(
            ToolSyntax::Hermes.parse("<tool_call>{\"name\": \"now\", \"argu"),
            None
        );
        assert_eq!(
            ToolSyntax::Hermes
                .parse("<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call> and more"),
            None
        );
        let c = ToolSyntax::Llama3Json
            .parse(" {\"name\": \"now\", \"parameters\": {\"a\": [1, 2]}}")
            .unwrap();
        assert_eq!(
            (c.content, c.calls[0].arguments.as_str()),
            (None, "{\"a\":[1,2]}")
        );
        assert_eq!(ToolSyntax::Llama3Json.parse("Hello {\"name\": 1}"), None);
    }
}
