//! The guest's key-release client (Trustee KBS protocol v0.4.0):
//! ephemeral P-256 key → `/auth` (nonce) → evidence whose `report_data`
//! binds `{nonce, tee-pubkey}` → `/attest` → `/resource` → JWE opened with
//! the ephemeral key. Works against our broker and, by the same protocol,
//! Trustee's. Transient failures are retried with capped exponential
//! backoff; refusals (4xx problems) are final. Nothing secret is logged.

use ciel_protocol::binding;
use ciel_protocol::jwe::{Jwe, TeeKeyPair};
use ciel_protocol::kbs::{
    Attestation, AttestationToken, Challenge, PROTOCOL_VERSION, Problem, Request, RuntimeData,
};
use std::time::Duration;
use zeroize::Zeroizing;

/// Produces evidence for a `report_data`, in the broker's `tee-evidence` shape.
pub trait EvidenceSource {
    /// "snp" or "tdx".
    fn tee(&self) -> &str;
    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String>;
    /// The init-data this platform was launched with and whose binding
    /// (its evidence's `HOST_DATA` / `MRCONFIGID`) was checked, if any: it
    /// goes to the broker with the evidence and into the attestation
    /// document ([`crate::platform::WithInitData`]).
    fn init_data(&self) -> Option<&ciel_protocol::initdata::InitData> {
        None
    }
}

impl<T: EvidenceSource + ?Sized> EvidenceSource for Box<T> {
    fn tee(&self) -> &str {
        (**self).tee()
    }
    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        (**self).evidence(report_data)
    }
    fn init_data(&self) -> Option<&ciel_protocol::initdata::InitData> {
        (**self).init_data()
    }
}

