//! [`Client`]: an attested TLS session to a ciel guest and the
//! OpenAI-style calls over it. Every connection is verified during its
//! handshake (see [`crate::tls`]); no request is written before that.

use crate::attested::{Verification, verify_document_with};
use crate::tls::AttestedVerifier;
use bytes::Bytes;
use ciel_attestation::{Policy, UnixTime};
use ciel_protocol::claims::AttestationDocument;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::sync::Arc;

/// Largest non-streamed response body read (16 MiB).
const MAX_RESPONSE: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("URL {0:?}: expected https://HOST:PORT")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The guest's attestation was refused; nothing was sent.
    #[error("{addr}: attestation refused: {}", .verification.first_failure().map_or(String::new(), |c| format!("{}: {}", c.name, c.detail)))]
    Refused {
        addr: String,
        verification: Box<Verification>,
    },
    #[error("{addr}: TLS: {message}")]
    Tls { addr: String, message: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the guest answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// A streamed answer stopped part-way (the host or the guest went
    /// away); what arrived before is all there is.
    #[error("{addr}: the answer stopped after {pieces} pieces, incomplete: {cause}")]
    Interrupted {
        addr: String,
        pieces: usize,
        cause: String,
    },
}

/// One guest's address and the policy each connection to it must pass.
/// Every [`Endpoint::open`] is a new TLS connection verified during its
/// handshake; nothing is written on one that was refused.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: String,
    server_name: ServerName<'static>,
    policy: Policy,
    collateral: Option<Arc<ciel_collateral::Bundle>>,
}

/// An attested connection target and what its guest proved.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    verification: Verification,
}

/// Now, for the verifier (the attestation crate takes no clock).
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

fn parse_url(url: &str) -> Result<(String, ServerName<'static>), ClientError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| ClientError::Url(url.into()))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| ClientError::Url(url.into()))?;
    port.parse::<u16>()
        .map_err(|_| ClientError::Url(url.into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // The certificate's names are not what is checked; SNI is cosmetic.
    let name = ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        ServerName::try_from("ciel-enclave")
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    });
    Ok((authority.to_string(), name))
}

/// One verified HTTP/1.1 connection to the guest.
#[derive(Debug)]
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Sends `req` and waits for the response's head; the body streams
    /// from the returned response.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }
}

impl Endpoint {
    /// `url`: `https://HOST:PORT` (a path after it is ignored).
    pub fn new(url: &str, policy: Policy) -> Result<Self, ClientError> {
        let (addr, server_name) = parse_url(url)?;
        Ok(Endpoint {
            addr,
            server_name,
            policy,
            collateral: None,
        })
    }

    /// Verifies with collateral from `bundle` where the guest's evidence
    /// carries none (a TDX guest whose host has no collateral service; an
    /// air-gapped hub), and applies AMD's CRL when the bundle holds it.
    pub fn with_collateral_bundle(
        mut self,
        bundle: impl Into<Arc<ciel_collateral::Bundle>>,
    ) -> Self {
        self.collateral = Some(bundle.into());
        self
    }

    /// A new connection, verified during its handshake, and what the guest
    /// on it proved. A refused guest is [`ClientError::Refused`].
    pub async fn open(&self) -> Result<(Connection, Verification), ClientError> {
        let verifier =
            AttestedVerifier::with_collateral(self.policy.clone(), self.collateral.clone());
        let config = verifier
            .client_config()
            .map_err(|message| ClientError::Tls {
                addr: self.addr.clone(),
                message,
            })?;
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(self.server_name.clone(), tcp)
            .await;
        let outcome = verifier.outcome();
        let tls = match (tls, outcome) {
            (Ok(t), Some(Ok(v))) if v.accepted || v.awaits_fresh_document() => (t, v),
            (_, Some(Ok(v))) if !v.accepted => {
                return Err(ClientError::Refused {
                    addr: self.addr.clone(),
                    verification: Box::new(v),
                });
            }
            (Err(e), _) => {
                return Err(ClientError::Tls {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                });
            }
            (Ok(_), _) => {
                return Err(ClientError::Tls {
                    addr: self.addr.clone(),
                    message: "handshake completed without a certificate check".into(),
                });
            }
        };
        let (stream, verification) = tls;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut connection = Connection { sender };
        if verification.accepted {
            return Ok((connection, verification));
        }
        // The certificate named the GPUs' reports but could not hold them:
        // the whole document, fresh, on this connection, before anything
        // of the caller's is sent.
        let v = self.attest_over(&mut connection, &verification).await?;
        Ok((connection, v))
    }

