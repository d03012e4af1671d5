//! Sessions of the RCAR handshake: created by `/auth` with a fresh nonce,
//! which `/attest` consumes exactly once; attested sessions hold the
//! verified evidence and the TEE key until they expire.

use crate::problem::{ApiError, Kind};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ciel_attestation::tee_evidence::Decoded;
use ciel_protocol::kbs::Jwk;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a session is in the handshake.
#[derive(Debug)]
pub enum State {
    /// `/auth` done; the nonce is unused.
    Challenged,
    /// The nonce was consumed by a failed `/attest`.
    Spent,
    /// Evidence verified and bound to `tee_pubkey`.
    Attested {
        session: Arc<Attested>,
        token: String,
    },
}

/// What an attested session's evidence is. (One per session, held in an
/// `Arc`: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SessionEvidence {
    /// Hardware evidence whose signature chain `/attest` verified.
    Verified(Decoded),
    /// DANGER: Trustee's `sample` TEE (unsigned: anyone can make it),
    /// released on only by resources configured to accept it.
    Sample(crate::sample::SampleEvidence),
}

impl SessionEvidence {
    /// The verified hardware evidence, if that is what it is.
    pub fn verified(&self) -> Option<&Decoded> {
        match self {
            SessionEvidence::Verified(d) => Some(d),
            SessionEvidence::Sample(_) => None,
        }
    }

    /// Whether its report data carries `expected` (the session's binding).
    pub fn binds(&self, expected: &[u8; 64]) -> bool {
        match self {
            SessionEvidence::Verified(d) => {
                ciel_protocol::binding::matching_form(&d.bound_report_data(), expected).is_some()
            }
            SessionEvidence::Sample(s) => s.binds(expected),
        }
    }

    /// Decodes a session's `tee-evidence` as sent (and as a replica's
    /// shared session stores it): the primary evidence for `tee`, and the
    /// GPUs of Trustee's `additional_evidence`, with the nonce their
    /// reports must carry for `runtime`.
    pub fn decode(
        tee: &str,
        sent: &serde_json::Value,
        runtime: &ciel_protocol::kbs::RuntimeData,
        dcap: Option<&(dyn ciel_attestation::collateral::CollateralLookup + Sync)>,
    ) -> Result<Self, String> {
        let (primary, additional) = crate::sample::split_composite(sent)?;
        if tee == "sample" {
            if additional.is_some_and(|a| !a.trim().is_empty()) {
                return Err("sample evidence cannot carry device evidence".into());
            }
            return crate::sample::SampleEvidence::parse(primary).map(SessionEvidence::Sample);
        }
        let mut decoded = ciel_attestation::tee_evidence::decode(
            tee,
            primary,
            dcap.map(|d| d as &dyn ciel_attestation::collateral::CollateralLookup),
        )?;
        decoded.gpus = ciel_attestation::tee_evidence::decode_additional(additional.unwrap_or(""))?;
        decoded.gpu_nonce = ciel_protocol::binding::device_nonce(runtime)
            .map_err(|e| format!("runtime-data: {e}"))?;
        Ok(SessionEvidence::Verified(decoded))
    }
}

/// What an attested session proved.
#[derive(Debug)]
pub struct Attested {
    pub tee_pubkey: Jwk,
    pub evidence: SessionEvidence,
    /// The claims of the token issued for it (the input of Rego policies).
    pub claims: serde_json::Value,
}

#[derive(Debug)]
struct Session {
    tee: String,
    nonce: String,
    created: Instant,
    state: State,
}

/// All sessions, bounded in number and lifetime.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

pub(crate) fn random_b64() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|_| ApiError::new(Kind::Internal, "random number generator failed"))?;
    Ok(B64.encode(b))
}

/// Constant-time string comparison (nonces and tokens are secrets in flight).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, ApiError> {
        self.map
            .lock()
            .map_err(|_| ApiError::new(Kind::Internal, "session table poisoned"))
    }

    /// Sessions not yet expired (for metrics).
    pub fn open_count(&self) -> usize {
        let ttl = self.ttl;
        self.lock()
            .map(|m| m.values().filter(|s| s.created.elapsed() < ttl).count())
            .unwrap_or(0)
    }

    /// Starts a session: (id, nonce).
    pub fn create(&self, tee: &str) -> Result<(String, String), ApiError> {
        let mut map = self.lock()?;
        let ttl = self.ttl;
        map.retain(|_, s| s.created.elapsed() < ttl);
        if map.len() >= self.max {
            return Err(ApiError::new(
                Kind::Busy,
                "too many sessions in flight; retry later",
            ));
        }
        let (id, nonce) = (random_b64()?, random_b64()?);
        map.insert(
            id.clone(),
            Session {
                tee: tee.into(),
                nonce: nonce.clone(),
                created: Instant::now(),
                state: State::Challenged,
            },
        );
        Ok((id, nonce))
    }

    /// For `/attest`: the session's tee and nonce, consuming the nonce.
    pub fn consume_nonce(&self, id: &str) -> Result<(String, String), ApiError> {
        let mut map = self.lock()?;
        let s = map
            .get_mut(id)
            .ok_or_else(|| ApiError::new(Kind::ExpiredSession, "unknown session"))?;
        if s.created.elapsed() >= self.ttl {
            map.remove(id);
            return Err(ApiError::new(
                Kind::ExpiredSession,
                "session expired; start again with /auth",
            ));
        }
        if !matches!(s.state, State::Challenged) {
            return Err(ApiError::new(
                Kind::BadNonce,
                "this session's nonce was already used",
            ));
        }
        s.state = State::Spent;
        Ok((s.tee.clone(), s.nonce.clone()))
    }

    /// Marks a session attested, with the bearer token issued for it.
    pub fn attest(
        &self,
        id: &str,
        tee_pubkey: Jwk,
        evidence: SessionEvidence,
        token: String,
        claims: serde_json::Value,
    ) -> Result<String, ApiError> {
        let mut map = self.lock()?;
        let s = map
            .get_mut(id)
            .ok_or_else(|| ApiError::new(Kind::ExpiredSession, "unknown session"))?;
        s.state = State::Attested {
            session: Arc::new(Attested {
                tee_pubkey,
                evidence,
                claims,
            }),
            token: token.clone(),
        };
        Ok(token)
    }

    /// The attested state of the session named by a cookie or a token.
    pub fn attested(
        &self,
        cookie: Option<&str>,
        token: Option<&str>,
    ) -> Result<Arc<Attested>, ApiError> {
        let map = self.lock()?;
        let s = match (cookie, token) {
            (Some(id), _) => map.get(id),
            (None, Some(t)) => map
                .values()
                .find(|s| matches!(&s.state, State::Attested { token, .. } if same(token, t))),
            (None, None) => {
                return Err(ApiError::new(
                    Kind::MissingSession,
                    "no kbs-session-id cookie or bearer token",
                ));
            }
        }
        .ok_or_else(|| ApiError::new(Kind::ExpiredSession, "unknown session or token"))?;
        if s.created.elapsed() >= self.ttl {
            return Err(ApiError::new(
                Kind::ExpiredSession,
                "session expired; start again with /auth",
            ));
        }
        match &s.state {
            State::Attested { session, .. } => Ok(session.clone()),
            _ => Err(ApiError::new(
                Kind::NotAttested,
                "this session has not attested",
            )),
        }
    }

    /// Whether `given` is the session's nonce (constant time).
    pub fn nonce_matches(expected: &str, given: &str) -> bool {
        same(expected, given)
    }
}
