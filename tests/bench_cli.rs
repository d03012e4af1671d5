//! `ciel bench --json`: the figures each suite promises are there, finite
//! and positive, with their baselines. (Nothing here asserts speed.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn quick_json_has_every_figure_of_the_fast_suites() {
    let run = common::ciel([
        "bench",
        "--quick",
        "--json",
        "verify",
        "keyrelease",
        "proxy",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["quick"], true);
    assert!(out["machine"]["threads"].as_u64().unwrap() >= 1);
    let figures = out["figures"].as_array().unwrap();
    let find = |suite: &str, name: &str| {
        figures
            .iter()
            .find(|f| f["suite"] == suite && f["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no {suite} figure named {name:?} in {figures:#?}"))
    };
    for (suite, name, with_ratio) in [
        ("verify", "SNP report + VCEK/ASK/ARK (Genoa): p50", true),
        ("verify", "SNP report + VCEK/ASK/ARK (Genoa): p99", false),
        ("verify", "TDX quote + collateral: p50", true),
        ("verify", "NVIDIA H100 report + chain: per core", false),
        ("keyrelease", "1 guest: p50", true),
        ("keyrelease", "1 guest: p99", false),
        ("keyrelease", "16 concurrent guests", true),
        ("proxy", "through the host shim", true),
        ("proxy", "latency the shim adds", false),
    ] {
        let f = find(suite, name);
        let v = f["value"].as_f64().unwrap();
        assert!(v.is_finite(), "{f}");
        assert!(v > 0.0 || name.contains("adds"), "{f}");
        assert_eq!(f["ratio"].is_number(), with_ratio, "{f}");
        if with_ratio {
            assert!(f["baseline"].is_string(), "{f}");
        }
    }
}

#[test]
fn unknown_suites_are_refused() {
    let run = common::ciel(["bench", "warp-drive"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown suite \"warp-drive\""),
        "{}",
        run.stderr
    );
}

/// `device` on the CPU: candle's kernels (what runs on a GPU) against ours
/// in the same run — the load figures, and greedy decoding choosing the
/// same tokens (a divergence that is not a near-tie fails the suite).
#[test]
fn the_device_suite_compares_candles_pass_with_ours() {
    let run = common::ciel([
        "bench".as_ref(),
        "--quick".as_ref(),
        "--json".as_ref(),
        "--model".as_ref(),
        ciel_engine::demo_model_path().as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "device".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    let figures = out["figures"].as_array().unwrap();
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f["suite"] == "device" && f["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no device figure {name:?} in {figures:#?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        value("greedy tokens equal to ours on the CPU (of 16)"),
        16.0
    );
    for name in [
        "plaintext model load onto cpu",
        "sealed model load onto cpu",
        "decode, ours on the CPU",
        "decode with candle's kernels on cpu",
    ] {
        let v = value(name);
        assert!(v.is_finite() && v > 0.0, "{name}: {v}");
    }
    let run = common::ciel(["bench", "--device", "tpu:0", "device"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("expected cpu or cuda:N"),
        "{}",
        run.stderr
    );
}
