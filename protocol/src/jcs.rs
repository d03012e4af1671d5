//! RFC 8785 JSON Canonicalization Scheme: object members sorted by their
//! UTF-16 code units, no insignificant whitespace, minimal string escapes.
//!
//! Numbers are limited to integers (what our documents contain); a
//! non-integer number is an error rather than a guess at ECMAScript's
//! double formatting, so two parties can never disagree silently.

use serde_json::Value;
use std::fmt::Write;

/// Why a value cannot be canonicalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JcsError {
    #[error("JCS: non-integer number {0} is not supported")]
    NonIntegerNumber(String),
}

/// The canonical UTF-8 encoding of `value`.
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(v: &Value, out: &mut String) -> Result<(), JcsError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                return Err(JcsError::NonIntegerNumber(n.to_string()));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, val)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(val, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_by_utf16_and_strips_whitespace() {
        // RFC 8785 §3.2.3 sorting example (subset): UTF-16 order puts the
        // astral-plane key before U+FB33 although its UTF-8 bytes sort after.
        let v: Value =
            serde_json::from_str(r#"{"\ufb33": 1, "\ud83d\ude00": 2, "a": 3, "1": 4}"#).unwrap();
        assert_eq!(
            canonicalize(&v).unwrap(),
            "{\"1\":4,\"a\":3,\"😀\":2,\"דּ\":1}"
        );
        assert_eq!(
            canonicalize(&json!({"b": [1, {"d": null, "c": true}], "a": "x"})).unwrap(),
            r#"{"a":"x","b":[1,{"c":true,"d":null}]}"#
        );
    }

    #[test]
    fn escapes_minimally() {
        let v = json!("\u{1}\"\\/\n€");
        assert_eq!(canonicalize(&v).unwrap(), "\"\\u0001\\\"\\\\/\\n€\"");
    }

    #[test]
    fn refuses_floats() {
        assert!(matches!(
            canonicalize(&json!({"x": 1.5})),
            Err(JcsError::NonIntegerNumber(_))
        ));
    }
}
