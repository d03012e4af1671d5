//! Grammars for JSON: any JSON object (OpenAI's `json_object` format), and
//! the values a JSON Schema allows (`json_schema`). A schema keyword that
//! would constrain values in a way this compiler does not build is refused
//! by its path, never ignored, so an answer always matches its schema.
//!
//! What is built: `type` (one or a list), `properties` with `required`
//! (written in name order, optional ones may be left out), objects of any
//! keys when no properties are named (`additionalProperties` a schema:
//! their values), `items` with `minItems`/`maxItems`, `enum`, `const`,
//! `anyOf`, and `$ref` into `$defs`/`definitions` (recursion included).
//! Annotations (`title`, `description`, …) change nothing.

use super::{ByteSet, Elem, Grammar, RuleId};
use serde_json::Value;
use std::collections::HashMap;

/// Why a schema cannot constrain generation, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// A JSON pointer into the schema (`#/properties/name`).
    pub path: String,
    pub message: String,
}

/// Keywords that describe a schema without constraining its values.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
];

/// Keywords this compiler builds.
const BUILT: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "$ref",
];

/// The most items `minItems`/`maxItems` may name (each is grammar rules).
const MAX_COUNTED_ITEMS: u64 = 64;

/// Whitespace between tokens, at most this many bytes in a row (a model
/// that loops on blanks ends instead of filling `max_tokens`).
const MAX_WHITESPACE: usize = 32;

/// Any JSON object, with whitespace before it.
pub fn json_object() -> Grammar {
    let mut b = Builder::new(&Value::Null);
    let object = b.any_object();
    b.finish(object)
}

/// The JSON values `schema` allows, with whitespace before them.
pub fn json_schema(schema: &Value) -> Result<Grammar, SchemaError> {
    let mut b = Builder::new(schema);
    let root = b.value(schema, "#")?;
    let mut g = b.finish(root);
    if !g.prune() {
        return Err(err(
            "#",
            "the schema allows no value (a definition that is only itself?)",
        ));
    }
    Ok(g)
}

fn bytes(lo: u8, hi: u8) -> Elem {
    Elem::Bytes(ByteSet::range(lo, hi))
}

fn byte(b: u8) -> Elem {
    Elem::Bytes(ByteSet::byte(b))
}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        message: message.into(),
    }
}

pub(super) struct Builder<'a> {
    g: Grammar,
    root: &'a Value,
    ws: RuleId,
    string: RuleId,
    /// `number` and `integer`, built once each where a schema uses them.
    numbers: [Option<RuleId>; 2],
    any: Option<RuleId>,
    refs: HashMap<String, RuleId>,
    /// Schemas being compiled inside one another now (see [`MAX_NESTING`]).
    depth: usize,
}

/// How deep schemas may nest, `$ref`s followed included: the compiler
/// recurses once per level, and a chain of thousands of distinct `$ref`s
/// (each its own definition) would otherwise overflow the thread's stack.
const MAX_NESTING: usize = 64;

impl<'a> Builder<'a> {
    pub(super) fn new(root: &'a Value) -> Self {
        let mut g = Grammar::default();
        let ws = whitespace(&mut g);
        let string = string(&mut g);
        Builder {
            g,
            root,
            ws,
            string,
            numbers: [None; 2],
            any: None,
            refs: HashMap::new(),
            depth: 0,
        }
    }

    pub(super) fn finish(mut self, value: RuleId) -> Grammar {
        let root = self
            .g
            .rule(vec![vec![Elem::Rule(self.ws), Elem::Rule(value)]]);
        self.g.set_root(root);
        self.g
    }

    pub(super) fn ws(&self) -> Elem {
        Elem::Rule(self.ws)
    }

    /// A JSON number, or an integer; one rule each however often used.
    fn number(&mut self, integer: bool) -> RuleId {
        let slot = usize::from(integer);
        if let Some(r) = self.numbers[slot] {
            return r;
        }
        let r = number(&mut self.g, integer);
        self.numbers[slot] = Some(r);
        r
    }

