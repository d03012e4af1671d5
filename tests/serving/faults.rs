//! Faults: a tampered model, a key broker that is down, silent or slow, a
//! host shim killed mid-stream, a guest restarted under its clients.

use super::*;

/// The host serves a sealed model with one flipped byte: the guest stops
/// with an error naming the chunk and never opens its API.
pub fn a_tampered_model_is_never_served(sys: &System) {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join("tampered");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(work.join("models/smollm2.csm")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(dir.join("smollm2.csm"), &bytes).unwrap();
    let (guest, api) = boot_guest_against(sys, &dir, &sys.s("kbs_url"), &[]);
    let stderr = String::from_utf8_lossy(&guest.stderr);
    assert!(
        !guest.status.success(),
        "the guest served a tampered model:\n{stderr}"
    );
    assert!(
        stderr.contains("chunk"),
        "the error should name the chunk:\n{stderr}"
    );
    assert!(
        !api.exists(),
        "the guest opened its API with a tampered model"
    );
}

/// No broker at boot: the guest retries with backoff, then stops with an
/// error saying so, and never serves.
pub fn a_key_broker_that_is_down_is_a_clear_final_error(sys: &System) {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join("nobroker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(work.join("models/smollm2.csm"), dir.join("smollm2.csm")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let (guest, api) = boot_guest_against(sys, &dir, &format!("https://127.0.0.1:{port}"), &[]);
    let stderr = String::from_utf8_lossy(&guest.stderr);
    assert_eq!(guest.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unreachable after 6 attempts"), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "no backoff between attempts"
    );
    assert!(!api.exists());
}

/// A TCP relay to `target` that holds every chunk for `delay` in each
/// direction: a slow network or an overloaded broker.
fn slow_relay(target: String, delay: Duration) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let pump = move |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            std::thread::sleep(delay);
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            std::thread::spawn(move || pump(client, server));
            std::thread::spawn(move || pump(s2, c2));
        }
    });
    port
}

/// Waits for a booting guest's API socket; panics with its log if the guest
/// exits first.
pub fn wait_for_api(guest: &mut Child, api: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !api.exists() {
        if let Ok(Some(status)) = guest.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the guest exited ({status}) before serving:\n{log}");
        }
        assert!(Instant::now() < deadline, "the guest did not boot");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker that accepts connections and never answers: each attempt
/// times out, and after the last the guest stops with an error saying so.
pub fn a_silent_key_broker_is_a_clear_final_error(sys: &System) {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join("silent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(work.join("models/smollm2.csm"), dir.join("smollm2.csm")).unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Hold each connection open without a word.
        silent.incoming().take(2).collect::<Vec<_>>()
    });
    let (guest, api) = boot_guest_against(
        sys,
        &dir,
        &format!("https://127.0.0.1:{port}"),
        &["--kbs-attempts", "2", "--kbs-timeout", "1"],
    );
    let stderr = String::from_utf8_lossy(&guest.stderr);
    assert_eq!(guest.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unreachable after 2 attempts"), "{stderr}");
    assert!(stderr.to_lowercase().contains("timeout"), "{stderr}");
    assert!(!api.exists());
    assert_eq!(held.join().unwrap().len(), 2);
}

/// One guest behind two host shims. Killing one shim mid-stream ends that
/// client's stream with an error, promptly, while the guest serves on
/// through the other. Then the guest restarts (booting through a slow key
/// broker): while it is down requests fail cleanly, and once it is back the
/// same client verifies its new TLS key and evidence on the next connection.
pub fn hosts_die_and_guests_restart(sys: &System, rt: &tokio::runtime::Runtime, expected: &str) {
    let BootedGuest {
        dir,
        api,
        host: host_a,
        mut guest,
        ..
    } = boot_guest(sys, "restart", "guest1.log", &[]);
    let mut host_b = Host::start(&dir.join("b"), &api, false);
    let client_a = rt
        .block_on(Client::connect(&host_a.url, sys.policy()))
        .unwrap();
    let client_b = rt
        .block_on(Client::connect(&host_b.url, sys.policy()))
        .unwrap();
    let first_key = client_a.verification().claims.tls_spki_sha256.clone();
    assert_eq!(client_b.verification().claims.tls_spki_sha256, first_key);

    // Host B dies (SIGKILL) after the first piece of a long answer.
    let req = chat_request("What is the capital of France?", 16);
    let long = chat_request("Write a long story about a lighthouse.", 200);
    let mut pieces = 0;
    let cut = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(120),
            client_b.chat_stream(&long, |_| {
                pieces += 1;
                if pieces == 1 {
                    host_b.kill();
                }
            }),
        )
        .await
    });
    match cut {
        Ok(Err(ClientError::Interrupted { pieces: got, .. })) => {
            assert!(
                got >= 1 && got == pieces,
                "{got} pieces counted, {pieces} seen"
            )
        }
        Ok(Err(e)) => panic!("not an interrupted stream: {e}"),
        Ok(Ok(finish)) => panic!("the stream finished ({finish}) through a dead host"),
        Err(_) => panic!("the client hung after its host died"),
    }
    // The guest is unharmed and serves the other host's clients.
    assert!(
        guest.0.try_wait().unwrap().is_none(),
        "the guest died with the host"
    );
    assert_eq!(
        content(&rt.block_on(client_a.chat(&req)).unwrap()),
        expected
    );

    // The guest restarts. Meanwhile requests fail at once, not hang.
    let _ = Command::new("kill")
        .args(["-TERM", &guest.0.id().to_string()])
        .status();
    let _ = guest.0.wait();
    let _ = std::fs::remove_file(&api);
    let down = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), client_a.chat(&req)).await
    });
    assert!(
        matches!(down, Ok(Err(_))),
        "a request to a stopped guest: {down:?}"
    );
    let kbs = sys.s("kbs_url");
    let slow = slow_relay(
        kbs.trim_start_matches("https://").to_string(),
        Duration::from_millis(300),
    );
    let log2 = dir.join("guest2.log");
    let mut guest = Running(
        guest_command(
            sys,
            &dir,
            &api,
            &format!("https://127.0.0.1:{slow}"),
            &["--kbs-timeout", "20"],
            Stdio::from(std::fs::File::create(&log2).unwrap()),
        )
        .spawn()
        .unwrap(),
    );
    wait_for_api(&mut guest.0, &api, &log2);
    assert_eq!(
        content(&rt.block_on(client_a.chat(&req)).unwrap()),
        expected
    );
    let again = rt.block_on(client_a.fresh_attestation()).unwrap();
    assert!(again.accepted);
    assert_ne!(
        again.claims.tls_spki_sha256, first_key,
        "a new guest, a new key"
    );
    assert_eq!(again.claims.model.sha256, sys.s("model_sha256"));
    let _ = Command::new("kill")
        .args(["-TERM", &guest.0.id().to_string()])
        .status();
    let _ = guest.0.wait();
}
