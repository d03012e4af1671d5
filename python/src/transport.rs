//! `ciel._native.Transport`: one HTTP request on its own attested
//! connection (verified in the handshake against the transport's policy,
//! like `ciel proxy`), with its response streamed back piece by piece. The
//! `httpx` transports in `ciel/_transport.py` are built on it.

use crate::errors::{self, Phase};
use crate::policy::Policy;
use crate::report::Report;
use crate::{Waited, call, seconds, wait};
use bytes::Bytes;
use ciel_client::Endpoint;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Headers that belong to one connection, not to the request: the
/// connection here is a new one, framed by hyper.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

/// Sends requests, each on a new connection whose guest passed `policy`.
#[pyclass(frozen, module = "ciel._native")]
#[derive(Debug)]
pub struct Transport {
    policy: ciel_attestation::Policy,
    collateral: Option<std::sync::Arc<ciel_collateral::Bundle>>,
}

#[pymethods]
impl Transport {
    #[new]
    #[pyo3(signature = (policy, collateral_bundle = None))]
    fn new(policy: PyRef<'_, Policy>, collateral_bundle: Option<&str>) -> PyResult<Self> {
        Ok(Transport {
            policy: policy.inner.clone(),
            collateral: crate::collateral_bundle(collateral_bundle)?,
        })
    }

    /// Sends one request to `https://{authority}{target}`; returns once the
    /// response's head has arrived.
    #[pyo3(signature = (method, authority, target, headers, body, connect_timeout = None, read_timeout = None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        method: &str,
        authority: &str,
        target: &str,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: &[u8],
        connect_timeout: Option<f64>,
        read_timeout: Option<f64>,
    ) -> PyResult<Response> {
        let connect_limit = seconds("connect timeout", connect_timeout)?;
        let read_limit = seconds("read timeout", read_timeout)?;
        let mut endpoint = Endpoint::new(&format!("https://{authority}"), self.policy.clone())
            .map_err(|e| errors::client(py, e, Phase::Connect))?;
        if let Some(b) = &self.collateral {
            endpoint = endpoint.with_collateral_bundle(b.clone());
        }
        let request = build_request(method, target, headers, Bytes::copy_from_slice(body))?;

        let (mut connection, verification) = call(
            py,
            Phase::Connect,
            authority,
            connect_limit,
            endpoint.open(),
        )?;
        let response = call(
            py,
            Phase::Exchange,
            authority,
            read_limit,
            connection.send(request),
        )?;
        let (parts, incoming) = response.into_parts();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            report: Py::new(py, Report::new(verification, false))?,
            authority: authority.to_string(),
            read_timeout: read_limit,
            body: Mutex::new(Some(incoming)),
            closed: AtomicBool::new(false),
        })
    }
}

fn build_request(
    method: &str,
    target: &str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Bytes,
) -> PyResult<hyper::Request<Full<Bytes>>> {
    let invalid = |what: String| pyo3::exceptions::PyValueError::new_err(what);
    let method = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid(format!("method {method:?} is not an HTTP method")))?;
    if !target.starts_with('/') {
        return Err(invalid(format!(
            "request target {target:?} must start with '/'"
        )));
    }
    let mut request = hyper::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(&name).map_err(|_| {
            invalid(format!(
                "header name {:?} is not valid",
                String::from_utf8_lossy(&name)
            ))
        })?;
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let value = hyper::header::HeaderValue::from_bytes(&value)
            .map_err(|_| invalid(format!("header {name}: the value is not valid")))?;
        request = request.header(name, value);
    }
    request
        .body(Full::new(body))
        .map_err(|e| invalid(format!("request: {e}")))
}

/// A response whose head has arrived; its body is read piece by piece.
#[pyclass(frozen, module = "ciel._native")]
#[derive(Debug)]
pub struct Response {
    #[pyo3(get)]
    status: u16,
    /// `(name, value)` pairs as they arrived (names lowercase).
    #[pyo3(get)]
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// What the guest on this response's connection proved.
    #[pyo3(get)]
    report: Py<Report>,
    authority: String,
    read_timeout: Option<Duration>,
    /// `None` once the body has ended or the response was closed.
    body: Mutex<Option<Incoming>>,
    /// Set by `close` from any thread; a `read` in progress stops at once.
    closed: AtomicBool,
}

#[pymethods]
impl Response {
    /// The next piece of the body; `None` at its end (or once closed).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Ok(mut slot) = self.body.try_lock() else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this response is already being read by another thread",
            ));
        };
        loop {
            let Some(body) = slot.as_mut() else {
                return Ok(None);
            };
            match wait(py, body.frame(), self.read_timeout, Some(&self.closed))? {
                Waited::Done(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(PyBytes::new(py, &data)));
                    }
                }
                Waited::Done(None) | Waited::Stopped => {
                    *slot = None;
                    return Ok(None);
                }
                Waited::Done(Some(Err(e))) => {
                    *slot = None;
                    let message = format!("{}: the answer stopped: {e}", self.authority);
                    return Err(errors::raise(py, "ConnectionLost", (message,)));
                }
                Waited::TimedOut => {
                    *slot = None;
                    return Err(errors::timeout(
                        py,
                        Phase::Exchange,
                        &self.authority,
                        self.read_timeout.map_or(0.0, |d| d.as_secs_f64()),
                    ));
                }
            }
        }
    }

    /// Drops the connection (the guest stops generating for it). Safe to
    /// call from any thread, also while another thread is reading.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut slot) = self.body.try_lock() {
            *slot = None;
        }
    }
}