    /// Fresh evidence over `connection` (`GET /v1/attestation` with a
    /// random nonce), verified against the policy, bound to the key of
    /// `session` (what its handshake verified) and to the nonce, and
    /// required to describe the same guest.
    async fn attest_over(
        &self,
        connection: &mut Connection,
        session: &Verification,
    ) -> Result<Verification, ClientError> {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/attestation?nonce={}", hex::encode(nonce)))
            .header(hyper::header::HOST, "ciel-enclave")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = connection.send(req).await?;
        let status = resp.status();
        let bytes = read_body(resp).await?;
        if !status.is_success() {
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status, &v));
        }
        let doc = AttestationDocument::from_json(&bytes)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut v = verify_document_with(
            &doc,
            &session.tls_spki_der,
            &self.policy,
            self.collateral
                .as_deref()
                .map(|b| b as &dyn ciel_attestation::collateral::CollateralLookup),
            now(),
            Some(&nonce),
        );
        let same = doc.claims.same_guest(&session.claims);
        v.checks.push(crate::attested::Check {
            name: "same guest",
            ok: same,
            detail: if same {
                "the fresh claims match the certificate's".into()
            } else {
                "the fresh claims differ from the certificate's".into()
            },
        });
        v.accepted = v.accepted && same;
        if !v.accepted {
            return Err(ClientError::Refused {
                addr: self.addr.clone(),
                verification: Box::new(v),
            });
        }
        Ok(v)
    }
}

impl Client {
    /// Connects to `url` (`https://HOST:PORT`, the host shim), verifies the
    /// guest's attestation against `policy` during the handshake, and
    /// returns the session's verified claims. Nothing is sent if the
    /// verification fails.
    pub async fn connect(url: &str, policy: Policy) -> Result<Self, ClientError> {
        Client::connect_to(Endpoint::new(url, policy)?).await
    }

    /// [`Client::connect`] to an endpoint as configured (a collateral
    /// bundle, [`Endpoint::with_collateral_bundle`]).
    pub async fn connect_to(endpoint: Endpoint) -> Result<Self, ClientError> {
        let (_, verification) = endpoint.open().await?;
        Ok(Client {
            endpoint,
            verification,
        })
    }

    /// What the boot-time evidence of the guest proved.
    pub fn verification(&self) -> &Verification {
        &self.verification
    }

