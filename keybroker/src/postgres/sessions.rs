//! Sessions and admin nonces in PostgreSQL, so that `/auth`, `/attest`
//! and `/resource` may each land on another replica. The nonce is spent by
//! one conditional UPDATE (whichever replica gets there first), and an
//! attested session keeps its evidence as the guest sent it: the replica
//! that releases decodes it again (a pure parse) and checks the resource's
//! policy on it, exactly as the replica that attested it would.

use super::{PgError, Shared};
use crate::problem::{ApiError, Kind};
use crate::sample::split_composite;
use crate::session::{Attested, SessionEvidence, random_b64};
use ciel_attestation::collateral::CollateralLookup;
use ciel_protocol::binding;
use ciel_protocol::kbs::Jwk;
use ciel_protocol::kbs::RuntimeData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Session states, as stored.
const CHALLENGED: i16 = 0;
const SPENT: i16 = 1;
const ATTESTED: i16 = 2;

fn query(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ApiError {
    move |source| PgError::Query { what, source }.into()
}

fn token_digest(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn expired() -> ApiError {
    ApiError::new(
        Kind::ExpiredSession,
        "session expired; start again with /auth",
    )
}

/// The sessions of every replica.
#[derive(Debug)]
pub struct SharedSessions {
    shared: Shared,
    ttl: Duration,
    max: usize,
    /// Sessions open when this replica last counted them (at its last
    /// `/auth`), for the metrics gauge.
    open_seen: AtomicUsize,
}

impl SharedSessions {
    pub fn new(shared: Shared, ttl: Duration, max: usize) -> Self {
        SharedSessions {
            shared,
            ttl,
            max,
            open_seen: AtomicUsize::new(0),
        }
    }

    pub fn open_count(&self) -> usize {
        self.open_seen.load(Ordering::Relaxed)
    }

    /// Sessions created before this are expired.
    fn cutoff(&self) -> i64 {
        let now = i64::try_from(crate::server::now()).unwrap_or(i64::MAX);
        now.saturating_sub(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    /// Starts a session: (id, nonce). One statement: expired sessions go,
    /// the open ones are counted, and the new one is stored only under the
    /// cap (one round trip on every `/auth`).
    pub async fn create(&self, tee: &str) -> Result<(String, String), ApiError> {
        let (id, nonce) = (random_b64()?, random_b64()?);
        let now = i64::try_from(crate::server::now()).unwrap_or(i64::MAX);
        let max = i64::try_from(self.max).unwrap_or(i64::MAX);
        let row = self
            .shared
            .client()
            .await?
            .query_opt(
                "WITH expired AS (DELETE FROM sessions WHERE created <= $1), \
                      open AS (SELECT count(*) AS n FROM sessions WHERE created > $1) \
                 INSERT INTO sessions (id, tee, nonce, created, state) \
                 SELECT $2, $3, $4, $5, $6 FROM open WHERE open.n < $7 \
                 RETURNING (SELECT n FROM open)",
                &[&self.cutoff(), &id, &tee, &nonce, &now, &CHALLENGED, &max],
            )
            .await
            .map_err(query("starting a session"))?;
        let Some(row) = row else {
            self.open_seen.store(self.max, Ordering::Relaxed);
            return Err(ApiError::new(
                Kind::Busy,
                "too many sessions in flight; retry later",
            ));
        };
        let open = usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX);
        self.open_seen
            .store(open.saturating_add(1), Ordering::Relaxed);
        Ok((id, nonce))
    }

    /// For `/attest`: the session's tee and nonce, consuming the nonce.
    pub async fn consume_nonce(&self, id: &str) -> Result<(String, String), ApiError> {
        let q = query("spending a session's nonce");
        let c = self.shared.client().await?;
        let spent = c
            .query_opt(
                "UPDATE sessions SET state = $2 WHERE id = $1 AND state = $3 AND created > $4 RETURNING tee, nonce",
                &[&id, &SPENT, &CHALLENGED, &self.cutoff()],
            )
            .await
            .map_err(&q)?;
        if let Some(row) = spent {
            return Ok((row.get(0), row.get(1)));
        }
        // Why not: unknown, expired, or already used.
        let row = c
            .query_opt("SELECT created FROM sessions WHERE id = $1", &[&id])
            .await
            .map_err(&q)?;
        match row {
            None => Err(ApiError::new(Kind::ExpiredSession, "unknown session")),
            Some(r) if r.get::<_, i64>(0) <= self.cutoff() => Err(expired()),
            Some(_) => Err(ApiError::new(
                Kind::BadNonce,
                "this session's nonce was already used",
            )),
        }
    }

    /// Marks a session attested: its TEE key, the evidence as sent, the
    /// token (whose signature vouches for its claims when read back) and
    /// its digest (to find the session by bearer token).
    pub async fn attest(
        &self,
        id: &str,
        tee_pubkey: &Jwk,
        evidence: &serde_json::Value,
        token: String,
    ) -> Result<String, ApiError> {
        let q = query("recording an attested session");
        let updated = self
            .shared
            .client()
            .await?
            .execute(
                "UPDATE sessions SET state = $2, token_sha256 = $3, tee_pubkey = $4, evidence = $5, token = $6 WHERE id = $1 AND state = $7",
                &[
                    &id,
                    &ATTESTED,
                    &token_digest(&token),
                    &json_text(tee_pubkey)?,
                    &json_text(evidence)?,
                    &token,
                    &SPENT,
                ],
            )
            .await
            .map_err(&q)?;
        if updated != 1 {
            return Err(ApiError::new(Kind::ExpiredSession, "unknown session"));
        }
        Ok(token)
    }

    /// The attested state of the session named by a cookie or a token;
    /// `tokens` checks the stored token's signature (the claims Rego
    /// policies read come from it, not from the database's word).
    pub async fn attested(
        &self,
        cookie: Option<&str>,
        token: Option<&str>,
        dcap: Option<&(dyn CollateralLookup + Sync)>,
        tokens: &crate::ear::EarSigner,
    ) -> Result<Arc<Attested>, ApiError> {
        let q = query("reading a session");
        let c = self.shared.client().await?;
        let sql =
            "SELECT tee, nonce, created, state, tee_pubkey, evidence, token FROM sessions WHERE ";
        let row = match (cookie, token) {
            (Some(id), _) => c.query_opt(&format!("{sql}id = $1"), &[&id]).await,
            (None, Some(t)) => {
                c.query_opt(&format!("{sql}token_sha256 = $1"), &[&token_digest(t)])
                    .await
            }
            (None, None) => {
                return Err(ApiError::new(
                    Kind::MissingSession,
                    "no kbs-session-id cookie or bearer token",
                ));
            }
        }
        .map_err(&q)?
        .ok_or_else(|| ApiError::new(Kind::ExpiredSession, "unknown session or token"))?;
        if row.get::<_, i64>("created") <= self.cutoff() {
            return Err(expired());
        }
        if row.get::<_, i16>("state") != ATTESTED {
            return Err(ApiError::new(
                Kind::NotAttested,
                "this session has not attested",
            ));
        }
        let corrupt = |field: &str, e: String| {
            ApiError::from(PgError::Corrupt {
                table: "sessions",
                message: format!("{field}: {e}"),
            })
        };
        let parse = |field: &'static str| -> Result<serde_json::Value, ApiError> {
            let text: Option<String> = row.get(field);
            serde_json::from_str(text.as_deref().unwrap_or(""))
                .map_err(|e| corrupt(field, e.to_string()))
        };
        let tee: String = row.get("tee");
        let tee_pubkey_json = parse("tee_pubkey")?;
        let tee_pubkey: Jwk = serde_json::from_value(tee_pubkey_json.clone())
            .map_err(|e| corrupt("tee_pubkey", e.to_string()))?;
        // The database is not trusted to say what attested: the evidence
        // is decoded again and must bind this session's nonce and TEE key,
        // so an edited row can only point a release at the key the
        // evidence itself bound.
        let sent = parse("evidence")?;
        let (_, additional) = split_composite(&sent).map_err(|e| corrupt("evidence", e))?;
        let runtime = RuntimeData {
            nonce: row.get("nonce"),
            tee_pubkey: tee_pubkey.clone(),
        };
        let expected = binding::report_data_for(&runtime, additional)
            .map_err(|e| corrupt("tee_pubkey", e.to_string()))?;
        let evidence = SessionEvidence::decode(&tee, &sent, &runtime, dcap)
            .map_err(|e| corrupt("evidence", e))?;
        if !evidence.binds(&expected) {
            return Err(corrupt(
                "evidence",
                "does not bind this session's nonce and TEE key (the row was edited)".into(),
            ));
        }
        let stored: Option<String> = row.get("token");
        if cookie.is_none()
            && !token.is_some_and(|t| crate::session::same(t, stored.as_deref().unwrap_or("")))
        {
            return Err(corrupt(
                "token",
                "is not the bearer token presented (the row was edited)".into(),
            ));
        }
        let claims = tokens
            .verify(stored.as_deref().unwrap_or(""))
            .map_err(|e| corrupt("token", e.to_string()))?;
        let bound =
            &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"];
        if bound["nonce"] != runtime.nonce.as_str() || bound["tee-pubkey"] != tee_pubkey_json {
            return Err(corrupt(
                "token",
                "was issued to another session (the row was edited)".into(),
            ));
        }
        Ok(Arc::new(Attested {
            tee_pubkey,
            evidence,
            claims,
        }))
    }
}

/// A value stored as JSON text.
fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(|e| ApiError::new(Kind::Internal, e.to_string()))
}

impl Shared {
    /// Records a validly signed admin request's nonce, or refuses it if any
    /// replica has seen it inside the timestamp window.
    pub async fn admit_admin_nonce(
        &self,
        nonce: &str,
        timestamp: u64,
        now: u64,
    ) -> Result<(), ApiError> {
        use crate::admin::{ADMIN_SKEW, MAX_REMEMBERED, replayed, too_many_admin_requests};
        let q = query("recording an admin nonce");
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let ts = i64::try_from(timestamp).unwrap_or(i64::MAX);
        let skew = i64::try_from(ADMIN_SKEW).unwrap_or(i64::MAX);
        let c = self.client().await?;
        // Out of the window, the timestamp check refuses it anyway.
        c.execute(
            "DELETE FROM admin_nonces WHERE ts < $1",
            &[&now.saturating_sub(skew)],
        )
        .await
        .map_err(&q)?;
        let held: i64 = c
            .query_one("SELECT count(*) FROM admin_nonces", &[])
            .await
            .map_err(&q)?
            .get(0);
        if usize::try_from(held).unwrap_or(usize::MAX) >= MAX_REMEMBERED {
            return Err(too_many_admin_requests());
        }
        let inserted = c
            .execute(
                "INSERT INTO admin_nonces (nonce, ts) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                &[&nonce, &ts],
            )
            .await
            .map_err(&q)?;
        if inserted == 0 {
            return Err(replayed());
        }
        Ok(())
    }
}
