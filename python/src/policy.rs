//! `ciel.Policy`: the client's attestation policy, parsed by the Rust
//! attestation crate (the same parser as `ciel verify --policy`).

use crate::errors::raise;
use pyo3::prelude::*;
use std::path::PathBuf;

/// What a guest must prove before anything is sent to it.
#[pyclass(frozen, module = "ciel")]
#[derive(Debug)]
pub struct Policy {
    pub inner: ciel_attestation::Policy,
    /// Where it came from, for `repr`.
    origin: String,
}

#[pymethods]
impl Policy {
    /// A policy file: TOML, or JSON if its name ends in `.json`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        match ciel_client::policy::load(&path) {
            Ok(inner) => Ok(Policy {
                inner,
                origin: path.display().to_string(),
            }),
            Err(e) => Err(raise(py, "PolicyError", (e.to_string(), e.path))),
        }
    }

    /// A policy from TOML text.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str) -> PyResult<Self> {
        Self::parsed(py, "TOML", ciel_attestation::Policy::from_toml(text))
    }

    /// A policy from JSON text.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Self> {
        Self::parsed(py, "JSON", ciel_attestation::Policy::from_json(text))
    }

    fn __repr__(&self) -> String {
        format!("<ciel.Policy from {}>", self.origin)
    }
}

impl Policy {
    fn parsed(
        py: Python<'_>,
        format: &str,
        parsed: Result<ciel_attestation::Policy, ciel_attestation::PolicyError>,
    ) -> PyResult<Self> {
        parsed
            .map(|inner| Policy {
                inner,
                origin: format!("{format} text"),
            })
            .map_err(|e| {
                raise(
                    py,
                    "PolicyError",
                    (format!("policy {format}: {e}"), py.None()),
                )
            })
    }
}
