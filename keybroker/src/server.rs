//! The HTTP service: Trustee KBS protocol v0.4.0 plus an authenticated
//! admin endpoint. `serve(listener, state, shutdown)` runs it on any
//! listener until `shutdown` resolves, finishing requests in flight.

use crate::audit::{AuditLog, Entry};
use crate::backend::{Backend, Local};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::problem::{ApiError, Kind};
use crate::resource::ResourcePath;
use crate::session::Sessions;
use crate::store::KeyStore;
use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ciel_attestation::UnixTime;
use ciel_attestation::tee_evidence as evidence;
use ciel_protocol::jwe;
use ciel_protocol::kbs::{Challenge, PROTOCOL_VERSION, Request};
use ciel_transport::Listener;
use ciel_transport::http::{BodyRefusal, HttpLimits, HttpService, Peer};
use ciel_transport::server::Limits;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COOKIE: &str = "kbs-session-id";
/// Largest resource an admin may store.
pub(crate) const MAX_RESOURCE: usize = 64 * 1024;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    /// Sessions, keys, the audit log and admin nonces.
    pub backend: Backend,
    pub metrics: Arc<Metrics>,
    /// Signs the EAR attestation tokens `/attest` returns.
    pub tokens: crate::ear::EarSigner,
}

impl AppState {
    /// The metrics' OpenMetrics text, with the sessions open now.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(self.backend.open_sessions())
    }

    /// One broker's state in memory and files, with a fresh EAR token
    /// signing key.
    pub fn new(
        config: Config,
        store: KeyStore,
        audit: AuditLog,
    ) -> Result<Self, crate::ear::EarError> {
        let sessions = Sessions::new(config.session_ttl, config.max_sessions);
        Ok(AppState {
            config,
            backend: Backend::Local(Box::new(Local {
                sessions,
                store: Mutex::new(store),
                audit: Arc::new(audit),
                admin_nonces: crate::admin::ReplayGuard::default(),
            })),
            metrics: Arc::new(Metrics::new()),
            tokens: crate::ear::EarSigner::generate()?,
        })
    }

    /// A replica's state: everything in the shared store, the token
    /// signing key too (one key for every replica).
    pub async fn replica(
        config: Config,
        shared: crate::postgres::Shared,
    ) -> Result<Self, crate::postgres::PgError> {
        let key = shared.token_signing_key().await?;
        let tokens = crate::ear::EarSigner::from_pkcs8(&key).map_err(|e| {
            crate::postgres::PgError::Corrupt {
                table: "secrets",
                message: format!("the token signing key: {e}"),
            }
        })?;
        let sessions = crate::postgres::SharedSessions::new(
            shared.clone(),
            config.session_ttl,
            config.max_sessions,
        );
        Ok(AppState {
            config,
            backend: Backend::Shared { shared, sessions },
            metrics: Arc::new(Metrics::new()),
            tokens,
        })
    }

    /// The in-process state, when this broker keeps it (no replicas).
    pub fn local(&self) -> Option<&Local> {
        match &self.backend {
            Backend::Local(l) => Some(l),
            Backend::Shared { .. } => None,
        }
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn rfc3339_now() -> String {
    UnixTime(now()).to_string()
}

/// The router, for tests and embedding.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/kbs/v0/auth", post(auth))
        .route("/kbs/v0/attest", post(crate::attest::attest))
        .route("/kbs/v0/resource/{repo}/{kind}/{tag}", get(resource))
        .route(
            "/kbs/v0/admin/resource/{repo}/{kind}/{tag}",
            post(crate::admin_api::put),
        )
        .route(
            "/kbs/v0/admin/retire/{repo}/{kind}/{tag}/{version}",
            post(crate::admin_api::retire),
        )
        .route("/kbs/v0/admin/audit", get(crate::admin_api::read_audit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::record,
        ))
        .with_state(state)
}

/// How the broker listens: TLS (or plain HTTP on loopback), and the
/// bounds of the one server loop.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    pub http: HttpLimits,
}

