//! `/kbs/v0/attest`: the evidence of a session's guest, checked for
//! authenticity (the broker's policy), for binding the session's nonce and
//! TEE key (and, with Trustee's composite shape, the additional-evidence
//! string), and for binding the init-data it brings; then a token.

use crate::problem::{ApiError, Kind};
use crate::sample::{SampleEvidence, split_composite};
use crate::server::{AppState, audit, cookie, entry, json_body, now, refused};
use crate::session::{SessionEvidence, Sessions};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ciel_attestation::UnixTime;
use ciel_attestation::tee_evidence as evidence;
use ciel_protocol::binding;
use ciel_protocol::kbs::{Attestation, AttestationToken};
use ciel_transport::http::Peer;
use std::sync::Arc;

pub async fn attest(
    State(st): State<Arc<AppState>>,
    Extension(Peer(client)): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = cookie(&headers).ok_or_else(|| {
        ApiError::new(
            Kind::MissingSession,
            "no kbs-session-id cookie; call /kbs/v0/auth first",
        )
    })?;
    let (tee, nonce) = st.backend.consume_nonce(&id).await?;
    let req: Attestation = json_body(&body, "attestation request")?;
    let refuse = |kind: Kind, code: &str, detail: String, ev: Option<&evidence::Decoded>| {
        let e = entry(&client, "attest", None, "deny", vec![code.to_string()], ev);
        refused(&st, e, ApiError::new(kind, detail))
    };
    if !Sessions::nonce_matches(&nonce, &req.runtime_data.nonce) {
        return Err(refuse(
            Kind::BadNonce,
            "bad_nonce",
            "runtime-data.nonce is not this session's nonce".into(),
            None,
        )
        .await);
    }
    let (_, additional) = match split_composite(&req.tee_evidence) {
        Ok(split) => split,
        Err(m) => return Err(refuse(Kind::BadRequest, "evidence_malformed", m, None).await),
    };
    let expected = match binding::report_data_for(&req.runtime_data, additional) {
        Ok(e) => e,
        Err(e) => {
            return Err(refuse(
                Kind::BadRequest,
                "runtime_data_malformed",
                e.to_string(),
                None,
            )
            .await);
        }
    };
    if tee == "sample" && !st.config.accepts_sample_evidence() {
        return Err(refuse(
            Kind::BadEvidence,
            "sample_evidence_refused",
            "sample evidence is accepted only for resources with danger_accept_sample_evidence"
                .into(),
            None,
        )
        .await);
    }
    // The primary evidence and the GPUs beside it, decoded once (as a
    // replica decodes the stored session).
    let decoded = match SessionEvidence::decode(
        &tee,
        &req.tee_evidence,
        &req.runtime_data,
        st.config.collateral(),
    ) {
        Ok(SessionEvidence::Verified(d)) => d,
        Ok(SessionEvidence::Sample(sample)) => {
            return attest_sample(&st, &client, &id, &req, sample, &expected).await;
        }
        Err(m) => return Err(refuse(Kind::BadEvidence, "evidence_malformed", m, None).await),
    };
    let verdict = decoded.verify(&st.config.attest_policy, UnixTime(now()));
    if !verdict.accepted {
        let (codes, detail) = (verdict.reason_codes(), verdict.summary());
        let e = entry(&client, "attest", None, "deny", codes, Some(&decoded));
        audit(&st, e).await?;
        return Err(ApiError::new(Kind::BadEvidence, detail));
    }
    if binding::matching_form(&decoded.bound_report_data(), &expected).is_none() {
        let held = match decoded.vtpm {
            Some(_) => "the TPM quote's nonce",
            None => "report_data",
        };
        return Err(refuse(
            Kind::BadEvidence,
            "binding_mismatch",
            format!(
                "{held} does not bind this nonce and tee-pubkey (SHA-384 of their canonical JSON)"
            ),
            Some(&decoded),
        )
        .await);
    }
    // Every GPU: genuine, carrying this session's nonce, in CC mode without
    // DEVTOOLS (the broker's policy); resources may ask for more.
    let gpus = crate::gpus::check(&decoded, &st.config.attest_policy, now());
    if let Some(set) = &gpus
        && !set.accepted
    {
        let e = entry(
            &client,
            "attest",
            None,
            "deny",
            set.reason_codes(),
            Some(&decoded),
        );
        audit(&st, e).await?;
        return Err(ApiError::new(Kind::BadEvidence, set.summary()));
    }
    // Init-data (Kata/CoCo): believed only when the evidence's HOST_DATA /
    // MRCONFIGID binds its exact bytes, as Trustee's verifiers check it.
    let init_data = match &req.init_data {
        None => None,
        Some(doc) => {
            let parsed = match doc.parse() {
                Ok(p) => p,
                Err(e) => {
                    return Err(refuse(
                        Kind::BadRequest,
                        "init_data_malformed",
                        e.to_string(),
                        Some(&decoded),
                    )
                    .await);
                }
            };
            let Some(anchor) = decoded.init_data_anchor() else {
                return Err(refuse(
                    Kind::BadEvidence,
                    "init_data_unbound",
                    "init-data was sent, but this evidence has no HOST_DATA, MRCONFIGID or quoted PCR 8 to bind it"
                        .into(),
                    Some(&decoded),
                )
                .await);
            };
            if let Err(detail) = anchor.binds(&parsed) {
                return Err(refuse(
                    Kind::BadEvidence,
                    "init_data_mismatch",
                    detail,
                    Some(&decoded),
                )
                .await);
            }
            Some(parsed)
        }
    };
    audit(
        &st,
        entry(&client, "attest", None, "accept", vec![], Some(&decoded)),
    )
    .await?;
    let mut evidence_claims = verdict
        .claims
        .as_ref()
        .and_then(|c| serde_json::to_value(c).ok());
    // A vTPM's quoted PCRs, where Trustee's Azure verifier puts them
    // (`tpm.pcr00` …), for resource policies.
    if let (Some(vtpm), Some(serde_json::Value::Object(claims))) =
        (&decoded.vtpm, evidence_claims.as_mut())
    {
        let tpm: serde_json::Map<String, serde_json::Value> = vtpm
            .pcrs
            .iter()
            .map(|(i, v)| (format!("pcr{i:02}"), hex::encode(v).into()))
            .collect();
        claims.insert("tpm".into(), tpm.into());
    }
    let gpu_claims = gpus
        .map(|set| {
            set.gpus
                .iter()
                .filter_map(|g| serde_json::to_value(g).ok())
                .collect()
        })
        .unwrap_or_default();
    let token = finish(
        &st,
        &id,
        &req,
        SessionEvidence::Verified(decoded),
        evidence_claims,
        gpu_claims,
        init_data.as_ref(),
    )
    .await?;
    tracing::info!(%client, "session attested");
    Ok(Json(AttestationToken { token }).into_response())
}

