//! One fetched item: its bytes, the headers that are part of it, when it
//! was fetched and until when its content says it is current.
//!
//! What comes from an upstream is checked for shape before it is kept
//! ([`Entry::assess`]: a certificate parses, a CRL has a `nextUpdate`, TCB
//! info is JSON with a signature and its issuer chain): a broken answer is
//! refused and the copy already held keeps being served. Nothing here is
//! trusted: every verifier checks each item's signature up to a root its
//! policy names, so a cache that lies can only make verification fail.

use crate::item::Item;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ciel_attestation::UnixTime;
use ciel_attestation::x509::Cert;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One item as held in the cache and in bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub item: Item,
    /// The body as served (DER, PEM or JSON, by kind).
    pub body: Vec<u8>,
    /// The headers of [`Item::headers`], as the upstream sent them
    /// (percent-encoded PEM for Intel's issuer chains).
    pub headers: BTreeMap<String, String>,
    /// When it was fetched from its upstream (host clock; informative).
    pub fetched_at: UnixTime,
    /// When its content stops being current (a CRL's or TCB info's
    /// `nextUpdate`, a certificate's `notAfter`); `None`: the content
    /// states no end (RIMs), refreshed on a schedule.
    pub not_after: Option<UnixTime>,
    /// When its content was issued (a CRL's `thisUpdate`, TCB info's
    /// `issueDate`), where it states one.
    pub issued_at: Option<UnixTime>,
}

/// The on-disk and in-bundle form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredEntry {
    pub item: String,
    pub fetched_at: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Base64.
    pub body: String,
}

impl Entry {
    /// Checks what an upstream answered for `item` and reads its window.
    /// The body is normalised where upstreams differ (a PCCS sends the root
    /// CA CRL as hex, PCS as DER: kept as DER).
    pub fn assess(
        item: Item,
        body: Vec<u8>,
        mut headers: BTreeMap<String, String>,
        fetched_at: UnixTime,
    ) -> Result<Entry, String> {
        headers.retain(|k, _| item.headers().iter().any(|h| h.eq_ignore_ascii_case(k)));
        for h in item.headers() {
            if !headers.keys().any(|k| k.eq_ignore_ascii_case(h)) {
                return Err(format!("{}: the response has no {h} header", item.kind()));
            }
        }
        let mut body = body;
        let (issued_at, not_after) = match &item {
            Item::AmdVcek { .. } => {
                let cert = Cert::from_der(&body).map_err(|e| format!("VCEK: {e}"))?;
                (None, Some(not_after(&cert)))
            }
            Item::AmdChain { .. } => {
                let certs = Cert::parse_bundle(&body).map_err(|e| format!("cert_chain: {e}"))?;
                if certs.len() < 2 {
                    return Err(format!(
                        "cert_chain: {} certificate(s), expected the ASK (or ASVK) and the ARK",
                        certs.len()
                    ));
                }
                (None, certs.iter().map(not_after).min())
            }
            Item::AmdCrl { .. } | Item::IntelPckCrl { .. } | Item::IntelRootCaCrl => {
                if matches!(item, Item::IntelRootCaCrl) && body.iter().all(u8::is_ascii_hexdigit) {
                    body = hex::decode(&body).map_err(|e| format!("root CA CRL hex: {e}"))?;
                }
                let (this, next) =
                    crl_window(&body).map_err(|e| format!("{}: {e}", item.kind()))?;
                (Some(this), Some(next))
            }
            Item::IntelTcbInfo { .. } => {
                let (issued, next) = signed_json(&body, "tcbInfo")?;
                (Some(issued), Some(next))
            }
            Item::IntelQeIdentity { .. } => {
                let (issued, next) = signed_json(&body, "enclaveIdentity")?;
                (Some(issued), Some(next))
            }
            Item::NvidiaRim { .. } => {
                rim_xml(&body)?;
                (None, None)
            }
            Item::NvidiaOcsp { .. } => {
                let r = ciel_attestation::nvidia::ocsp::Stapled::parse(&body)
                    .map_err(|e| format!("OCSP: {e}"))?;
                (None, r.next_update())
            }
        };
        Ok(Entry {
            item,
            body,
            headers,
            fetched_at,
            not_after,
            issued_at,
        })
    }

