//! Resource paths `<repository>/<type>/<tag>`, validated so that no path
//! can escape the key store or alias another resource.

use std::fmt;

/// A resource path `<repository>/<type>/<tag>`, as in
/// `GET /kbs/v0/resource/<repository>/<type>/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePath {
    repository: String,
    kind: String,
    tag: String,
}

/// Why a resource path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourcePathError {
    #[error("resource path {0:?}: expected <repository>/<type>/<tag>")]
    Shape(String),
    #[error(
        "resource path {path:?}: segment {segment:?} may only use A-Z a-z 0-9 . _ - (and not be . or ..)"
    )]
    Segment { path: String, segment: String },
}

/// Longest segment accepted.
const MAX_SEGMENT: usize = 128;

impl ResourcePath {
    /// Parses and validates: exactly three non-empty segments of
    /// `[A-Za-z0-9._-]`, none `.` or `..`, so a path can never escape the
    /// key store's directory or alias another resource.
    pub fn parse(s: &str) -> Result<Self, ResourcePathError> {
        let parts: Vec<&str> = s.split('/').collect();
        let [repository, kind, tag] = parts.as_slice() else {
            return Err(ResourcePathError::Shape(s.to_string()));
        };
        for seg in [repository, kind, tag] {
            let ok = !seg.is_empty()
                && seg.len() <= MAX_SEGMENT
                && *seg != "."
                && *seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(ResourcePathError::Segment {
                    path: s.to_string(),
                    segment: seg.to_string(),
                });
            }
        }
        Ok(ResourcePath {
            repository: repository.to_string(),
            kind: kind.to_string(),
            tag: tag.to_string(),
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.repository, self.kind, self.tag)
    }
}

impl std::str::FromStr for ResourcePath {
    type Err = ResourcePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_trustee_style_paths() {
        let p = ResourcePath::parse("default/model-key/smollm2-135m.v1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.repository(), p.kind(), p.tag()),
            ("default", "model-key", "smollm2-135m.v1")
        );
        assert_eq!(p.to_string(), "default/model-key/smollm2-135m.v1");
    }

    #[test]
    fn refuses_traversal_and_odd_shapes() {
        for bad in [
            "",
            "a/b",
            "a/b/c/d",
            "a//c",
            "../b/c",
            "a/./c",
            "a/b/..",
            "a/b/c%2f",
            "a/b/\u{e9}",
            "a b/c/d",
            "a/b/c\0",
        ] {
            assert!(ResourcePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ResourcePath::parse(&format!("a/b/{}", "x".repeat(129))).is_err());
    }
}
