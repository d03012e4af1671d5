//! The client commands' refusals that need no guest: bad URLs, nothing
//! listening, a proxy asked to listen beyond loopback.
#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn client_commands_fail_clearly_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "[snp]\nmeasurements = []\n").unwrap();
    let p = policy.to_str().unwrap();

    let run = common::ciel(["verify", "http://127.0.0.1:1", "--policy", p]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("expected https://HOST:PORT"),
        "{}",
        run.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}");
    let run = common::ciel(["chat", url.as_str(), "--policy", p, "hello"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("connecting to 127.0.0.1:{port}")),
        "{}",
        run.stderr
    );

    let run = common::ciel([
        "proxy",
        "--listen",
        "0.0.0.0:8080",
        "--upstream",
        url.as_str(),
        "--policy",
        p,
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("loopback only"), "{}", run.stderr);

    let run = common::ciel([
        "verify",
        url.as_str(),
        "--policy",
        "/nonexistent/policy.toml",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/policy.toml"),
        "{}",
        run.stderr
    );
}
