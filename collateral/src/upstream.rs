//! Fetching items from their upstreams (AMD KDS, Intel PCS or a PCCS, the
//! Intel root CA's CRL, NVIDIA's RIM service and OCSP responder, or mirrors
//! of them). Blocking (ureq); the service calls it off the async runtime.
//! The transport is not trusted either: what comes back is checked for
//! shape here and for signatures by every verifier.

use crate::entry::Entry;
use crate::item::{Item, Upstream};
use ciel_attestation::UnixTime;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

/// The services themselves, used where no other URL is given.
pub const DEFAULTS: [(Upstream, &str); 5] = [
    (Upstream::Amd, "https://kdsintf.amd.com"),
    (Upstream::Intel, "https://api.trustedservices.intel.com"),
    (
        Upstream::IntelRootCaCrl,
        "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der",
    ),
    (Upstream::NvidiaRim, "https://rim.attestation.nvidia.com"),
    (Upstream::NvidiaOcsp, "https://ocsp.ndis.nvidia.com"),
];

/// Largest body taken from an upstream (a PCK CRL is the largest item, a
/// few hundred KiB at most).
pub const MAX_BODY: u64 = 4 << 20;

/// Why an item could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("no {} upstream is configured", .0.name())]
    NotConfigured(Upstream),
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
    #[error("{url}: the upstream has no such item (HTTP 404)")]
    NotFound { url: String },
    #[error("{url}: {message}")]
    Malformed { url: String, message: String },
}

/// Where each kind of item is fetched from.
#[derive(Debug, Clone)]
pub struct Upstreams {
    urls: BTreeMap<Upstream, String>,
    agent: ureq::Agent,
}

impl Upstreams {
    /// `urls`: base URLs (no trailing slash) by upstream; the Intel root
    /// CA CRL's is the whole URL. `https_roots` (PEM): the roots upstream
    /// TLS is checked against, required when any URL is `https`.
    pub fn new(
        urls: BTreeMap<Upstream, String>,
        https_roots: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Upstreams, String> {
        for (u, url) in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "{} upstream {url:?}: expected http:// or https://",
                    u.name()
                ));
            }
        }
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if urls.values().any(|u| u.starts_with("https://")) {
            let pem = https_roots.ok_or(
                "an https upstream needs the roots to check it by (--collateral-upstream-ca; Debian's bundle is /etc/ssl/certs/ca-certificates.crt)",
            )?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err("the upstream CA bundle holds no certificate".into());
            }
            cfg = cfg.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Upstreams {
            urls: urls
                .into_iter()
                .map(|(u, url)| (u, url.trim_end_matches('/').to_string()))
                .collect(),
            agent: cfg.build().into(),
        })
    }

    /// Every item from one collateral service (the host's, `base` like
    /// `http://127.0.0.1:8444`), which answers the upstreams' own paths.
    pub fn service(base: &str, timeout: Duration) -> Result<Upstreams, String> {
        let base = base.trim_end_matches('/');
        let urls = Upstream::ALL
            .into_iter()
            .map(|u| {
                let url = match u {
                    Upstream::IntelRootCaCrl => format!("{base}{}", Item::IntelRootCaCrl),
                    Upstream::NvidiaOcsp => format!("{base}/ocsp"),
                    _ => base.to_string(),
                };
                (u, url)
            })
            .collect();
        Upstreams::new(urls, None, timeout)
    }

    pub fn url(&self, u: Upstream) -> Option<&str> {
        self.urls.get(&u).map(String::as_str)
    }

    /// Fetches `item` (`ocsp_request`: the DER request an OCSP item
    /// answers) and checks its shape.
    pub fn fetch(
        &self,
        item: &Item,
        ocsp_request: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<Entry, FetchError> {
        let upstream = item.upstream();
        let base = self
            .url(upstream)
            .ok_or(FetchError::NotConfigured(upstream))?;
        let url = match item {
            Item::IntelRootCaCrl | Item::NvidiaOcsp { .. } => base.to_string(),
            _ => format!("{base}{item}"),
        };
        let failed = |message: String| FetchError::Failed {
            url: url.clone(),
            message,
        };
        let response = match (item, ocsp_request) {
            (Item::NvidiaOcsp { .. }, Some(req)) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/ocsp-request")
                .send(req),
            (Item::NvidiaOcsp { .. }, None) => {
                return Err(failed("an OCSP response is fetched for a request".into()));
            }
            _ => self.agent.get(&url).call(),
        }
        .map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err(FetchError::NotFound { url });
        }
        if status != 200 {
            // What a collateral service says went wrong, in a line.
            let mut text = String::new();
            let _ = response
                .into_body()
                .into_reader()
                .take(512)
                .read_to_string(&mut text);
            let text = text.trim();
            return Err(failed(if text.is_empty() || !text.is_ascii() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }));
        }
        let headers: BTreeMap<String, String> = item
            .headers()
            .iter()
            .filter_map(|h| {
                let v = response.headers().get(*h)?.to_str().ok()?;
                Some((h.to_string(), v.to_string()))
            })
            .collect();
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_BODY.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| failed(format!("reading the body: {e}")))?;
        if body.len() as u64 > MAX_BODY {
            return Err(failed(format!("the body is larger than {MAX_BODY} bytes")));
        }
        Entry::assess(item.clone(), body, headers, now)
            .map_err(|message| FetchError::Malformed { url, message })
    }
}

/// Items fetched on demand (the guest, from the host's service).
impl crate::lookup::Source for Upstreams {
    fn entry(&self, item: &Item) -> Result<Entry, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.fetch(item, None, UnixTime(now))
            .map_err(|e| e.to_string())
    }
}
