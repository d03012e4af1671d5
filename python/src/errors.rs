//! Rust errors as the Python SDK's exception classes. The classes live in
//! Python (`ciel/errors.py`), where they carry their attributes and docs;
//! here they are only instantiated.

use crate::report::Report;
use ciel_client::ClientError;
use pyo3::prelude::*;

/// Where in a call an error happened, which decides its class: nothing was
/// sent before `Connect` errors, the request was out for `Exchange` ones.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Connect,
    Exchange,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Exchange => "read",
        }
    }
}

/// An instance of `ciel.errors.<class>(*args)` as a Python exception.
pub fn raise<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py
        .import("ciel.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

/// `ciel.errors.Timeout` for a wait that passed its limit.
pub fn timeout(py: Python<'_>, phase: Phase, addr: &str, seconds: f64) -> PyErr {
    let what = match phase {
        Phase::Connect => "connecting to and verifying",
        Phase::Exchange => "waiting for an answer from",
    };
    raise(
        py,
        "Timeout",
        (
            format!("{what} {addr} took longer than {seconds} s"),
            phase.name(),
        ),
    )
}

/// The exception for a client SDK error that happened in `phase`.
pub fn client(py: Python<'_>, e: ClientError, phase: Phase) -> PyErr {
    let message = e.to_string();
    match e {
        ClientError::Refused {
            addr, verification, ..
        } => match Py::new(py, Report::new(*verification, false)) {
            Ok(report) => raise(py, "AttestationRefused", (message, addr, report)),
            Err(e) => e,
        },
        ClientError::Url(_) => pyo3::exceptions::PyValueError::new_err(message),
        ClientError::Connect { addr, .. } | ClientError::Tls { addr, .. } => {
            raise(py, "ConnectionFailed", (message, addr))
        }
        ClientError::Http(_) => match phase {
            Phase::Connect => raise(py, "ConnectionFailed", (message, py.None())),
            Phase::Exchange => raise(py, "ConnectionLost", (message,)),
        },
        ClientError::Interrupted { .. } => raise(py, "ConnectionLost", (message,)),
        ClientError::Api { status, .. } => raise(py, "GuestError", (message, status)),
        _ => raise(py, "ProtocolError", (message,)),
    }
}