/// Why no key was obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KbsClientError {
    #[error("key broker {url} unreachable after {attempts} attempts: {last}")]
    Unreachable {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("key broker refused at {step} ({status}): {kind}: {detail}")]
    Refused {
        step: &'static str,
        status: u16,
        kind: String,
        detail: String,
    },
    #[error("key broker protocol error at {step}: {message}")]
    Protocol { step: &'static str, message: String },
    #[error("evidence: {0}")]
    Evidence(String),
    #[error("resource could not be opened: {0}")]
    Jwe(#[from] ciel_protocol::jwe::JweError),
}

/// Retry schedule for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    /// The wait after the first failure; it doubles up to `max`.
    pub first: Duration,
    pub max: Duration,
    /// How long one attempt (one HTTP exchange) may take: a broker that
    /// accepts connections but never answers is a failed attempt, not a
    /// hang.
    pub attempt_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 6,
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// A client for one broker.
#[derive(Debug)]
pub struct KbsClient {
    base: String,
    agent: ureq::Agent,
    backoff: Backoff,
}

enum Outcome<T> {
    Ok(T),
    Retry(String),
    Fail(KbsClientError),
}

/// A TLS configuration that trusts exactly the certificates in `ca_pem`
/// (never the system's roots); `None` if it holds none.
pub fn pinned_tls(ca_pem: &[u8]) -> Option<ureq::tls::TlsConfig> {
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    (!certs.is_empty()).then(|| {
        ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build()
    })
}

impl KbsClient {
    /// `base` like `http://127.0.0.1:8080` (no trailing slash).
    pub fn new(base: &str, backoff: Backoff) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(backoff.attempt_timeout))
            .build()
            .into();
        KbsClient {
            base: base.trim_end_matches('/').to_string(),
            agent,
            backoff,
        }
    }

    /// A client for `https://` that trusts only `ca_pem` (the broker's CA,
    /// measured into the image or carried in the attested init-data) —
    /// never the system's roots.
    pub fn with_pinned_ca(
        base: &str,
        ca_pem: &[u8],
        backoff: Backoff,
    ) -> Result<Self, KbsClientError> {
        let tls = pinned_tls(ca_pem).ok_or_else(|| KbsClientError::Protocol {
            step: "setup",
            message: "pinned CA: no certificate in PEM".into(),
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(backoff.attempt_timeout))
            .tls_config(tls)
            .build()
            .into();
        Ok(KbsClient {
            base: base.trim_end_matches('/').to_string(),
            agent,
            backoff,
        })
    }

    fn with_retry<T>(
        &self,
        step: &'static str,
        mut f: impl FnMut() -> Outcome<T>,
    ) -> Result<T, KbsClientError> {
        let mut delay = self.backoff.first;
        let mut last = String::new();
        for attempt in 1..=self.backoff.attempts.max(1) {
            match f() {
                Outcome::Ok(v) => return Ok(v),
                Outcome::Fail(e) => return Err(e),
                Outcome::Retry(why) => {
                    tracing::warn!(step, attempt, error = %why, "key broker not reachable; retrying");
                    last = why;
                    if attempt < self.backoff.attempts {
                        std::thread::sleep(delay);
                        delay = (delay.saturating_mul(2)).min(self.backoff.max);
                    }
                }
            }
        }
        Err(KbsClientError::Unreachable {
            url: self.base.clone(),
            attempts: self.backoff.attempts,
            last,
        })
    }

    /// Classifies a response: 2xx → body, 5xx/503 → retry, else a refusal.
    fn classify(
        step: &'static str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Outcome<ureq::http::Response<ureq::Body>> {
        match resp {
            Err(e) => Outcome::Retry(e.to_string()),
            Ok(r) if r.status().is_success() => Outcome::Ok(r),
            Ok(mut r) if r.status().is_server_error() => {
                // The broker's own account of the failure, when it gives one
                // (a full audit disk is not the same as an overloaded proxy).
                let status = r.status();
                match r.body_mut().read_json::<Problem>() {
                    Ok(p) => Outcome::Retry(format!("HTTP {status}: {} ({})", p.detail, p.kind)),
                    Err(_) => Outcome::Retry(format!("HTTP {status}")),
                }
            }
            Ok(mut r) => {
                let status = r.status().as_u16();
                let problem: Option<Problem> = r.body_mut().read_json().ok();
                let (kind, detail) = problem
                    .map(|p| (p.kind, p.detail))
                    .unwrap_or_else(|| ("unknown".into(), "no problem document".into()));
                Outcome::Fail(KbsClientError::Refused {
                    step,
                    status,
                    kind,
                    detail,
                })
            }
        }
    }

    /// Runs the whole release for `resource` (`repo/type/tag`) for a guest
    /// without GPUs.
    pub fn fetch_resource(
        &self,
        resource: &str,
        source: &dyn EvidenceSource,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        self.fetch_resource_with_gpus(resource, source, &crate::gpu::NoGpus)
    }

    /// The release with every GPU's evidence (Trustee's
    /// `additional_evidence`, bound by the CPU evidence); the GPUs are set
    /// ready once the broker accepted them and released the key.
    pub fn fetch_resource_with_gpus(
        &self,
        resource: &str,
        source: &dyn EvidenceSource,
        gpus: &dyn crate::gpu::GpuSource,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let keys = TeeKeyPair::generate();
        let auth_url = format!("{}/kbs/v0/auth", self.base);
        let req = Request {
            version: PROTOCOL_VERSION.into(),
            tee: source.tee().into(),
            extra_params: serde_json::Value::String(String::new()),
        };
        let (cookie, challenge) = self.with_retry("auth", || {
            match Self::classify("auth", self.agent.post(&auth_url).send_json(&req)) {
                Outcome::Ok(mut r) => {
                    let cookie = r
                        .headers()
                        .get_all("set-cookie")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(|c| {
                            c.split(';')
                                .next()
                                .filter(|kv| kv.trim().starts_with("kbs-session-id="))
                                .map(|kv| kv.trim().to_string())
                        });
                    let Some(cookie) = cookie else {
                        return Outcome::Fail(KbsClientError::Protocol {
                            step: "auth",
                            message: "no kbs-session-id cookie".into(),
                        });
                    };
                    match r.body_mut().read_json::<Challenge>() {
                        Ok(c) => Outcome::Ok((cookie, c)),
                        Err(e) => Outcome::Fail(KbsClientError::Protocol {
                            step: "auth",
                            message: e.to_string(),
                        }),
                    }
                }
                Outcome::Retry(w) => Outcome::Retry(w),
                Outcome::Fail(e) => Outcome::Fail(e),
            }
        })?;
        tracing::info!(tee = source.tee(), "key broker challenge received");

        let runtime = RuntimeData {
            nonce: challenge.nonce,
            tee_pubkey: keys.public_jwk(),
        };
        // Trustee's current protocol (kbs-types 0.15): composite evidence,
        // the binding over the additional-evidence string too (empty: no
        // device evidence is sent). Each GPU's report carries the nonce of
        // the session binding alone (Trustee's rule).
        let protocol = |e: ciel_protocol::jcs::JcsError| KbsClientError::Protocol {
            step: "attest",
            message: e.to_string(),
        };
        let gpu_evidence = gpus
            .collect(binding::device_nonce(&runtime).map_err(protocol)?)
            .map_err(KbsClientError::Evidence)?;
        crate::gpu::refuse_unsafe_modes(&gpu_evidence).map_err(KbsClientError::Evidence)?;
        if !gpu_evidence.is_empty() {
            tracing::info!(gpus = gpu_evidence.len(), "GPU evidence collected");
        }
        let additional = ciel_attestation::tee_evidence::encode_additional(&gpu_evidence);
        let report_data =
            binding::report_data_with_additional(&runtime, &additional).map_err(protocol)?;
        let evidence = source
            .evidence(report_data)
            .map_err(KbsClientError::Evidence)?;
        let body = Attestation {
            runtime_data: runtime,
            tee_evidence: serde_json::json!({
                "primary_evidence": evidence,
                "additional_evidence": additional,
            }),
            init_data: source
                .init_data()
                .map(ciel_protocol::initdata::InitDataDocument::toml),
        };
        let attest_url = format!("{}/kbs/v0/attest", self.base);
        // The nonce is single-use: /attest is not retried after an answer.
        let token: AttestationToken = self.with_retry("attest", || {
            match Self::classify(
                "attest",
                self.agent
                    .post(&attest_url)
                    .header("cookie", &cookie)
                    .send_json(&body),
            ) {
                Outcome::Ok(mut r) => match r.body_mut().read_json() {
                    Ok(t) => Outcome::Ok(t),
                    Err(e) => Outcome::Fail(KbsClientError::Protocol {
                        step: "attest",
                        message: e.to_string(),
                    }),
                },
                Outcome::Retry(w) if w.starts_with("HTTP") => {
                    Outcome::Fail(KbsClientError::Protocol {
                        step: "attest",
                        message: w,
                    })
                }
                other => other.map_unreachable(),
            }
        })?;
        tracing::info!("attestation accepted by the key broker");

        let url = format!("{}/kbs/v0/resource/{resource}", self.base);
        let jwe: Jwe = self.with_retry("resource", || {
            let resp = self
                .agent
                .get(&url)
                .header("cookie", &cookie)
                .header("authorization", format!("Bearer {}", token.token))
                .call();
            match Self::classify("resource", resp) {
                Outcome::Ok(mut r) => match r.body_mut().read_json() {
                    Ok(j) => Outcome::Ok(j),
                    Err(e) => Outcome::Fail(KbsClientError::Protocol {
                        step: "resource",
                        message: e.to_string(),
                    }),
                },
                other => other.map_unreachable(),
            }
        })?;
        let key = keys.decrypt(&jwe)?;
        tracing::info!(resource, "resource received and opened");
        if !gpu_evidence.is_empty() {
            // The broker accepted every GPU's evidence: they may take work.
            gpus.set_ready().map_err(KbsClientError::Evidence)?;
            tracing::info!(gpus = gpu_evidence.len(), "GPUs set ready");
        }
        Ok(key)
    }
}

