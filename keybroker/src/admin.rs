//! Authenticating admin requests: an Ed25519 signature, by one of the
//! configured admin keys, over the method, path, timestamp, a fresh nonce
//! and the body's SHA-256; then the key's roles decide what it may do. The timestamp
//! must be within [`ADMIN_SKEW`] of the broker's clock, and each nonce is
//! accepted once within that window, so a captured request cannot be
//! replayed (to register the same key again as a new version, say).

use crate::problem::{ApiError, Kind};
use axum::http::HeaderMap;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;

/// Admin requests must be signed within this many seconds of now.
pub const ADMIN_SKEW: u64 = 300;
/// Nonces remembered at most; a flood of *validly signed* requests beyond
/// this inside one window is refused rather than remembered without bound.
pub(crate) const MAX_REMEMBERED: usize = 100_000;

pub const TIMESTAMP_HEADER: &str = "x-ciel-admin-timestamp";
pub const NONCE_HEADER: &str = "x-ciel-admin-nonce";
pub const SIGNATURE_HEADER: &str = "x-ciel-admin-signature";

/// What an admin key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Store the first version of a resource's key.
    Register,
    /// Store a new version of a resource that has one.
    Rotate,
    /// Retire a version (never released again, kept for audit).
    Retire,
    /// Read the audit log.
    Audit,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Register, Role::Rotate, Role::Retire, Role::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Role::Register => "register",
            Role::Rotate => "rotate",
            Role::Retire => "retire",
            Role::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// One admin: a name (for the audit log), an Ed25519 key and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    pub public_key: [u8; 32],
    pub roles: Vec<Role>,
}

impl AdminKey {
    /// Refuses (403) unless this key has `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::new(
                Kind::Forbidden,
                format!(
                    "admin key {:?} does not have the {} role",
                    self.name,
                    role.name()
                ),
            ))
        }
    }
}

/// The message an admin signs: method, path, timestamp, nonce, body digest.
pub fn admin_message(method: &str, path: &str, timestamp: u64, nonce: &str, body: &[u8]) -> String {
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    format!("{method}\n{path}\n{timestamp}\n{nonce}\n{digest}")
}

/// A fresh nonce for an admin request (32 random bytes, base64url).
pub fn fresh_nonce() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|_| ApiError::new(Kind::Internal, "random number generator failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The refusal of a nonce already used.
pub(crate) fn replayed() -> ApiError {
    ApiError::new(
        Kind::Unauthorized,
        "admin request replayed: its nonce was already used",
    )
}

/// The refusal when the window's nonces would exceed [`MAX_REMEMBERED`].
pub(crate) fn too_many_admin_requests() -> ApiError {
    ApiError::new(
        Kind::Busy,
        "too many admin requests in the timestamp window; retry later",
    )
}

/// Nonces of accepted admin requests, with their timestamps, for as long
/// as a replay would still pass the timestamp check.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    /// Records `nonce` (signed with timestamp `ts`), or refuses it if seen.
    pub(crate) fn admit(&self, nonce: &str, ts: u64, now: u64) -> Result<(), ApiError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| ApiError::new(Kind::Internal, "admin nonce table poisoned"))?;
        // A nonce whose timestamp is out of the window can no longer pass
        // the timestamp check, so it need not be remembered.
        seen.retain(|_, t| now.abs_diff(*t) <= ADMIN_SKEW);
        if seen.contains_key(nonce) {
            return Err(replayed());
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(too_many_admin_requests());
        }
        seen.insert(nonce.to_string(), ts);
        Ok(())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A validly signed admin request's nonce and timestamp, which the caller
/// must still admit once (in its replay guard or the shared store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNonce {
    pub nonce: String,
    pub timestamp: u64,
}

/// Checks an admin request's signature and timestamp; returns the admin
/// key that signed it and the nonce to admit. Only a validly signed
/// request's nonce is remembered, so strangers cannot fill the table.
pub fn authorize<'k>(
    keys: &'k [AdminKey],
    headers: &HeaderMap,
    (method, path): (&str, &str),
    body: &[u8],
    now: u64,
) -> Result<(&'k AdminKey, SignedNonce), ApiError> {
    let unauthorized = |m: &str| ApiError::new(Kind::Unauthorized, m.to_string());
    if keys.is_empty() {
        return Err(unauthorized(
            "admin endpoints are disabled (no admin key configured)",
        ));
    }
    let ts: u64 = header(headers, TIMESTAMP_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unauthorized("missing x-ciel-admin-timestamp"))?;
    if now.abs_diff(ts) > ADMIN_SKEW {
        return Err(unauthorized(
            "admin request timestamp is more than 5 minutes off",
        ));
    }
    let nonce = header(headers, NONCE_HEADER)
        .filter(|n| {
            (16..=128).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| {
            unauthorized("missing or malformed x-ciel-admin-nonce (16-128 base64url characters)")
        })?;
    let sig = header(headers, SIGNATURE_HEADER)
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .ok_or_else(|| unauthorized("missing or malformed x-ciel-admin-signature"))?;
    let msg = admin_message(method, path, ts, nonce, body);
    let signer = keys
        .iter()
        .find(|k| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k.public_key)
                .verify(msg.as_bytes(), &sig)
                .is_ok()
        })
        .ok_or_else(|| unauthorized("admin signature does not verify with any admin key"))?;
    Ok((
        signer,
        SignedNonce {
            nonce: nonce.to_string(),
            timestamp: ts,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_admitted_once_inside_the_window_and_forgotten_after() {
        let g = ReplayGuard::default();
        assert!(g.admit("n1", 1000, 1000).is_ok());
        let again = g.admit("n1", 1000, 1100).unwrap_err();
        assert_eq!(again.kind, Kind::Unauthorized);
        assert!(again.detail.contains("replayed"), "{}", again.detail);
        assert!(g.admit("n2", 1000, 1100).is_ok());
        // Once its timestamp is out of the window, the timestamp check
        // refuses it anyway, and the guard may forget it.
        assert!(g.admit("n3", 2000, 2000).is_ok());
        assert_eq!(g.seen.lock().unwrap().len(), 1);
    }
}