impl ServeOptions {
    /// Open connections by default.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// Largest request body: evidence with its collateral and GPU reports.
    pub const MAX_BODY: usize = 2 << 20;

    /// The defaults: 1024 connections, 10 s for the TLS handshake and for
    /// each request's headers and body, 2 MiB bodies, 10 s to drain.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        ServeOptions {
            tls,
            limits: Limits {
                max_connections: Self::MAX_CONNECTIONS,
                grace: Duration::from_secs(10),
            },
            http: HttpLimits {
                handshake: Duration::from_secs(10),
                request_read: Duration::from_secs(10),
                max_body: Self::MAX_BODY,
            },
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, finishing requests in
/// flight: every connection, its TLS handshake included, in its own task
/// under the connection cap and deadlines ([`ciel_transport::http`]).
pub async fn serve(
    listener: Listener,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let counters = state.metrics.connections.clone();
    let service = HttpService {
        router: router(state),
        tls: options.tls,
        limits: options.http,
        refuse_body,
    };
    ciel_transport::http::serve(listener, options.limits, counters, service, shutdown).await
}

/// Refused bodies as RFC 7807 problems.
fn refuse_body(refusal: &BodyRefusal) -> Response {
    let kind = match refusal {
        BodyRefusal::TooLarge { .. } => Kind::TooLarge,
        BodyRefusal::TooSlow { .. } => Kind::Timeout,
        _ => Kind::BadRequest,
    };
    ApiError::new(kind, refusal.to_string()).into_response()
}

/// `GET /metrics` for this broker, to serve on a listener of its own.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    crate::metrics::router(move || state.metrics_text())
}

pub(crate) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Kind::BadRequest, format!("{what}: {e}")))
}

async fn auth(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: Request = json_body(&body, "auth request")?;
    if req.version != PROTOCOL_VERSION {
        return Err(ApiError::new(
            Kind::BadRequest,
            format!(
                "protocol version {:?}; this broker speaks {PROTOCOL_VERSION}",
                req.version
            ),
        ));
    }
    let sample = req.tee == "sample" && st.config.accepts_sample_evidence();
    if !matches!(
        req.tee.as_str(),
        "snp" | "tdx" | "az-snp-vtpm" | "az-tdx-vtpm"
    ) && !sample
    {
        return Err(ApiError::new(
            Kind::BadRequest,
            format!(
                "tee {:?} is not supported (snp, tdx, az-snp-vtpm, az-tdx-vtpm; sample only where a resource sets danger_accept_sample_evidence)",
                req.tee
            ),
        ));
    }
    let (id, nonce) = st.backend.create_session(&req.tee).await?;
    tracing::info!(tee = %req.tee, "session started");
    let mut r = Json(Challenge {
        nonce,
        extra_params: serde_json::Value::String(String::new()),
    })
    .into_response();
    let cookie = format!(
        "{COOKIE}={id}; Path=/kbs; HttpOnly; Max-Age={}",
        st.config.session_ttl.as_secs()
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::new(Kind::Internal, "cookie"))?,
    );
    Ok(r)
}

pub(crate) async fn audit(st: &AppState, e: Entry) -> Result<(), ApiError> {
    st.backend.append_audit(&e).await
}

/// `error`, once its audit entry is written (else the audit failure).
pub(crate) async fn refused(st: &AppState, e: Entry, error: ApiError) -> ApiError {
    match audit(st, e).await {
        Ok(()) => error,
        Err(a) => a,
    }
}

pub(crate) fn entry(
    client: &str,
    event: &'static str,
    resource: Option<String>,
    decision: &'static str,
    reasons: Vec<String>,
    ev: Option<&evidence::Decoded>,
) -> Entry {
    Entry {
        time: rfc3339_now(),
        client: client.to_string(),
        event,
        resource,
        decision,
        reasons,
        evidence_sha256: ev.map(|d| d.sha256.clone()),
        platform: ev.map(|d| d.platform()),
        measurement: ev.and_then(|d| d.evidence.measurement()),
    }
}

#[derive(serde::Deserialize)]
struct ResourceQuery {
    version: Option<u32>,
}