    /// `open ws (close | item ws (, ws item ws)* close)`, with the item
    /// count bounded by `min` and `max`.
    fn sequence(&mut self, open: u8, close: u8, item: Elem, min: u64, max: Option<u64>) -> RuleId {
        let ws = self.ws();
        // more[k]: after k items, what may follow (`close`, or another).
        let last = max.unwrap_or(min.max(1));
        let more: Vec<RuleId> = (0..=last).map(|_| self.g.declare()).collect();
        for k in 1..=last {
            let mut alts = Vec::new();
            if k >= min {
                alts.push(vec![byte(close)]);
            }
            if max.is_none_or(|m| k < m) {
                let next = more[(k + 1).min(last) as usize];
                alts.push(vec![byte(b','), ws, item, ws, Elem::Rule(next)]);
            }
            self.g.define(more[k as usize], alts);
        }
        let mut first = Vec::new();
        if min == 0 {
            first.push(vec![byte(close)]);
        }
        if max != Some(0) {
            first.push(vec![item, ws, Elem::Rule(more[1.min(last) as usize])]);
        }
        let start = self.g.rule(first);
        self.g.rule(vec![vec![byte(open), ws, Elem::Rule(start)]])
    }

    /// `"key" ws : ws value`.
    pub(super) fn member(&mut self, key: Elem, value: Elem) -> Elem {
        let ws = self.ws();
        Elem::Rule(self.g.rule(vec![vec![key, ws, byte(b':'), ws, value]]))
    }

    fn any_object(&mut self) -> RuleId {
        let value = Elem::Rule(self.any());
        let member = self.member(Elem::Rule(self.string), value);
        self.sequence(b'{', b'}', member, 0, None)
    }

    /// Any JSON value.
    fn any(&mut self) -> RuleId {
        if let Some(a) = self.any {
            return a;
        }
        let any = self.g.declare();
        self.any = Some(any);
        let member = self.member(Elem::Rule(self.string), Elem::Rule(any));
        let object = self.sequence(b'{', b'}', member, 0, None);
        let array = self.sequence(b'[', b']', Elem::Rule(any), 0, None);
        let number = self.number(false);
        let alts = [object, array, self.string, number]
            .into_iter()
            .chain(["true", "false", "null"].map(|l| self.g.literal(l.as_bytes())))
            .map(|r| vec![Elem::Rule(r)])
            .collect();
        self.g.define(any, alts);
        any
    }

    /// The rule for the values `schema` allows, a schema of its own (its
    /// `$ref`s point into it): one of several in one grammar.
    pub(super) fn schema(&mut self, schema: &'a Value, path: &str) -> Result<RuleId, SchemaError> {
        self.root = schema;
        self.refs.clear();
        self.value(schema, path)
    }

    /// The grammar's rules so far, to add literal text to.
    pub(super) fn grammar(&mut self) -> &mut Grammar {
        &mut self.g
    }

    /// The rule for the values `schema` allows; `path` names it in errors.
    fn value(&mut self, schema: &Value, path: &str) -> Result<RuleId, SchemaError> {
        if self.depth >= MAX_NESTING {
            return Err(err(
                path,
                format!("schemas nest deeper than {MAX_NESTING} levels ($ref included)"),
            ));
        }
        self.depth += 1;
        let rule = self.value_at_depth(schema, path);
        self.depth -= 1;
        rule
    }

