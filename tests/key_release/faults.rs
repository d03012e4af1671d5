//! A broker that cannot write its audit log, and a replayed key-release
//! response.

use super::*;

/// An audit disk that is full while the flag is set.
struct AuditDisk {
    full: Arc<std::sync::atomic::AtomicBool>,
    written: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl AuditSink for AuditDisk {
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.written.lock().unwrap().extend_from_slice(bytes);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.written.lock().unwrap().truncate(len as usize);
        Ok(())
    }
}

#[test]
fn a_broker_that_cannot_write_its_audit_log_releases_nothing() {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let disk = AuditDisk {
        full: full.clone(),
        written: written.clone(),
    };
    let policy = format!("[snp]\nmeasurements = [\"{}\"]\n", measurement());
    let b = start_with_audit(300, true, &[("default/model-key/demo", policy)], |c| {
        let empty = verify(files(c).1).unwrap();
        AuditLog::with_sink(files(c).1, Box::new(disk), empty)
    });
    let source = genuine_guest();
    let err = client(&b)
        .fetch_resource("default/model-key/demo", &source)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit log cannot be written") && err.contains("urn:ciel:kbs:audit-failure"),
        "{err}"
    );
    assert!(written.lock().unwrap().is_empty());

    // Room again: the same broker releases, and the release is on record.
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    let key = client(&b)
        .fetch_resource("default/model-key/demo", &source)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    let log = String::from_utf8(written.lock().unwrap().clone()).unwrap();
    assert!(log.contains("\"decision\":\"release\""), "{log}");
}

/// Reads one HTTP/1.1 message (head and a `content-length` body) from `r`;
/// `None` at the end of the stream.
fn read_http_message(r: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        message.extend_from_slice(line.as_bytes());
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).ok()?;
    message.extend_from_slice(&body);
    Some(message)
}

/// A relay in front of the broker that keeps the broker's answer to the
/// first `GET /kbs/v0/resource` it carries and, from then on, answers every
/// later one with that recording: a replayed key-release response.
fn replaying_relay(upstream: std::net::SocketAddr) -> String {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let recorded: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut client) = conn else { return };
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut server = std::net::TcpStream::connect(upstream).unwrap();
                let mut from_client = std::io::BufReader::new(client.try_clone().unwrap());
                let mut from_server = std::io::BufReader::new(server.try_clone().unwrap());
                while let Some(request) = read_http_message(&mut from_client) {
                    server.write_all(&request).unwrap();
                    let Some(answer) = read_http_message(&mut from_server) else {
                        return;
                    };
                    let mut answer = answer;
                    if request.starts_with(b"GET /kbs/v0/resource/") {
                        let mut r = recorded.lock().unwrap();
                        match r.as_ref() {
                            Some(old) => answer = old.clone(),
                            None => *r = Some(answer.clone()),
                        }
                    }
                    if client.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A key-release response replayed from an earlier session is useless to
/// the guest: it is encrypted to that session's key, so the guest refuses
/// it instead of taking it for its key.
#[test]
fn a_replayed_key_release_response_is_refused() {
    let policy = format!("[snp]\nmeasurements = [\"{}\"]\n", measurement());
    let b = start(300, true, &[("default/model-key/demo", policy)]);
    let upstream = b.base.trim_start_matches("http://").parse().unwrap();
    let relay = Broker {
        base: replaying_relay(upstream),
        ..b
    };
    let source = genuine_guest();
    // The first session's answer is genuine (and recorded on the way).
    let key = client(&relay)
        .fetch_resource("default/model-key/demo", &source)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    // The second session gets the first one's answer.
    match client(&relay).fetch_resource("default/model-key/demo", &source) {
        Err(KbsClientError::Jwe(e)) => {
            assert!(matches!(e, ciel_protocol::jwe::JweError::Unwrap), "{e}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(k) => panic!(
            "a replayed response was taken for a key ({} bytes)",
            k.len()
        ),
    }
}
