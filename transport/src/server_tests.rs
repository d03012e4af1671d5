#![allow(clippy::unwrap_used)]

use super::*;
use crate::{Endpoint, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for the server to act; far above any limit here.
const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    target: Endpoint,
    counters: Arc<ConnectionCounters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Stops the server and waits for `serve` to return.
    async fn stop(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(PATIENCE, self.done)
            .await
            .expect("serve did not return after the grace period")
            .unwrap();
    }
}

/// A server whose connections greet, then echo one line, then wait for
/// the client to close, or end early when draining if `polite`.
async fn start(limits: Limits, polite: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::bind(&Endpoint::Unix {
        path: dir.path().join("s.sock"),
        connect: None,
    })
    .await
    .unwrap();
    let target = listener.local_endpoint().unwrap();
    let counters = Arc::new(ConnectionCounters::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(serve(
        listener,
        limits,
        counters.clone(),
        async {
            let _ = stopped.await;
        },
        move |mut s, mut conn| async move {
            if s.write_all(b"hi\n").await.is_err() {
                return;
            }
            let mut b = [0u8; 64];
            loop {
                tokio::select! {
                    r = s.read(&mut b) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => if s.write_all(&b[..n]).await.is_err() { return },
                    },
                    () = conn.draining(), if polite => {
                        let _ = s.write_all(b"bye\n").await;
                        return;
                    }
                }
            }
        },
    ));
    Running {
        target,
        counters,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

async fn greeted(target: &Endpoint) -> crate::Stream {
    let mut s = connect(target).await.unwrap();
    let mut b = [0u8; 3];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut b))
        .await
        .expect("no greeting")
        .unwrap();
    assert_eq!(&b, b"hi\n");
    s
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < PATIENCE, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn silent_connections_do_not_hold_up_others() {
    let limits = Limits {
        max_connections: 300,
        grace: Duration::from_millis(100),
    };
    let server = start(limits, false).await;
    // 200 clients that connect and then never send or read anything.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(connect(&server.target).await.unwrap());
    }
    until("the silent clients were not all accepted", || {
        server.counters.accepted.load(Ordering::Relaxed) == 200
    })
    .await;
    // A client arriving after them is served at once.
    let mut s = greeted(&server.target).await;
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
    assert_eq!(server.counters.active.load(Ordering::Relaxed), 201);
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn the_cap_holds_and_a_freed_slot_is_reused() {
    let limits = Limits {
        max_connections: 3,
        grace: Duration::from_millis(100),
    };
    let server = start(limits, false).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(greeted(&server.target).await);
    }
    // One over the cap: closed at once, without a greeting.
    let mut over = connect(&server.target).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, over.read_to_end(&mut got))
        .await
        .expect("a connection over the cap was kept open")
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(server.counters.refused.load(Ordering::Relaxed), 1);
    assert_eq!(server.counters.active.load(Ordering::Relaxed), 3);
    // A slot that frees up is used again.
    drop(held.pop());
    until("the closed connection's slot was not freed", || {
        server.counters.active.load(Ordering::Relaxed) == 2
    })
    .await;
    held.push(greeted(&server.target).await);
    assert_eq!(server.counters.accepted.load(Ordering::Relaxed), 4);
    server.stop().await;
}

#[tokio::test]
async fn draining_lets_connections_finish() {
    let limits = Limits {
        max_connections: 4,
        grace: PATIENCE,
    };
    let server = start(limits, true).await;
    let mut s = greeted(&server.target).await;
    let target = server.target.clone();
    let stopping = tokio::spawn(server.stop());
    // The connection is told to finish and says goodbye on its own.
    let mut b = [0u8; 4];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut b))
        .await
        .expect("the connection was not told to drain")
        .unwrap();
    assert_eq!(&b, b"bye\n");
    stopping.await.unwrap();
    // And the listener is gone.
    assert!(connect(&target).await.is_err());
}

#[tokio::test]
async fn connections_that_ignore_the_drain_are_cut_at_the_grace_period() {
    let limits = Limits {
        max_connections: 4,
        grace: Duration::from_millis(200),
    };
    let server = start(limits, false).await;
    let mut s = greeted(&server.target).await;
    let counters = server.counters.clone();
    let t0 = Instant::now();
    server.stop().await;
    assert!(
        t0.elapsed() >= limits.grace,
        "returned before the grace period"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(counters.active.load(Ordering::Relaxed), 0);
}

#[test]
fn accept_failures_back_off_up_to_a_second() {
    let mut b = AcceptBackoff(AcceptBackoff::FIRST);
    let waits: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
    assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
}