    fn value_at_depth(&mut self, schema: &Value, path: &str) -> Result<RuleId, SchemaError> {
        let map = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => return Err(err(path, "the schema `false` allows no value")),
            Value::Object(m) => m,
            _ => return Err(err(path, "a schema is an object or a boolean")),
        };
        if let Some(k) = map
            .keys()
            .find(|k| !BUILT.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(err(
                &format!("{path}/{k}"),
                format!("the keyword `{k}` is not supported in constrained output"),
            ));
        }
        if let Some(r) = map.get("$ref") {
            if map
                .keys()
                .any(|k| BUILT.contains(&k.as_str()) && k != "$ref")
            {
                return Err(err(
                    path,
                    "`$ref` beside other constraints is not supported",
                ));
            }
            let target = r
                .as_str()
                .ok_or_else(|| err(path, "`$ref` is not a string"))?;
            return self.reference(target, path);
        }
        if let Some(c) = map.get("const") {
            return Ok(self.g.literal(c.to_string().as_bytes()));
        }
        if let Some(e) = map.get("enum") {
            let values = e
                .as_array()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(&format!("{path}/enum"), "not a non-empty list"))?;
            let alts = values
                .iter()
                .map(|v| vec![Elem::Rule(self.g.literal(v.to_string().as_bytes()))])
                .collect();
            return Ok(self.g.rule(alts));
        }
        if let Some(a) = map.get("anyOf") {
            let p = format!("{path}/anyOf");
            let schemas = a
                .as_array()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(&p, "not a non-empty list"))?;
            let mut alts = Vec::new();
            for (i, s) in schemas.iter().enumerate() {
                alts.push(vec![Elem::Rule(self.value(s, &format!("{p}/{i}"))?)]);
            }
            return Ok(self.g.rule(alts));
        }
        let types: Vec<&str> = match map.get("type") {
            None if map.contains_key("properties") || map.contains_key("additionalProperties") => {
                vec!["object"]
            }
            None if map.contains_key("items") => vec!["array"],
            None => return Ok(self.any()),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) if !ts.is_empty() => ts
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| err(&format!("{path}/type"), "not a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(err(
                    &format!("{path}/type"),
                    "not a type name or a list of them",
                ));
            }
        };
        let mut alts = Vec::new();
        for t in types {
            let rule = match t {
                "object" => self.object(map, path)?,
                "array" => self.array(map, path)?,
                "string" => self.string,
                "number" => self.number(false),
                "integer" => self.number(true),
                "boolean" => {
                    let t = self.g.literal(b"true");
                    let f = self.g.literal(b"false");
                    self.g.rule(vec![vec![Elem::Rule(t)], vec![Elem::Rule(f)]])
                }
                "null" => self.g.literal(b"null"),
                other => {
                    return Err(err(
                        &format!("{path}/type"),
                        format!("unknown type {other:?}"),
                    ));
                }
            };
            alts.push(vec![Elem::Rule(rule)]);
        }
        Ok(self.g.rule(alts))
    }

    /// `$ref` to the root (`#`) or into `$defs`/`definitions`.
    fn reference(&mut self, target: &str, path: &str) -> Result<RuleId, SchemaError> {
        if let Some(&r) = self.refs.get(target) {
            return Ok(r);
        }
        let pointer = target
            .strip_prefix('#')
            .ok_or_else(|| err(path, format!("`$ref` {target:?} is not inside this schema")))?;
        let resolved = self
            .root
            .pointer(pointer)
            .ok_or_else(|| err(path, format!("`$ref` {target:?} names nothing")))?;
        // Declared first: the definition may refer to itself.
        let rule = self.g.declare();
        self.refs.insert(target.to_string(), rule);
        let inner = self.value(resolved, target)?;
        self.g.define(rule, vec![vec![Elem::Rule(inner)]]);
        Ok(rule)
    }

    fn object(
        &mut self,
        map: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<RuleId, SchemaError> {
        let empty = serde_json::Map::new();
        let props = match map.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(err(&format!("{path}/properties"), "not an object")),
        };
        let required: Vec<&str> = match map.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| err(&format!("{path}/required"), "not a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err(&format!("{path}/required"), "not a list")),
        };
        if let Some(r) = required.iter().find(|r| !props.contains_key(**r)) {
            return Err(err(
                &format!("{path}/required"),
                format!("{r:?} is required but not among the properties"),
            ));
        }
        if props.is_empty() {
            // Any keys: values of `additionalProperties`, else any value.
            let value = match map.get("additionalProperties") {
                None | Some(Value::Bool(true)) => self.any(),
                Some(Value::Bool(false)) => return Ok(self.g.literal(b"{}")),
                Some(s) => self.value(s, &format!("{path}/additionalProperties"))?,
            };
            let member = self.member(Elem::Rule(self.string), Elem::Rule(value));
            return Ok(self.sequence(b'{', b'}', member, 0, None));
        }
        // The named properties in name order, each optional one skippable:
        // rest[i][comma] writes properties i.. (comma: one was written).
        let n = props.len();
        let rest: Vec<[RuleId; 2]> = (0..=n)
            .map(|_| [self.g.declare(), self.g.declare()])
            .collect();
        self.g.define(rest[n][0], vec![vec![]]);
        self.g.define(rest[n][1], vec![vec![]]);
        let ws = self.ws();
        // Name order, whatever order the map keeps (serde_json's depends
        // on the features other crates enable).
        let mut props: Vec<(&String, &Value)> = props.iter().collect();
        props.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (name, schema)) in props.into_iter().enumerate() {
            let key = self
                .g
                .literal(Value::String(name.clone()).to_string().as_bytes());
            let value = self.value(schema, &format!("{path}/properties/{name}"))?;
            let member = self.member(Elem::Rule(key), Elem::Rule(value));
            for comma in [0, 1] {
                let mut write = if comma == 1 {
                    vec![ws, byte(b','), ws]
                } else {
                    vec![]
                };
                write.extend([member, Elem::Rule(rest[i + 1][1])]);
                let mut alts = vec![write];
                if !required.contains(&name.as_str()) {
                    alts.push(vec![Elem::Rule(rest[i + 1][comma])]);
                }
                self.g.define(rest[i][comma], alts);
            }
        }
        let body = vec![byte(b'{'), ws, Elem::Rule(rest[0][0]), ws, byte(b'}')];
        Ok(self.g.rule(vec![body]))
    }

    fn array(
        &mut self,
        map: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<RuleId, SchemaError> {
        let item = match map.get("items") {
            None => self.any(),
            Some(s) => self.value(s, &format!("{path}/items"))?,
        };
        let count = |key: &str| -> Result<Option<u64>, SchemaError> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= MAX_COUNTED_ITEMS => Ok(Some(n)),
                    _ => Err(err(
                        &format!("{path}/{key}"),
                        format!("must be a whole number up to {MAX_COUNTED_ITEMS}"),
                    )),
                },
            }
        };
        let (min, max) = (count("minItems")?.unwrap_or(0), count("maxItems")?);
        if max.is_some_and(|m| m < min) {
            return Err(err(&format!("{path}/maxItems"), "is below minItems"));
        }
        Ok(self.sequence(b'[', b']', Elem::Rule(item), min, max))
    }
}

