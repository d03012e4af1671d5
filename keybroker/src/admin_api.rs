//! The admin endpoints, each signed by an admin key that has the role it
//! needs (`crate::admin`): store a key (the first version needs
//! `register`, later ones `rotate`), retire a version (`retire`), read the
//! audit log (`audit`). Every change is audited with the admin's name.

use crate::admin::{Role, authorize};
use crate::audit::Entry;
use crate::problem::{ApiError, Kind};
use crate::resource::ResourcePath;
use crate::server::{AppState, MAX_RESOURCE, audit, now, rfc3339_now};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ciel_transport::http::Peer;
use std::sync::Arc;

fn admin_entry(client: &str, event: &'static str, resource: String, admin: &str) -> Entry {
    Entry {
        time: rfc3339_now(),
        client: client.to_string(),
        event,
        resource: Some(resource),
        decision: "done",
        reasons: vec![format!("admin:{admin}")],
        evidence_sha256: None,
        platform: None,
        measurement: None,
    }
}

/// The admin key that signed this request (see `crate::admin::authorize`),
/// its nonce admitted once across every replica.
async fn signer<'s>(
    st: &'s AppState,
    headers: &HeaderMap,
    request: (&str, &str),
    body: &[u8],
) -> Result<&'s crate::admin::AdminKey, ApiError> {
    let now = now();
    let (key, nonce) = authorize(&st.config.admin_keys, headers, request, body, now)?;
    st.backend.admit_admin_nonce(&nonce, now).await?;
    Ok(key)
}

fn resource_path(repo: &str, kind: &str, tag: &str) -> Result<ResourcePath, ApiError> {
    ResourcePath::parse(&format!("{repo}/{kind}/{tag}"))
        .map_err(|e| ApiError::new(Kind::BadRequest, e.to_string()))
}

/// `POST /kbs/v0/admin/resource/{path}`: a new version of the key.
pub async fn put(
    State(st): State<Arc<AppState>>,
    Extension(Peer(client)): Extension<Peer>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signed_path = format!("/kbs/v0/admin/resource/{repo}/{kind}/{tag}");
    let admin = signer(&st, &headers, ("POST", &signed_path), &body).await?;
    let path = resource_path(&repo, &kind, &tag)?;
    if body.is_empty() || body.len() > MAX_RESOURCE {
        return Err(ApiError::new(
            Kind::BadRequest,
            format!("resource of {} bytes (1..={MAX_RESOURCE})", body.len()),
        ));
    }
    let version = st
        .backend
        .put_key(&path, &body, |first| {
            admin.require(if first { Role::Register } else { Role::Rotate })
        })
        .await?;
    let e = admin_entry(
        &client.to_string(),
        "admin-put",
        format!("{path}#v{version}"),
        &admin.name,
    );
    audit(
        &st,
        Entry {
            decision: "stored",
            ..e
        },
    )
    .await?;
    Ok(
        Json(serde_json::json!({ "resource": path.to_string(), "version": version }))
            .into_response(),
    )
}

/// `POST /kbs/v0/admin/retire/{path}/{version}`: that version is never
/// released again (and stays in the store, for audit).
pub async fn retire(
    State(st): State<Arc<AppState>>,
    Extension(Peer(client)): Extension<Peer>,
    Path((repo, kind, tag, version)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signed_path = format!("/kbs/v0/admin/retire/{repo}/{kind}/{tag}/{version}");
    let admin = signer(&st, &headers, ("POST", &signed_path), &body).await?;
    admin.require(Role::Retire)?;
    let path = resource_path(&repo, &kind, &tag)?;
    let version: u32 = version.parse().map_err(|_| {
        ApiError::new(
            Kind::BadRequest,
            format!("version {version:?} is not a number"),
        )
    })?;
    let found = st.backend.retire_key(&path, version).await?;
    if !found {
        return Err(ApiError::new(
            Kind::UnknownResource,
            format!("no version {version} of {path}"),
        ));
    }
    let e = admin_entry(
        &client.to_string(),
        "admin-retire",
        format!("{path}#v{version}"),
        &admin.name,
    );
    audit(
        &st,
        Entry {
            decision: "retired",
            ..e
        },
    )
    .await?;
    Ok(Json(serde_json::json!({
        "resource": path.to_string(),
        "version": version,
        "retired": true,
    }))
    .into_response())
}

/// `GET /kbs/v0/admin/audit`: the audit log as JSON lines, exactly the
/// bytes whose hash chain was just checked (`AuditLog::snapshot`).
pub async fn read_audit(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admin = signer(&st, &headers, ("GET", "/kbs/v0/admin/audit"), b"").await?;
    admin.require(Role::Audit)?;
    let text = st.backend.audit_snapshot().await?;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}