/// Issues the token and records the session attested.
async fn finish(
    st: &AppState,
    id: &str,
    req: &Attestation,
    evidence: SessionEvidence,
    evidence_claims: Option<serde_json::Value>,
    gpu_claims: Vec<serde_json::Value>,
    init_data: Option<&ciel_protocol::initdata::InitData>,
) -> Result<String, ApiError> {
    let iat = now();
    let (token, claims) = st
        .tokens
        .issue(&crate::ear::Appraisal {
            evidence: &evidence,
            nonce: &req.runtime_data.nonce,
            tee_pubkey: &req.runtime_data.tee_pubkey,
            iat,
            exp: iat.saturating_add(st.config.session_ttl.as_secs()),
            evidence_claims,
            gpu_claims,
            init_data,
        })
        .map_err(|e| ApiError::new(Kind::Internal, e.to_string()))?;
    st.backend
        .attest(
            id,
            req.runtime_data.tee_pubkey.clone(),
            evidence,
            &req.tee_evidence,
            token,
            claims,
        )
        .await
}

/// DANGER: Trustee's unsigned `sample` evidence, for resources configured
/// to accept it: only its binding to this session is checked (there is
/// nothing else to check), and the audit log says what it was.
async fn attest_sample(
    st: &AppState,
    client: &str,
    id: &str,
    req: &Attestation,
    sample: SampleEvidence,
    expected: &[u8; 64],
) -> Result<Response, ApiError> {
    let refuse = |kind: Kind, code: &str, detail: String| {
        let e = entry(client, "attest", None, "deny", vec![code.to_string()], None);
        refused(st, e, ApiError::new(kind, detail))
    };
    if !sample.binds(expected) {
        return Err(refuse(
            Kind::BadEvidence,
            "binding_mismatch",
            "sample report_data does not bind this nonce and tee-pubkey".into(),
        )
        .await);
    }
    if req.init_data.is_some() {
        return Err(refuse(
            Kind::BadEvidence,
            "init_data_unbound",
            "init-data was sent, but sample evidence has nothing to bind it".into(),
        )
        .await);
    }
    let reasons = vec!["danger_sample_evidence".to_string()];
    audit(st, entry(client, "attest", None, "accept", reasons, None)).await?;
    let claims = serde_json::json!({ "svn": sample.svn });
    let token = finish(
        st,
        id,
        req,
        SessionEvidence::Sample(sample),
        Some(claims),
        Vec::new(),
        None,
    )
    .await?;
    tracing::warn!(%client, "session attested with SAMPLE evidence (unsigned; danger_accept_sample_evidence)");
    Ok(Json(AttestationToken { token }).into_response())
}
