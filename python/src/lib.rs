//! `ciel._native`: the Python SDK's native half. Every check is the Rust
//! client SDK's (`ciel-client`): this module only carries its verification,
//! its reports and its attested connections to Python. The Python half
//! (`python/ciel/`) adds the argument handling, the exception classes and
//! the `httpx` transports on top.
//!
//! Blocking calls release the GIL and wait in slices, so that other Python
//! threads run and Ctrl-C interrupts a long wait.

#![forbid(unsafe_code)]

mod errors;
mod policy;
mod report;
mod transport;

use pyo3::prelude::*;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The one async runtime behind every call (started on first use).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ciel-sdk")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!("ciel: starting the runtime: {e}"))
        })
}

/// How long one wait lasts before Python gets the GIL back to look at
/// signals and at `stop`.
const SLICE: Duration = Duration::from_millis(100);

/// Why [`wait`] gave up.
enum Waited<T> {
    Done(T),
    /// `limit` passed first.
    TimedOut,
    /// `stop` was set (the response was closed from another thread).
    Stopped,
}

/// Drives `fut` with the GIL released, a slice at a time; between slices,
/// a pending signal (Ctrl-C) raises in Python and drops `fut`.
fn wait<F>(
    py: Python<'_>,
    fut: F,
    limit: Option<Duration>,
    stop: Option<&AtomicBool>,
) -> PyResult<Waited<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut fut = std::pin::pin!(fut);
    loop {
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Ok(Waited::Stopped);
        }
        let slice_end = tokio::time::Instant::now() + SLICE;
        let until = deadline.map_or(slice_end, |d| d.min(slice_end));
        let polled = py.detach(|| {
            rt.block_on(async { tokio::time::timeout_at(until, fut.as_mut()).await.ok() })
        });
        if let Some(out) = polled {
            return Ok(Waited::Done(out));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(Waited::TimedOut);
        }
        py.check_signals()?;
    }
}

/// A timeout argument in seconds: `None` waits for ever; anything else must
/// be a finite, non-negative number.
fn seconds(what: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "{what}: {s} is not a number of seconds"
                ))
            })
        })
        .transpose()
}

/// A collateral bundle argument (`ciel collateral bundle`'s file): `None`
/// for none; a file that cannot be read is an `OSError`, one that is not a
/// bundle a `ValueError`, each naming the file.
fn collateral_bundle(
    path: Option<&str>,
) -> PyResult<Option<std::sync::Arc<ciel_collateral::Bundle>>> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!("collateral bundle {path}: {e}"))
    })?;
    ciel_collateral::Bundle::from_json(&bytes)
        .map(|b| Some(std::sync::Arc::new(b)))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("{path}: {e}")))
}

/// Runs a client SDK call made in `phase` to `addr`, for at most `limit`:
/// its value, or the Python exception for its error or its timeout.
fn call<F, T>(
    py: Python<'_>,
    phase: errors::Phase,
    addr: &str,
    limit: Option<Duration>,
    fut: F,
) -> PyResult<T>
where
    F: Future<Output = Result<T, ciel_client::ClientError>> + Send,
    T: Send,
{
    match wait(py, fut, limit, None)? {
        Waited::Done(Ok(v)) => Ok(v),
        Waited::Done(Err(e)) => Err(errors::client(py, e, phase)),
        Waited::TimedOut | Waited::Stopped => Err(errors::timeout(
            py,
            phase,
            addr,
            limit.map_or(0.0, |l| l.as_secs_f64()),
        )),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<policy::Policy>()?;
    m.add_class::<report::Check>()?;
    m.add_class::<report::Report>()?;
    m.add_class::<transport::Transport>()?;
    m.add_class::<transport::Response>()?;
    m.add_function(wrap_pyfunction!(report::verify, m)?)?;
    Ok(())
}