    /// A header of the item, percent-decoded (Intel's issuer chains).
    pub fn header(&self, name: &str) -> Option<String> {
        let v = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?
            .1;
        Some(
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned(),
        )
    }

    /// Whether its content is past its end at `now`.
    pub fn expired(&self, now: UnixTime) -> bool {
        self.not_after.is_some_and(|t| now.secs() >= t.secs())
    }

    pub(crate) fn to_stored(&self) -> StoredEntry {
        StoredEntry {
            item: self.item.to_string(),
            fetched_at: self.fetched_at.secs(),
            headers: self.headers.clone(),
            body: B64.encode(&self.body),
        }
    }

    /// Reads a stored entry back, checking it as when it was fetched.
    pub(crate) fn from_stored(s: StoredEntry) -> Result<Entry, String> {
        let item = Item::parse(&s.item).map_err(|e| format!("item {:?}: {e}", s.item))?;
        let body = B64
            .decode(s.body.as_bytes())
            .map_err(|e| format!("{}: body is not base64: {e}", s.item))?;
        Entry::assess(item, body, s.headers, UnixTime(s.fetched_at))
            .map_err(|e| format!("{}: {e}", s.item))
    }
}

fn not_after(c: &Cert) -> UnixTime {
    UnixTime::from_x509(c.parsed().tbs_certificate().validity().not_after)
}

/// A CRL's `thisUpdate` and `nextUpdate` (DER, or PEM `X509 CRL`).
pub(crate) fn crl_window(bytes: &[u8]) -> Result<(UnixTime, UnixTime), String> {
    use x509_cert::der::Decode;
    let der = if bytes.starts_with(b"-----BEGIN") {
        pem::parse(bytes)
            .map_err(|e| format!("PEM: {e}"))?
            .into_contents()
    } else {
        bytes.to_vec()
    };
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Raw>::from_der(&der)
        .map_err(|e| format!("not a DER CRL: {e}"))?;
    let next = crl
        .tbs_cert_list
        .next_update
        .ok_or("the CRL states no nextUpdate")?;
    Ok((
        UnixTime::from_x509(crl.tbs_cert_list.this_update),
        UnixTime::from_x509(next),
    ))
}

/// Intel's signed JSON (`{"<field>": {…}, "signature": "<hex>"}`): the
/// signed object's `issueDate` and `nextUpdate`.
fn signed_json(body: &[u8], field: &str) -> Result<(UnixTime, UnixTime), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("{field} response: {e}"))?;
    let sig = v["signature"]
        .as_str()
        .ok_or_else(|| format!("{field} response: no `signature`"))?;
    hex::decode(sig).map_err(|e| format!("{field} response: `signature` is not hex: {e}"))?;
    let date = |name: &str| -> Result<UnixTime, String> {
        let s = v[field][name]
            .as_str()
            .ok_or_else(|| format!("{field}.{name}: missing"))?;
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("{field}.{name} {s:?}: {e}"))?;
        u64::try_from(t.timestamp())
            .map(UnixTime)
            .map_err(|_| format!("{field}.{name} {s:?}: before 1970"))
    };
    Ok((date("issueDate")?, date("nextUpdate")?))
}

/// The SWID tag inside a RIM service answer (`{"rim": "<base64 XML>", …}`).
pub(crate) fn rim_xml(body: &[u8]) -> Result<Vec<u8>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("RIM response: {e}"))?;
    let b64 = v["rim"]
        .as_str()
        .ok_or("RIM response: no `rim` (base64 SWID tag)")?;
    let xml = B64
        .decode(b64.as_bytes())
        .map_err(|e| format!("RIM response: `rim` is not base64: {e}"))?;
    if !xml.trim_ascii_start().starts_with(b"<") {
        return Err("RIM response: `rim` does not hold XML".into());
    }
    Ok(xml)
}