async fn resource(
    State(st): State<Arc<AppState>>,
    Extension(Peer(client)): Extension<Peer>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    Query(q): Query<ResourceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = st
        .backend
        .attested(
            cookie(&headers).as_deref(),
            bearer(&headers).as_deref(),
            st.config.collateral(),
            &st.tokens,
        )
        .await?;
    let (tee_pubkey, ev) = (&session.tee_pubkey, session.evidence.verified());
    let path = ResourcePath::parse(&format!("{repo}/{kind}/{tag}"))
        .map_err(|e| ApiError::new(Kind::UnknownResource, e.to_string()))?;
    let name = path.to_string();
    let deny = |kind: Kind, code: &str, detail: String| {
        let e = entry(
            &client,
            "resource",
            Some(name.clone()),
            "deny",
            vec![code.to_string()],
            ev,
        );
        refused(&st, e, ApiError::new(kind, detail))
    };
    let Some(policy) = st.config.resources.get(&path) else {
        return Err(deny(
            Kind::UnknownResource,
            "unknown_resource",
            format!("no resource {name}"),
        )
        .await);
    };
    match ev {
        Some(ev) => {
            let evidence_policy = policy.evidence.as_ref().unwrap_or(&st.config.attest_policy);
            let verdict = ev.verify(evidence_policy, UnixTime(now()));
            // The GPUs under the resource's policy, once the CPU passed.
            let refusal = if verdict.accepted {
                crate::gpus::check(ev, evidence_policy, now())
                    .filter(|set| !set.accepted)
                    .map(|set| (set.reason_codes(), set.summary()))
            } else {
                Some((verdict.reason_codes(), verdict.summary()))
            };
            if let Some((codes, detail)) = refusal {
                let e = entry(
                    &client,
                    "resource",
                    Some(name.clone()),
                    "deny",
                    codes,
                    Some(ev),
                );
                audit(&st, e).await?;
                return Err(ApiError::new(Kind::PolicyDenied, detail));
            }
        }
        // Unsigned sample evidence: only where the resource asks for it.
        None if policy.danger_accept_sample_evidence => {}
        None => {
            return Err(deny(
                Kind::PolicyDenied,
                "sample_evidence_refused",
                format!("{name} is not released to sample (unsigned) evidence"),
            )
            .await);
        }
    }
    if let Some(rego) = &policy.rego {
        match rego.allows(&session.claims, &name) {
            Ok(true) => {}
            Ok(false) => {
                return Err(deny(
                    Kind::PolicyDenied,
                    "rego_denied",
                    format!("{}: data.policy.allow is not true", rego.path().display()),
                )
                .await);
            }
            Err(e) => return Err(deny(Kind::PolicyDenied, "rego_error", e.to_string()).await),
        }
    }
    let (version, key) = match st.backend.key(&path, q.version).await? {
        Ok(found) => found,
        Err(crate::store::Lookup::Missing) => {
            return Err(deny(
                Kind::UnknownResource,
                "unknown_resource",
                format!("no key stored for {name}"),
            )
            .await);
        }
        Err(crate::store::Lookup::Retired(v)) => {
            return Err(deny(
                Kind::UnknownResource,
                "key_retired",
                match q.version {
                    Some(_) => format!("version {v} of {name} is retired"),
                    None => format!("every version of {name} is retired (the newest is {v})"),
                },
            )
            .await);
        }
    };
    // The release is recorded before anything leaves.
    audit(
        &st,
        entry(
            &client,
            "resource",
            Some(format!("{name}#v{version}")),
            "release",
            match ev {
                Some(_) => vec![],
                None => vec!["danger_sample_evidence".to_string()],
            },
            ev,
        ),
    )
    .await?;
    let jwe = jwe::encrypt(tee_pubkey, &key)
        .map_err(|e| ApiError::new(Kind::BadRequest, format!("tee-pubkey: {e}")))?;
    tracing::info!(%client, resource = %name, version, "resource released");
    Ok(Json(jwe).into_response())
}