/// Up to [`MAX_WHITESPACE`] blanks (space, tab, newline, carriage return).
fn whitespace(g: &mut Grammar) -> RuleId {
    let blank = Elem::Bytes(ByteSet::ranges(&[
        (b' ', b' '),
        (b'\t', b'\n'),
        (b'\r', b'\r'),
    ]));
    up_to(g, blank, MAX_WHITESPACE)
}

/// A JSON string: printable ASCII but `"` and `\`, escapes (no `\u` of a
/// surrogate: a lone one does not parse everywhere), and well-formed UTF-8.
fn string(g: &mut Grammar) -> RuleId {
    let hex = Elem::Bytes(ByteSet::of(b"0123456789abcdefABCDEF"));
    let not_surrogate = Elem::Bytes(ByteSet::of(b"0123456789abcefABCEF"));
    let d = Elem::Bytes(ByteSet::of(b"dD"));
    let low = Elem::Bytes(ByteSet::range(b'0', b'7'));
    let cont = bytes(0x80, 0xbf);
    let simple = Elem::Bytes(ByteSet::ranges(&[(0x20, 0x21), (0x23, 0x5b), (0x5d, 0x7f)]));
    let escape = Elem::Bytes(ByteSet::of(b"\"\\/bfnrt"));
    let ch = g.rule(vec![
        vec![simple],
        vec![byte(b'\\'), escape],
        vec![byte(b'\\'), byte(b'u'), not_surrogate, hex, hex, hex],
        vec![byte(b'\\'), byte(b'u'), d, low, hex, hex],
        vec![bytes(0xc2, 0xdf), cont],
        vec![byte(0xe0), bytes(0xa0, 0xbf), cont],
        vec![bytes(0xe1, 0xec), cont, cont],
        vec![byte(0xed), bytes(0x80, 0x9f), cont],
        vec![bytes(0xee, 0xef), cont, cont],
        vec![byte(0xf0), bytes(0x90, 0xbf), cont, cont],
        vec![bytes(0xf1, 0xf3), cont, cont, cont],
        vec![byte(0xf4), bytes(0x80, 0x8f), cont, cont],
    ]);
    let chars = g.declare();
    g.define(chars, vec![vec![], vec![Elem::Rule(ch), Elem::Rule(chars)]]);
    g.rule(vec![vec![byte(b'"'), Elem::Rule(chars), byte(b'"')]])
}

