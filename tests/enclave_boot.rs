//! `ciel enclave boot --sim` across real processes: the owner seals the demo
//! model and registers its key at a TLS broker; a simulated guest whose
//! measurement the policy names receives the key, unseals in memory and
//! answers as llama.cpp does; a guest the policy does not name gets nothing.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{ciel, data_dir, seal_registered, sim_report, start_kbs};
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn boot(sealed: &Path, url: &str, kb: &Path) -> common::Run {
    ciel([
        "enclave".as_ref(),
        "boot".as_ref(),
        "--sim".as_ref(),
        "--kbs".as_ref(),
        url.as_ref(),
        "--kbs-ca".as_ref(),
        kb.join("tls-ca.pem").as_os_str(),
        "--model".as_ref(),
        sealed.as_os_str(),
        "--prompt".as_ref(),
        "Explain in a few sentences why the sky is blue.".as_ref(),
        // llama.cpp's first near-tie on this question is at token 13.
        "--max-tokens".as_ref(),
        "12".as_ref(),
    ])
}

#[test]
fn simulated_guest_receives_the_key_and_answers_only_if_the_policy_names_it() {
    let model = ciel_engine::demo_model_path();
    assert!(
        model.is_file(),
        "demo model {} missing: run scripts/fetch-model.sh",
        model.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let kb = tmp.path().join("kbs");
    // Creates the simulated hierarchy in the data dir `ciel enclave boot` uses.
    let sim = sim_report("snp", "00", &tmp.path().join("probe.bin"));
    assert_eq!(sim.code, 0, "{}", sim.stderr);
    let ark = std::fs::read(data_dir().join("sim/snp/ark.der")).unwrap();
    let fp = hex::encode(ring::digest::digest(&ring::digest::SHA256, &ark));
    let ours = hex::encode(ciel_attestation::sim::SimSnpReport::default().measurement);
    let other = hex::encode([0x11u8; 48]);
    let server = start_kbs(
        &kb,
        &fp,
        &[
            ("default/model-key/ours", &ours),
            ("default/model-key/other", &other),
        ],
        Stdio::null(),
    );
    let url = server.url.clone();

    let sealed = tmp.path().join("ours.csm");
    seal_registered(&model, &sealed, "default/model-key/ours", &url, &kb);
    let run = boot(&sealed, &url, &kb);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("SIMULATED"), "{}", run.stderr);
    let answer = run.stdout.trim_end();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::env::var_os("CIEL_REFERENCE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("../shared/reference/smollm2-llamacpp.json")
                }),
        )
        .unwrap(),
    )
    .unwrap();
    let want = reference["greedy"][0]["text"].as_str().unwrap();
    assert!(
        answer.len() >= 40 && want.starts_with(answer),
        "answer {answer:?} is not a prefix of llama.cpp's {want:?}"
    );

    // The same model sealed under a key whose policy names another
    // measurement: refused at the broker, nothing unsealed, nothing answered.
    let denied = tmp.path().join("other.csm");
    seal_registered(&model, &denied, "default/model-key/other", &url, &kb);
    let run = boot(&denied, &url, &kb);
    assert_ne!(run.code, 0);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("key release for default/model-key/other"),
        "{}",
        run.stderr
    );
    let audit = std::fs::read_to_string(kb.join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("default/model-key/other") && l.contains("\"deny")),
        "{audit}"
    );
}

/// `ciel enclave serve` with `extra` and every address unreachable: what
/// fails must fail before anything is reached.
fn serve_nowhere(extra: &[&str]) -> common::Run {
    let mut args = vec![
        "enclave",
        "serve",
        "--sim",
        "--kbs",
        "https://127.0.0.1:9",
        "--kbs-ca",
        "/nonexistent/ca.pem",
        "--model-from",
        "unix:/nonexistent/blobs.sock",
        "--model-blob",
        "model.csm",
        "--listen",
        "unix:/nonexistent/api.sock",
    ];
    args.extend_from_slice(extra);
    ciel(args)
}

/// Batching limits that could never serve are refused before anything
/// else (no key release, no model), naming both flags.
#[test]
fn the_guest_refuses_a_pass_too_small_for_its_batch_at_once() {
    let run = serve_nowhere(&["--max-batch", "64", "--step-tokens", "32"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("--step-tokens 32") && run.stderr.contains("--max-batch 64"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("at least 80"), "{}", run.stderr);
}

/// A GPU the guest cannot use, or a batch a GPU does not run, is refused
/// at once too, before any key is asked for.
#[test]
fn the_guest_refuses_a_device_it_cannot_use_at_once() {
    let run = serve_nowhere(&["--device", "cuda:0", "--max-batch", "4"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("--max-batch 4 with --device cuda:0"),
        "{}",
        run.stderr
    );
    let run = serve_nowhere(&["--device", "gpu0"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("expected cpu or cuda:N"),
        "{}",
        run.stderr
    );
    if !ciel_engine::device::ComputeDevice::CUDA_BUILT {
        let run = serve_nowhere(&["--device", "cuda:0"]);
        assert_ne!(run.code, 0);
        assert!(
            run.stderr
                .contains("--device cuda:0: this ciel was built without CUDA support"),
            "{}",
            run.stderr
        );
    }
}
