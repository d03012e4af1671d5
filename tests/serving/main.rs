//! The serving path across real processes — `ciel demo --serve` starts the
//! key broker, the host shim and the guest (simulated platform, Unix
//! sockets for vsock) — and what a client, a hostile host and a tampered
//! model can and cannot do to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_features;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod faults;
mod gpus;
mod hostile;
mod python_sdk;
mod slow_clients;
mod system;

use api_features::*;
use clients::*;
use faults::*;
use gpus::*;
use hostile::*;
use python_sdk::*;
use slow_clients::*;
use system::*;

use ciel_attestation::Policy;
use ciel_client::{Client, ClientError};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn chat_request(prompt: &str, max_tokens: usize) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    })
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn serving_system_end_to_end() {
    let sys = System::start();
    let rt = rt();
    let url = sys.s("url");
    let client = rt.block_on(Client::connect(&url, sys.policy())).unwrap();
    let v = client.verification();
    assert!(v.accepted);
    assert_eq!(v.claims.model.sha256, sys.s("model_sha256"));
    assert!(v.verdict.as_ref().unwrap().simulated);
    // Its two simulated GPUs, each checked, and the set.
    assert_eq!(v.claims.gpus.len(), 2);
    assert_eq!(
        v.checks.iter().filter(|c| c.name == "gpu" && c.ok).count(),
        2,
        "{:?}",
        v.checks
    );
    assert!(v.gpus.as_ref().unwrap().accepted);

    // The model list, and a fresh attestation bound to a client nonce.
    let models = rt.block_on(client.models()).unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");
    let fresh = rt.block_on(client.fresh_attestation()).unwrap();
    assert!(fresh.checks.iter().any(|c| c.name == "freshness" && c.ok));
    assert!(fresh.checks.iter().any(|c| c.name == "same guest" && c.ok));
    assert_ne!(
        fresh.claims.gpus[0].evidence_sha256, v.claims.gpus[0].evidence_sha256,
        "fresh GPU reports for the client's nonce"
    );

    // Streaming gives exactly the non-streamed answer (greedy).
    let req = chat_request("What is the capital of France?", 16);
    let whole = content(&rt.block_on(client.chat(&req)).unwrap());
    assert!(!whole.is_empty());
    let mut streamed = String::new();
    let finish = rt
        .block_on(client.chat_stream(&req, |t| streamed.push_str(t)))
        .unwrap();
    assert_eq!(streamed, whole);
    assert!(finish == "length" || finish == "stop", "{finish}");

    // Plain completions.
    let c = rt
        .block_on(client.completions(&json!({"prompt": "One, two, three,", "max_tokens": 4})))
        .unwrap();
    assert_eq!(c["object"], "text_completion");
    assert!(c["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    // OpenAI-style errors.
    let err = |body: Value| match rt.block_on(client.chat(&body)) {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    };
    let (status, msg) =
        err(json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(status, 404, "{msg}");
    let (status, msg) =
        err(json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}));
    assert_eq!(status, 400);
    assert!(msg.contains("max_tokens"), "{msg}");
    let (status, msg) = err(json!({"messages": [{"role": "wizard", "content": "x"}]}));
    assert_eq!(status, 400);
    assert!(msg.contains("role"), "{msg}");
    let (status, msg) = err(json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0.0}));
    assert_eq!(status, 400);
    assert!(msg.contains("top_p"), "{msg}");
    // A parameter this server does not implement is refused, not ignored.
    let (status, msg) = err(json!({
        "messages": [{"role": "user", "content": "x"}],
        "tools": [],
    }));
    assert_eq!(status, 400);
    assert!(msg.contains("tools"), "{msg}");
    let (status, _) = err(json!({"messages": "not a list"}));
    assert_eq!(status, 422);

    logprobs_in_both_shapes_and_n_choices(&rt, &client, &whole);
    answers_in_json_and_to_a_schema(&rt, &client);
    silent_and_dripping_clients_do_not_delay_an_attested_client(&sys, &rt);
    sixteen_concurrent_clients_each_get_their_own_answer(&sys, &rt);
    thirty_two_clients_under_load_for_a_bounded_time(&sys, &rt);
    a_hostile_host_cannot_alter_the_stream(&sys, &rt);
    clients_refuse_what_their_policy_does_not_allow(&sys, &rt);
    evidence_not_bound_to_the_tls_key_is_refused(&sys, &rt, &client);
    the_local_proxy_serves_unmodified_openai_clients(&sys, &whole);
    the_python_sdk_passes_its_tests(&sys, &rt, &client, &whole);
    ciel_chat_answers_one_shot_and_interactively(&sys, &whole);
    a_tampered_model_is_never_served(&sys);
    a_key_broker_that_is_down_is_a_clear_final_error(&sys);
    a_silent_key_broker_is_a_clear_final_error(&sys);
    hosts_die_and_guests_restart(&sys, &rt, &whole);
    gpu_evidence_too_large_for_a_certificate_is_fetched_first(&sys, &rt, &whole);
    the_certificate_evidence_is_refreshed(&sys);

    // No prompt or completion text in any log (the demo's, and those of
    // the guests restarted under their clients).
    let work = PathBuf::from(sys.s("workdir"));
    let restart = sys.dir.path().join("restart");
    let logs = ["guest.log", "host.log", "kbs.log"]
        .map(|l| work.join(l))
        .into_iter()
        .chain(["guest1.log", "guest2.log"].map(|l| restart.join(l)));
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.is_empty(), "{} is empty", log.display());
        for secret in [
            "capital of France",
            "lighthouse",
            "short sentence about",
            whole.trim(),
        ] {
            assert!(
                !text.contains(secret),
                "{} contains {secret:?}",
                log.display()
            );
        }
    }

    // Memory stayed bounded through the load, the hostile relays, the
    // refusals and the faults: the model (~90 MB) and its working set, with
    // room for a debug build, not a growth per request.
    let peak = sys.guest_peak_rss_kib();
    eprintln!("guest peak RSS after every scenario: {peak} KiB");
    assert!(peak < 1024 * 1024, "guest peak RSS {peak} KiB");

    // The host only ever counted bytes.
    let metrics = ureq::get(sys.s("metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("ciel_host_bytes_from_guest_total{service=\"api\"}"));
    drop(sys);

    // The same system on the simulated TDX platform, after it (one system
    // at a time keeps the timing-bound checks above honest).
    the_system_serves_on_tdx_too(&rt, &whole);
}