/// Digits a number may have before its point (18: every integer fits an
/// i64), after it, and in its exponent: an answer's number always fits the
/// parsers' integers and doubles (serde_json refuses `1e999`).
const MAX_INT_DIGITS: usize = 18;
const MAX_FRACTION_DIGITS: usize = 16;
const MAX_EXPONENT_DIGITS: usize = 2;

/// Zero to `n` of `elem`.
fn up_to(g: &mut Grammar, elem: Elem, n: usize) -> RuleId {
    let mut next = g.rule(vec![vec![]]);
    for _ in 0..n {
        next = g.rule(vec![vec![], vec![elem, Elem::Rule(next)]]);
    }
    next
}

/// A JSON number, or an integer (no fraction, exponent or `-0`), with at
/// most the digits above.
fn number(g: &mut Grammar, integer: bool) -> RuleId {
    let digit = bytes(b'0', b'9');
    let more = up_to(g, digit, MAX_INT_DIGITS - 1);
    let nonzero = g.rule(vec![vec![bytes(b'1', b'9'), Elem::Rule(more)]]);
    let sign = g.rule(vec![vec![], vec![byte(b'-')]]);
    if integer {
        // No "-0": most parsers read it as a float, not an integer.
        return g.rule(vec![
            vec![byte(b'0')],
            vec![Elem::Rule(sign), Elem::Rule(nonzero)],
        ]);
    }
    let int = g.rule(vec![vec![byte(b'0')], vec![Elem::Rule(nonzero)]]);
    let fraction = up_to(g, digit, MAX_FRACTION_DIGITS - 1);
    let frac = g.rule(vec![vec![], vec![byte(b'.'), digit, Elem::Rule(fraction)]]);
    let exp_sign = Elem::Bytes(ByteSet::of(b"+-"));
    let exp_sign = g.rule(vec![vec![], vec![exp_sign]]);
    let e = Elem::Bytes(ByteSet::of(b"eE"));
    let exponent = up_to(g, digit, MAX_EXPONENT_DIGITS - 1);
    let exp = g.rule(vec![
        vec![],
        vec![e, Elem::Rule(exp_sign), digit, Elem::Rule(exponent)],
    ]);
    g.rule(vec![vec![
        Elem::Rule(sign),
        Elem::Rule(int),
        Elem::Rule(frac),
        Elem::Rule(exp),
    ]])
}