impl<T> Outcome<T> {
    /// Re-types the non-`Ok` outcomes.
    fn map_unreachable<U>(self) -> Outcome<U> {
        match self {
            Outcome::Retry(w) => Outcome::Retry(w),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Ok(_) => Outcome::Fail(KbsClientError::Protocol {
                step: "internal",
                message: "unexpected state".into(),
            }),
        }
    }
}

/// Evidence from the simulated SNP and TDX platforms (development only).
pub mod sim {
    use super::EvidenceSource;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use ciel_attestation::sim::{SimSnpReport, SimTdxQuote, SnpSim, TdxSim};

    /// DANGER: Trustee's `sample` TEE (guest-components' attester outside a
    /// TEE): unsigned evidence anyone can make, which proves nothing. For
    /// interoperability tests against Trustee's KBS (and brokers configured
    /// to accept it), never for a real guest.
    #[derive(Debug, Default)]
    pub struct SampleSource;

    impl EvidenceSource for SampleSource {
        fn tee(&self) -> &str {
            "sample"
        }

        /// `report_data` is the binding digest (SHA-384) in its first 48
        /// bytes; the sample attester carries the digest alone.
        fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
            let digest = report_data.get(..48).unwrap_or(&report_data);
            Ok(serde_json::json!({"svn": "1", "report_data": B64.encode(digest)}))
        }
    }

    /// Signs reports with a simulated hierarchy (borrowed or shared:
    /// anything that dereferences to the [`SnpSim`]).
    #[derive(Debug)]
    pub struct SimSnpSource<S> {
        pub sim: S,
        pub template: SimSnpReport,
    }

    impl<S: std::ops::Deref<Target = SnpSim>> EvidenceSource for SimSnpSource<S> {
        fn tee(&self) -> &str {
            "snp"
        }

        fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
            let report = self
                .sim
                .report_binding(&self.template, report_data)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "report": B64.encode(report),
                "vcek": B64.encode(self.sim.vcek_der()),
                "cert_chain": String::from_utf8_lossy(&self.sim.chain_pem()),
            }))
        }
    }

    /// Quotes from the simulated TDX platform, each with the collateral a
    /// PCCS would serve for it now, so a verifier needs nothing else.
    #[derive(Debug)]
    pub struct SimTdxSource<S> {
        pub sim: S,
        pub template: SimTdxQuote,
    }

    impl<S: std::ops::Deref<Target = TdxSim>> EvidenceSource for SimTdxSource<S> {
        fn tee(&self) -> &str {
            "tdx"
        }

        fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
            let quote = self
                .sim
                .quote(&SimTdxQuote {
                    report_data,
                    ..self.template.clone()
                })
                .map_err(|e| e.to_string())?;
            let collateral = self
                .sim
                .collateral(ciel_attestation::UnixTime(crate::unix_now()))
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "quote": B64.encode(quote),
                "collateral": collateral.to_json(),
            }))
        }
    }
}
