//! Evidence inside a Kata Confidential Containers pod: the pod VM's
//! attestation agent (guest-components) owns the hardware, and a workload
//! asks its local REST API (`api-server-rest`, enabled by the kernel
//! parameter `agent.guest_components_rest_api=all`):
//! `GET /aa/evidence?runtime_data=…` returns the evidence document the
//! agent's attester writes — Trustee's `snp` shape (`attestation_report`
//! and `cert_chain` as the `sev` crate serializes them) or `tdx`
//! (`quote`, `cc_eventlog`) — which the broker and clients read as it is.
//!
//! The agent signs the query string's bytes after decoding them as UTF-8,
//! so a raw digest cannot pass; this source sends the binding's text form
//! ([`ciel_protocol::binding::text_form`]), which verifiers accept beside
//! the raw one.

use crate::kbs_client::EvidenceSource;
use ciel_protocol::binding::text_form;
use std::time::Duration;

/// Where the agent's REST API listens in a CoCo pod.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8006";
/// Largest evidence document read (a TDX event log can be large).
const MAX_EVIDENCE: u64 = 4 << 20;

/// Evidence from the CoCo attestation agent's REST API.
#[derive(Debug)]
pub struct CocoAgentSource {
    endpoint: String,
    agent: ureq::Agent,
    tee: &'static str,
}

impl CocoAgentSource {
    /// The agent at `base` (`http://HOST:PORT`); one request with empty
    /// runtime data tells which TEE it attests.
    pub fn connect(base: &str) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!(
                "attestation agent {base:?}: an http:// URL is expected (the agent's REST API serves plain HTTP on the pod's loopback)"
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut source = CocoAgentSource {
            endpoint: format!("{base}/aa/evidence"),
            agent,
            tee: "snp",
        };
        let probe = source.fetch("")?;
        source.tee = tee_of(&probe).ok_or_else(|| {
            format!(
                "attestation agent at {base}: evidence with neither `attestation_report` (SNP) nor `quote` (TDX); keys: {:?}",
                probe
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            )
        })?;
        Ok(source)
    }

    fn fetch(&self, runtime_data: &str) -> Result<serde_json::Value, String> {
        let what = || format!("attestation agent {}", self.endpoint);
        let mut resp = self
            .agent
            .get(&self.endpoint)
            .query("runtime_data", runtime_data)
            .call()
            .map_err(|e| format!("{}: {e}", what()))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_EVIDENCE)
            .read_to_vec()
            .map_err(|e| format!("{}: reading the answer: {e}", what()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(body.get(..512).unwrap_or(&body));
            return Err(format!("{}: HTTP {status}: {}", what(), text.trim()));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("{}: the evidence is not JSON: {e}", what()))
    }
}

fn tee_of(evidence: &serde_json::Value) -> Option<&'static str> {
    if evidence.get("attestation_report").is_some() {
        Some("snp")
    } else if evidence.get("quote").is_some() {
        Some("tdx")
    } else {
        None
    }
}

impl EvidenceSource for CocoAgentSource {
    fn tee(&self) -> &str {
        self.tee
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let text = text_form(&report_data);
        // base64url: ASCII, and no character needs escaping in a query.
        let text = std::str::from_utf8(&text).map_err(|e| e.to_string())?;
        let evidence = self.fetch(text)?;
        if tee_of(&evidence) != Some(self.tee) {
            return Err(format!(
                "attestation agent {}: the evidence is no longer {} evidence",
                self.endpoint, self.tee
            ));
        }
        if self.tee == "snp" && evidence.get("cert_chain").is_none_or(|c| c.is_null()) {
            return Err(format!(
                "attestation agent {}: SNP evidence without a certificate table (VCEK): configure the host's SNP certificates",
                self.endpoint
            ));
        }
        Ok(evidence)
    }
}
