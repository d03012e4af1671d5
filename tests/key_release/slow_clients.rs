//! The broker's one server loop under clients that connect and then say
//! nothing, or drip their bytes: a genuine guest's release is not held up
//! (each connection, its handshake included, runs in its own task), the
//! connection cap holds, and the metrics count what happened.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

const RESOURCE: &str = "default/model-key/demo";

fn once() -> Backoff {
    Backoff {
        attempts: 1,
        first: Duration::from_millis(10),
        max: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(30),
    }
}

fn host_port(base: &str) -> String {
    base.rsplit_once("://").unwrap().1.to_string()
}

/// `n` silent clients and `n` that drip `drip` one byte every 50 ms, on
/// their own threads; they stop when the returned flag is set.
fn attack(base: &str, n: usize, drip: &'static [u8]) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let addr = host_port(base);
    let mut silent = Vec::new();
    let mut drippers = Vec::new();
    for _ in 0..n {
        silent.push(TcpStream::connect(&addr).unwrap());
        drippers.push(TcpStream::connect(&addr).unwrap());
    }
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut at = 0;
        while !flag.load(Ordering::Relaxed) {
            let b = [drip[at % drip.len()]];
            for d in &mut drippers {
                let _ = d.write_all(&b);
            }
            at += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(silent);
    });
    stop
}

/// One release, timed.
fn timed_release(c: &KbsClient) -> Duration {
    let t0 = Instant::now();
    let key = c.fetch_resource(RESOURCE, &genuine_guest()).unwrap();
    assert_eq!(key.as_slice(), &KEY);
    t0.elapsed()
}

#[test]
fn silent_and_dripping_clients_do_not_delay_a_release() {
    let b = start(300, true, &[(RESOURCE, String::new())]);
    // Default limits: 10 s for a handshake and for headers, far longer
    // than this test waits, so every attacker holds its connection.
    let t = start_tls(&b, |_| {});
    let tls = KbsClient::with_pinned_ca(&t.base, t.ca_pem.as_bytes(), once()).unwrap();
    let plain = KbsClient::new(&b.base, once());
    // Warm up (the simulated platform's first report, the TLS session).
    timed_release(&tls);
    timed_release(&plain);
    // 100 silent clients and 100 dripping a TLS record header at the TLS
    // broker; 100 silent and 100 dripping request headers at the plain one.
    let stop_tls = attack(&t.base, 100, &[0x16, 0x03, 0x01]);
    let stop_plain = attack(&b.base, 100, b"POST /kbs/v0/auth HTTP/1.1\r\nx-slow: ");
    for (name, st) in [("TLS", &t.state), ("plain", &b.state)] {
        let open = || {
            st.metrics
                .connections
                .active
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let until = Instant::now() + Duration::from_secs(10);
        while open() < 200 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            open() >= 200,
            "{name} broker: only {} attackers connected",
            open()
        );
    }
    for (name, c) in [("TLS", &tls), ("plain", &plain)] {
        for _ in 0..3 {
            let took = timed_release(c);
            assert!(
                took < Duration::from_secs(1),
                "{name} broker: a release took {took:?} behind 200 silent and slow clients"
            );
        }
    }
    for s in [stop_tls, stop_plain] {
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let text = t.state.metrics_text();
    assert!(text.contains("ciel_kbs_releases_total 4\n"), "{text}");
}

#[test]
fn the_connection_cap_holds_and_refusals_are_counted() {
    use std::sync::atomic::Ordering;
    let b = start(300, true, &[(RESOURCE, String::new())]);
    let t = start_tls(&b, |o| o.limits.max_connections = 8);
    let addr = host_port(&t.base);
    let held: Vec<_> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let counters = &t.state.metrics.connections;
    let until = Instant::now() + Duration::from_secs(10);
    while counters.active.load(Ordering::Relaxed) < 8 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(counters.active.load(Ordering::Relaxed), 8);
    // One more is closed at once, without a byte.
    let mut over = TcpStream::connect(&addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = over.read_to_end(&mut got);
    assert!(got.is_empty());
    // While the cap is full, a release cannot even connect.
    let c = KbsClient::with_pinned_ca(&t.base, t.ca_pem.as_bytes(), once()).unwrap();
    let e = c.fetch_resource(RESOURCE, &genuine_guest()).unwrap_err();
    assert!(matches!(e, KbsClientError::Unreachable { .. }), "{e}");
    assert!(counters.refused.load(Ordering::Relaxed) >= 2);
    // Once the holders leave, their slots serve again.
    drop(held);
    let until = Instant::now() + Duration::from_secs(10);
    while counters.active.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    timed_release(&c);
    // A request without a session is refused, and counted by its reason.
    let r = ureq::get(&format!("{}/kbs/v0/resource/{RESOURCE}", b.base))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let text = b.state.metrics_text();
    assert!(
        text.contains(
            "ciel_kbs_refusals_total{endpoint=\"resource\",reason=\"missing-session\"} 1\n"
        ),
        "{text}"
    );
    let text = t.state.metrics_text();
    assert!(text.contains("ciel_kbs_releases_total 1\n"), "{text}");
    assert!(
        text.contains("ciel_kbs_request_duration_seconds_count{endpoint=\"attest\"} 1\n"),
        "{text}"
    );
    let refused = counters.refused.load(Ordering::Relaxed);
    assert!(
        text.contains(&format!("ciel_kbs_connections_refused_total {refused}\n")),
        "{text}"
    );
}
