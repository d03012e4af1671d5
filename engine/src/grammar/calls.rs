//! The grammar of tool calls: `open {"name": "NAME", "<arguments>": ARGS}
//! close`, NAME one of the functions offered and ARGS a value of that
//! function's parameter schema, once or (when `many`) several times with
//! blanks between. Each schema is compiled on its own (its `$ref`s point
//! into it), so every call a model writes under it names a real function
//! with arguments its schema accepts.

use super::json::{Builder, SchemaError};
use super::{Elem, Grammar};
use serde_json::Value;

/// One function a model may call.
#[derive(Debug, Clone)]
pub struct Function<'a> {
    pub name: &'a str,
    /// Its parameters' JSON Schema.
    pub parameters: &'a Value,
    /// Where the schema is, for errors (`tools[2].function.parameters`).
    pub path: String,
}

/// How one call is written around its JSON object.
#[derive(Debug, Clone, Copy)]
pub struct CallShape<'a> {
    /// Text before the object (`<tool_call>`), and after it.
    pub open: &'a [u8],
    pub close: &'a [u8],
    /// The key of the arguments (`arguments`, `parameters`).
    pub arguments_key: &'a str,
}

/// The calls `shape` writes of `functions`; one call, or any number from
/// one when `many`. Errors name the schema that cannot constrain output.
pub fn tool_calls(
    shape: CallShape<'_>,
    functions: &[Function<'_>],
    many: bool,
) -> Result<Grammar, SchemaError> {
    let empty = Value::Null;
    let mut b = Builder::new(&empty);
    let ws = b.ws();
    let name_key = b.grammar().literal(b"\"name\"");
    let args_key = {
        let key = Value::String(shape.arguments_key.to_string()).to_string();
        b.grammar().literal(key.as_bytes())
    };
    let mut objects = Vec::with_capacity(functions.len());
    for f in functions {
        let arguments = b.schema(f.parameters, "#").map_err(|e| SchemaError {
            path: format!("{}{}", f.path, e.path.trim_start_matches('#')),
            message: e.message,
        })?;
        let name = Value::String(f.name.to_string()).to_string();
        let name = b.grammar().literal(name.as_bytes());
        let name = b.member(Elem::Rule(name_key), Elem::Rule(name));
        let args = b.member(Elem::Rule(args_key), Elem::Rule(arguments));
        let g = b.grammar();
        let open = g.literal(b"{");
        let comma = g.literal(b",");
        let close = g.literal(b"}");
        objects.push(vec![
            Elem::Rule(open),
            ws,
            name,
            ws,
            Elem::Rule(comma),
            ws,
            args,
            ws,
            Elem::Rule(close),
        ]);
    }
    let g = b.grammar();
    let object = g.rule(objects);
    let open = g.literal(shape.open);
    let close = g.literal(shape.close);
    let call = g.rule(vec![vec![
        Elem::Rule(open),
        ws,
        Elem::Rule(object),
        ws,
        Elem::Rule(close),
    ]]);
    let calls = if many {
        // call (ws call)*
        let more = g.declare();
        g.define(
            more,
            vec![vec![], vec![ws, Elem::Rule(call), Elem::Rule(more)]],
        );
        g.rule(vec![vec![Elem::Rule(call), Elem::Rule(more)]])
    } else {
        call
    };
    let mut g = b.finish(calls);
    if !g.prune() {
        return Err(SchemaError {
            path: "tools".into(),
            message: "no function's parameters allow any value".into(),
        });
    }
    Ok(g)
}
