//! GGUF (v2/v3) metadata: the key/value section at the start of a model
//! file, read from untrusted bytes with every length and count bounded
//! before anything is allocated. Tensor data is not touched here.

use std::collections::BTreeMap;

/// Why a GGUF file was refused. Offsets are byte offsets in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("GGUF: not a GGUF file (magic at offset 0)")]
    Magic,
    #[error("GGUF: version {0} is not supported (2 or 3)")]
    Version(u32),
    #[error("GGUF: {what} at offset {offset} runs past the end of the data")]
    Truncated { what: &'static str, offset: usize },
    #[error("GGUF: reading the file: {0}")]
    Io(String),
    #[error("GGUF: {what} at offset {offset}: {message}")]
    Invalid {
        what: &'static str,
        offset: usize,
        message: String,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub version: u32,
    pub tensor_count: u64,
    pub kv: BTreeMap<String, Value>,
    /// Offset just after the metadata (where tensor infos start).
    pub end: usize,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.get(key)
    }
}

/// Bounds that keep a hostile file from exhausting memory.
const MAX_STRING: u64 = 16 << 20;
const MAX_ARRAY: u64 = 4 << 20;
const MAX_KV: u64 = 1 << 16;

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
    /// Elements allocated so far (arrays of strings count each string).
    budget: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        let end =
            self.p
                .checked_add(n)
                .filter(|&e| e <= self.b.len())
                .ok_or(GgufError::Truncated {
                    what,
                    offset: self.p,
                })?;
        let s = self.b.get(self.p..end).ok_or(GgufError::Truncated {
            what,
            offset: self.p,
        })?;
        self.p = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let at = self.p;
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(GgufError::Invalid {
                what,
                offset: at,
                message: format!("string of {len} bytes"),
            });
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Invalid {
            what,
            offset: at,
            message: "not UTF-8".into(),
        })
    }
    fn value(&mut self, ty: u32, depth: u8) -> Result<Value, GgufError> {
        let at = self.p;
        Ok(match ty {
            0 => Value::U64(u64::from(self.arr::<1>("u8")?[0])),
            1 => Value::I64(i64::from(i8::from_le_bytes(self.arr("i8")?))),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.arr("u16")?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.arr("i16")?))),
            4 => Value::U64(u64::from(self.u32("u32")?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.arr("i32")?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.arr("f32")?))),
            7 => Value::Bool(self.arr::<1>("bool")?[0] != 0),
            8 => Value::Str(self.string("string value")?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Invalid {
                        what: "array",
                        offset: at,
                        message: "nested too deeply".into(),
                    });
                }
                let et = self.u32("array type")?;
                let n = self.u64("array length")?;
                self.budget = self.budget.saturating_add(n);
                if n > MAX_ARRAY || self.budget > 4 * MAX_ARRAY {
                    return Err(GgufError::Invalid {
                        what: "array",
                        offset: at,
                        message: format!("{n} elements"),
                    });
                }
                let mut v = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    v.push(self.value(et, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.arr("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.arr("f64")?)),
            t => {
                return Err(GgufError::Invalid {
                    what: "value type",
                    offset: at,
                    message: format!("unknown type {t}"),
                });
            }
        })
    }
}

/// Parses the metadata from the start of a GGUF file.
/// The largest metadata section [`read_metadata`] reads (a 262,144-token
/// SentencePiece vocabulary takes 6.5 MB; a BPE one with its merges ~8 MB).
pub const MAX_METADATA: usize = 256 << 20;

/// Reads a model file's metadata from its start: 8 MiB first, doubling
/// while the section runs past what was read, up to [`MAX_METADATA`].
pub fn read_metadata<R: std::io::Read>(reader: &mut R) -> Result<Metadata, GgufError> {
    let mut head = Vec::new();
    let mut want = 8usize << 20;
    loop {
        let have = head.len();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut *reader, (want - have) as u64),
            &mut head,
        )
        .map_err(|e| GgufError::Io(e.to_string()))?;
        let at_end = head.len() < want;
        match parse_metadata(&head) {
            Err(GgufError::Truncated { .. }) if !at_end && want < MAX_METADATA => want *= 2,
            other => return other,
        }
    }
}

pub fn parse_metadata(b: &[u8]) -> Result<Metadata, GgufError> {
    let mut c = Cursor { b, p: 0, budget: 0 };
    if c.take(4, "magic")? != b"GGUF" {
        return Err(GgufError::Magic);
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = c.u64("tensor count")?;
    let at = c.p;
    let kv_count = c.u64("metadata count")?;
    if kv_count > MAX_KV {
        return Err(GgufError::Invalid {
            what: "metadata count",
            offset: at,
            message: format!("{kv_count} entries"),
        });
    }
    let mut kv = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata type")?;
        let v = c.value(ty, 0)?;
        kv.insert(key, v);
    }
    Ok(Metadata {
        version,
        tensor_count,
        kv,
        end: c.p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_string(key: &str, value: &str) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(value.len() as u64).to_le_bytes());
        b.extend_from_slice(value.as_bytes());
        b
    }

    #[test]
    fn parses_and_bounds() {
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend(kv_string("general.name", "tiny"));
        let m = parse_metadata(&f).unwrap_or_default();
        assert_eq!(m.get("general.name").and_then(Value::as_str), Some("tiny"));
        for cut in 0..f.len() {
            assert!(parse_metadata(&f[..cut]).is_err());
        }
        // An absurd array length is refused before allocation.
        let mut g = b"GGUF".to_vec();
        g.extend_from_slice(&3u32.to_le_bytes());
        g.extend_from_slice(&0u64.to_le_bytes());
        g.extend_from_slice(&1u64.to_le_bytes());
        g.extend_from_slice(&1u64.to_le_bytes());
        g.push(b'k');
        g.extend_from_slice(&9u32.to_le_bytes());
        g.extend_from_slice(&4u32.to_le_bytes());
        g.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse_metadata(&g), Err(GgufError::Invalid { .. })));
        assert!(matches!(parse_metadata(b"GGML"), Err(GgufError::Magic)));
    }
}
