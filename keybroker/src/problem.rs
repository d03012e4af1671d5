//! RFC 7807 problem responses, one distinct type per refusal so a client
//! (and an auditor) can tell a policy denial from bad evidence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ciel_protocol::kbs::Problem;

/// Every way a request can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The request body or parameters are malformed.
    BadRequest,
    /// No session cookie or token.
    MissingSession,
    /// Unknown session, or its time is up.
    ExpiredSession,
    /// The nonce is not this session's, or was already used.
    BadNonce,
    /// The evidence is not authentic, or does not bind the TEE key.
    BadEvidence,
    /// Authentic evidence that the resource's policy does not accept.
    PolicyDenied,
    /// No such resource.
    UnknownResource,
    /// The request needs an attested session first.
    NotAttested,
    /// Admin authentication failed.
    Unauthorized,
    /// A validly signed admin request whose key lacks the role it needs.
    Forbidden,
    /// The audit log could not be written: nothing is released unaudited.
    AuditFailure,
    /// Too many sessions in flight.
    Busy,
    /// The shared store (PostgreSQL) cannot be reached: nothing is decided
    /// without it.
    StoreUnavailable,
    /// The request body is larger than the broker accepts.
    TooLarge,
    /// The request did not arrive within the deadline.
    Timeout,
    /// Anything else on our side.
    Internal,
}

impl Kind {
    pub fn urn(self) -> &'static str {
        match self {
            Kind::BadRequest => "urn:ciel:kbs:bad-request",
            Kind::MissingSession => "urn:ciel:kbs:missing-session",
            Kind::ExpiredSession => "urn:ciel:kbs:expired-session",
            Kind::BadNonce => "urn:ciel:kbs:bad-nonce",
            Kind::BadEvidence => "urn:ciel:kbs:bad-evidence",
            Kind::PolicyDenied => "urn:ciel:kbs:policy-denied",
            Kind::UnknownResource => "urn:ciel:kbs:unknown-resource",
            Kind::NotAttested => "urn:ciel:kbs:not-attested",
            Kind::Unauthorized => "urn:ciel:kbs:unauthorized",
            Kind::Forbidden => "urn:ciel:kbs:forbidden",
            Kind::AuditFailure => "urn:ciel:kbs:audit-failure",
            Kind::Busy => "urn:ciel:kbs:busy",
            Kind::StoreUnavailable => "urn:ciel:kbs:store-unavailable",
            Kind::TooLarge => "urn:ciel:kbs:too-large",
            Kind::Timeout => "urn:ciel:kbs:timeout",
            Kind::Internal => "urn:ciel:kbs:internal",
        }
    }

    /// The problem type without its URN prefix (`bad-nonce`): a metrics label.
    pub fn reason(self) -> &'static str {
        let urn = self.urn();
        urn.strip_prefix("urn:ciel:kbs:").unwrap_or(urn)
    }

    fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::MissingSession
            | Kind::ExpiredSession
            | Kind::NotAttested
            | Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::BadNonce | Kind::BadEvidence | Kind::PolicyDenied | Kind::Forbidden => {
                StatusCode::FORBIDDEN
            }
            Kind::UnknownResource => StatusCode::NOT_FOUND,
            Kind::Busy | Kind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::AuditFailure | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refusal: its kind and a detail for people (never key material).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    pub detail: String,
}

impl ApiError {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Problem {
            kind: self.kind.urn().into(),
            detail: self.detail,
        })
        .unwrap_or_default();
        let mut r = (self.kind.status(), body).into_response();
        // For the metrics middleware: refusals are counted by kind.
        r.extensions_mut().insert(self.kind);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}