    /// Sends one request on a fresh verified connection.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, ClientError> {
        let (mut connection, _) = self.endpoint.open().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "ciel-enclave");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        connection.send(req).await
    }

    /// A JSON call; non-2xx answers become [`ClientError::Api`].
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = read_body(resp).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("response is not JSON: {e}")))?;
        if !status.is_success() {
            return Err(api_error(status, &value));
        }
        Ok(value)
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/models", None).await
    }

    /// `POST /v1/chat/completions` (non-streaming).
    pub async fn chat(&self, request: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, "/v1/chat/completions", Some(request))
            .await
    }

    /// `POST /v1/completions` (non-streaming).
    pub async fn completions(&self, request: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, "/v1/completions", Some(request))
            .await
    }

    /// `POST /v1/chat/completions` with `stream: true`: `on_text` gets each
    /// piece as it arrives; returns the finish reason.
    pub async fn chat_stream(
        &self,
        request: &Value,
        on_text: impl FnMut(&str),
    ) -> Result<String, ClientError> {
        Ok(self
            .stream("/v1/chat/completions", request, on_text)
            .await?
            .0)
    }

    /// [`Client::chat_stream`] asking for the token counts too
    /// (`stream_options.include_usage`): the finish reason and the `usage`
    /// object of the last chunk.
    pub async fn chat_stream_usage(
        &self,
        request: &Value,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Value), ClientError> {
        let mut request = request.clone();
        request["stream_options"] = serde_json::json!({"include_usage": true});
        let (finish, usage) = self
            .stream("/v1/chat/completions", &request, on_text)
            .await?;
        let usage = usage.ok_or_else(|| {
            ClientError::Protocol("the stream ended without the usage asked for".into())
        })?;
        Ok((finish, usage))
    }

    /// `POST /v1/completions` with `stream: true`, as [`Client::chat_stream`].
    pub async fn completions_stream(
        &self,
        request: &Value,
        on_text: impl FnMut(&str),
    ) -> Result<String, ClientError> {
        Ok(self.stream("/v1/completions", request, on_text).await?.0)
    }

    /// A streamed completion: server-sent events until `[DONE]`, each
    /// choice's text (chat: `delta.content`; completions: `text`) passed on;
    /// the finish reason, and the usage if a chunk carried it.
    async fn stream(
        &self,
        path: &str,
        request: &Value,
        mut on_text: impl FnMut(&str),
    ) -> Result<(String, Option<Value>), ClientError> {
        let mut request = request.clone();
        request["stream"] = Value::Bool(true);
        let resp = self
            .send(Method::POST, path, Some(Bytes::from(request.to_string())))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_body(resp).await?;
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status, &v));
        }
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        let mut scanned = 0usize;
        let mut finish = String::new();
        let mut usage = None;
        let mut pieces = 0usize;
        let interrupted = |pieces: usize, cause: String| ClientError::Interrupted {
            addr: self.endpoint.addr.clone(),
            pieces,
            cause,
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| interrupted(pieces, e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            if pending.len() > MAX_RESPONSE {
                return Err(ClientError::Protocol("event larger than 16 MiB".into()));
            }
            // Events end with a blank line; bytes already searched are not
            // searched again (a long event arrives in many frames).
            while let Some(end) = find(&pending[scanned..], b"\n\n").map(|i| i + scanned) {
                scanned = 0;
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim_start();
                    if data == "[DONE]" {
                        return Ok((finish, usage));
                    }
                    let v: Value = serde_json::from_str(data)
                        .map_err(|e| ClientError::Protocol(format!("event is not JSON: {e}")))?;
                    if let Some(err) = v.get("error") {
                        return Err(ClientError::Api {
                            status: 500,
                            message: err["message"].as_str().unwrap_or("").to_string(),
                        });
                    }
                    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                        usage = Some(u.clone());
                    }
                    let choice = &v["choices"][0];
                    let text = choice["delta"]["content"]
                        .as_str()
                        .or_else(|| choice["text"].as_str());
                    if let Some(t) = text
                        && !t.is_empty()
                    {
                        pieces += 1;
                        on_text(t);
                    }
                    if let Some(f) = choice["finish_reason"].as_str() {
                        finish = f.to_string();
                    }
                }
            }
            // A terminator may straddle this frame and the next.
            scanned = pending.len().saturating_sub(1);
        }
        Err(interrupted(
            pieces,
            "the stream ended without [DONE]".into(),
        ))
    }

    /// Fresh evidence: `GET /v1/attestation` with a random nonce, verified
    /// against the policy, bound to this session's TLS key and nonce, and
    /// required to make the same claims as the certificate.
    pub async fn fresh_attestation(&self) -> Result<Verification, ClientError> {
        let (mut connection, session) = self.endpoint.open().await?;
        self.endpoint.attest_over(&mut connection, &session).await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_body(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
    Ok(limited
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes())
}

fn api_error(status: StatusCode, v: &Value) -> ClientError {
    ClientError::Api {
        status: status.as_u16(),
        message: v["error"]["message"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_string),
    }
}
