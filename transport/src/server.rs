//! The one server loop every ciel service runs (key broker, guest API,
//! guest egress bridge, host shim): accept, then everything else in the
//! connection's own task under a connection cap.
//!
//! The accept loop never awaits a client. A TLS handshake, a request
//! header, a body: whatever a client controls happens in its task, bounded
//! by the service's deadlines, so a silent or slow client costs one slot
//! for a bounded time and nobody else waits for it. Failing `accept`s
//! (descriptor exhaustion, say) back off instead of spinning. On shutdown
//! the loop stops accepting, tells open connections to finish
//! ([`Connection::draining`]), waits up to a grace period and then cuts
//! what is left.

use crate::{Listener, Stream};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a service allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections; one more is closed at once (and counted).
    pub max_connections: usize,
    /// After shutdown begins, how long open connections may finish.
    pub grace: Duration,
}

/// A service's connection counters, for its metrics; one set per
/// [`serve`] (its `active` is that loop's cap count too).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections accepted and handed to the service.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections closed at once because the service was at its cap.
    pub refused: AtomicU64,
    /// `accept` calls that failed.
    pub accept_errors: AtomicU64,
}

impl ConnectionCounters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a connection's handler gets beside its stream.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer, for logs (`127.0.0.1:4711`, `unix:/run/x.sock`, `vsock://3:5000`).
    pub peer: String,
    drain: watch::Receiver<bool>,
}

impl Connection {
    /// Resolves once the server has begun to shut down: finish what is in
    /// flight, take nothing new.
    pub async fn draining(&mut self) {
        // An error means the server is gone altogether: drain as well.
        let _ = self.drain.wait_for(|d| *d).await;
    }
}

/// Backoff for failing `accept` calls: 10 ms doubling to 1 s, reset by the
/// next success.
#[derive(Debug)]
struct AcceptBackoff(Duration);

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        now
    }
}

/// Refusals at the cap are logged at most once a second, with how many
/// there were: a flood of connections must not become a flood of logs.
#[derive(Debug)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: &str, cap: usize) {
        self.unlogged += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                %peer,
                cap,
                refused = self.unlogged,
                "connection(s) refused: at the connection cap"
            );
            self.last = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

/// Accepts on `listener` until `shutdown` resolves, running `handle` for
/// each connection in its own task within `limits`; then drains. Returns
/// once every connection has ended or been cut at the grace period.
pub async fn serve<H, F>(
    listener: Listener,
    limits: Limits,
    counters: Arc<ConnectionCounters>,
    shutdown: impl Future<Output = ()>,
    mut handle: H,
) where
    H: FnMut(Stream, Connection) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // (A cap of 0 would refuse everything; callers' flags refuse it.)
    let cap = limits.max_connections.max(1);
    let cap_open = u64::try_from(cap).unwrap_or(u64::MAX);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut backoff = AcceptBackoff(AcceptBackoff::FIRST);
    let mut refusals = RefusalLog {
        last: None,
        unlogged: 0,
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                ConnectionCounters::add(&counters.accept_errors);
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "accept failed");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        backoff = AcceptBackoff(AcceptBackoff::FIRST);
        // Finished connections leave the set as they go; the open count is
        // `active` (only this loop adds to it, each task takes itself off
        // as it ends), so it is also the cap's.
        reap(&mut tasks);
        if counters.active.load(Ordering::Relaxed) >= cap_open {
            ConnectionCounters::add(&counters.refused);
            refusals.refused(&peer, cap);
            drop(stream);
            continue;
        }
        ConnectionCounters::add(&counters.accepted);
        ConnectionCounters::add(&counters.active);
        let conn = handle(
            stream,
            Connection {
                peer,
                drain: drain_rx.clone(),
            },
        );
        let counters = counters.clone();
        tasks.spawn(async move {
            let _active = Active(counters);
            conn.await;
        });
    }
    drop(listener);
    reap(&mut tasks);
    let open = tasks.len();
    tracing::info!(
        open,
        grace_s = limits.grace.as_secs_f64(),
        "shutting down: no new connections"
    );
    let _ = drain_tx.send(true);
    let finished = tokio::time::timeout(limits.grace, async {
        while let Some(done) = tasks.join_next().await {
            report_panic(done);
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            cut = tasks.len(),
            "connections still open at the end of the grace period: closed"
        );
        tasks.shutdown().await;
    }
}

/// Decrements the active count however the connection's task ends
/// (normally, by panic, or cut at the grace period).
struct Active(Arc<ConnectionCounters>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes the finished connections out of the set.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        report_panic(done);
    }
}

fn report_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection's task panicked");
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
