//! The Python SDK (python/): its pytest suite against this running system,
//! with the official openai client over the SDK's attested transports, and
//! an impostor that serves the guest's genuine evidence with another key.

use super::*;

/// Runs `python/tests` with the interpreter scripts/python-sdk.sh prepared
/// (the wheel installed; scripts/test.sh names it in CIEL_SDK_PYTHON).
/// Without it, says loudly that it did not run.
pub fn the_python_sdk_passes_its_tests(
    sys: &System,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    expected: &str,
) {
    let Some(python) = std::env::var_os("CIEL_SDK_PYTHON") else {
        eprintln!(
            "WARNING: the Python SDK tests did NOT run: CIEL_SDK_PYTHON is not set \
             (scripts/test.sh sets it; or export CIEL_SDK_PYTHON=$(scripts/python-sdk.sh))"
        );
        return;
    };
    let impostor_port = impostor(&attestation_document(rt, client));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("python/tests"))
        .env("CIEL_URL", sys.s("url"))
        .env("CIEL_POLICY", sys.s("policy"))
        .env("CIEL_MODEL", "smollm2-135m-instruct")
        .env("CIEL_MODEL_SHA256", sys.s("model_sha256"))
        .env("CIEL_EMBEDDING_MODEL", "all-minilm-l6-v2")
        .env(
            "CIEL_EMBEDDING_MODEL_SHA256",
            sys.s("embedding_model_sha256"),
        )
        .env("CIEL_EXPECTED", expected)
        .env("CIEL_GPUS", sys.info["gpus"].to_string())
        .env(
            "CIEL_IMPOSTOR_URL",
            format!("https://127.0.0.1:{impostor_port}"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "pytest failed:\n{stdout}{stderr}");
    assert!(stdout.contains(" passed"), "{stdout}{stderr}");
    eprintln!("python SDK: {}", stdout.lines().last().unwrap_or_default());
}
