//! `ciel.verify` and what it returns: the client SDK's verification of a
//! guest, check by check, as Python objects.

use crate::call;
use crate::errors::Phase;
use crate::policy::Policy;
use ciel_client::Client;
use ciel_client::attested::Verification;
use pyo3::prelude::*;

/// One check of a verification and its outcome.
#[pyclass(frozen, get_all, module = "ciel")]
#[derive(Debug, Clone)]
pub struct Check {
    /// `evidence`, `tls binding`, `model`, `freshness`, `same guest`, …
    name: String,
    ok: bool,
    detail: String,
}

#[pymethods]
impl Check {
    fn __repr__(&self) -> String {
        format!(
            "<ciel.Check {} {}: {}>",
            self.name,
            if self.ok { "ok" } else { "FAILED" },
            self.detail
        )
    }
}

/// What a guest proved (or failed to prove) to this client.
#[pyclass(frozen, module = "ciel")]
#[derive(Debug)]
pub struct Report {
    verification: Verification,
    /// Whether the evidence was fetched for a nonce of this client's.
    fresh: bool,
}

impl Report {
    pub fn new(verification: Verification, fresh: bool) -> Self {
        Report {
            verification,
            fresh,
        }
    }
}

/// `json.loads(text)`: claims and reports cross as JSON, so Python gets
/// plain dicts and lists.
fn from_json<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

#[pymethods]
impl Report {
    /// Every check passed.
    #[getter]
    fn accepted(&self) -> bool {
        self.verification.accepted
    }

    /// Each check, in order.
    #[getter]
    fn checks(&self) -> Vec<Check> {
        self.verification
            .checks
            .iter()
            .map(|c| Check {
                name: c.name.to_string(),
                ok: c.ok,
                detail: c.detail.clone(),
            })
            .collect()
    }

    /// The checks that failed (empty when accepted).
    #[getter]
    fn failed(&self) -> Vec<Check> {
        self.checks().into_iter().filter(|c| !c.ok).collect()
    }

    /// The guest's runtime claims (bound to its evidence by `report_data`).
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let claims = serde_json::to_value(&self.verification.claims)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        from_json(py, &claims)
    }

    /// The served model's name.
    #[getter]
    fn model(&self) -> &str {
        &self.verification.claims.model.name
    }

    /// The served model's SHA-256 (hex), as the guest attested it.
    #[getter]
    fn model_sha256(&self) -> &str {
        &self.verification.claims.model.sha256
    }

    /// `snp` or `tdx`.
    #[getter]
    fn platform(&self) -> String {
        self.verification.claims.platform.to_string()
    }

    /// The evidence chains to a simulated root (named by the policy): no
    /// hardware, no confidentiality.
    #[getter]
    fn simulated(&self) -> bool {
        self.verification
            .verdict
            .as_ref()
            .is_some_and(|v| v.simulated)
    }

    /// The evidence was fetched for this client's own nonce.
    #[getter]
    fn fresh(&self) -> bool {
        self.fresh
    }

    /// SHA-256 (hex) of the guest's TLS key, which its evidence binds.
    #[getter]
    fn tls_key_sha256(&self) -> &str {
        &self.verification.claims.tls_spki_sha256
    }

    /// When it was verified (RFC 3339, this machine's clock).
    #[getter]
    fn verified_at(&self) -> String {
        self.verification.at.to_string()
    }

    /// Everything, as `ciel verify --json` prints it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut v = self.verification.to_json();
        v["fresh"] = self.fresh.into();
        from_json(py, &v)
    }

    /// The report for people, as `ciel verify` prints it.
    fn __str__(&self) -> String {
        ciel_client::report::render_verification(&self.verification)
    }

    fn __repr__(&self) -> String {
        let c = &self.verification.claims;
        format!(
            "<ciel.Report {} {} model={} sha256={}… checks={}/{}>",
            if self.verification.accepted {
                "VERIFIED"
            } else {
                "REFUSED"
            },
            c.platform,
            c.model.name,
            c.model.sha256.get(..12).unwrap_or(&c.model.sha256),
            self.verification.checks.iter().filter(|c| c.ok).count(),
            self.verification.checks.len(),
        )
    }
}

/// Connects to `url`, verifies the guest against `policy` during the TLS
/// handshake (and, with `fresh`, again on evidence for a new nonce), and
/// returns the report; a refusal raises `AttestationRefused`.
#[pyfunction]
#[pyo3(signature = (url, policy, fresh = false, timeout = None, collateral_bundle = None))]
pub fn verify(
    py: Python<'_>,
    url: &str,
    policy: PyRef<'_, Policy>,
    fresh: bool,
    timeout: Option<f64>,
    collateral_bundle: Option<&str>,
) -> PyResult<Report> {
    let limit = crate::seconds("timeout", timeout)?;
    let bundle = crate::collateral_bundle(collateral_bundle)?;
    let mut endpoint = ciel_client::Endpoint::new(url, policy.inner.clone())
        .map_err(|e| crate::errors::client(py, e, Phase::Connect))?;
    if let Some(b) = bundle {
        endpoint = endpoint.with_collateral_bundle(b);
    }
    let work = async move {
        let client = Client::connect_to(endpoint).await?;
        if fresh {
            client.fresh_attestation().await
        } else {
            Ok(client.verification().clone())
        }
    };
    let v = call(py, Phase::Connect, url, limit, work)?;
    Ok(Report::new(v, fresh))
}
