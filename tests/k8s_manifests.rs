//! The Kubernetes manifests (`deploy/k8s/`): every overlay renders with
//! `kubectl kustomize` and validates against the Kubernetes 1.37 schemas
//! (`kubernetes-validate --strict`), and what matters holds: the model server
//! runs in its overlay's Kata confidential runtime class with the init-data
//! annotation whose bytes are exactly the init-data it reads, nothing is
//! privileged, images are pinned by digest, secrets stay out of ConfigMaps.
//! No cluster runs here; these are the checks that need none.
//!
//! Needs kubectl and the tests' Python environment (kubernetes-validate,
//! PyYAML): `./scripts/test.sh` runs it as
//!   CIEL_KUBECTL=$(command -v kubectl) CIEL_TEST_PYTHON=$(./scripts/python-env.sh) \
//!     cargo test --test k8s_manifests -- --ignored
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: see this test's header"))
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s")
}

/// `kubectl kustomize DIR`, as YAML.
fn render(dir: &Path) -> String {
    let out = Command::new(env_path("CIEL_KUBECTL"))
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubernetes-validate -k 1.37.0 --strict` on the YAML: (passed, output).
fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env_path("CIEL_TEST_PYTHON"))
        .args(["-m", "kubernetes_validate", "-k", "1.37.0", "--strict"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The rendered documents as JSON values (PyYAML in the tests' environment).
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(env_path("CIEL_TEST_PYTHON"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn containers(pod_spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod_spec[k].as_array().into_iter().flatten())
        .collect()
}

/// Checks every workload: no privilege, limits, pinned images.
fn check_workloads(docs: &[Value], what: &str) {
    let workloads = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet");
    assert!(workloads.clone().count() >= 1, "{what}: no workload");
    for d in workloads {
        let name = d["metadata"]["name"].as_str().unwrap();
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{what}: {name}"
        );
        assert_ne!(spec["hostNetwork"], true, "{what}: {name}");
        assert_ne!(spec["hostPID"], true, "{what}: {name}");
        for c in containers(spec) {
            let cname = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            assert_ne!(sc["privileged"], true, "{what}: {name}/{cname} privileged");
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{what}: {name}/{cname} may escalate"
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what}: {name}/{cname}"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{what}: {name}/{cname} has no memory limit"
            );
            assert!(
                c["resources"]["limits"]["cpu"].is_string(),
                "{what}: {name}/{cname} has no CPU limit"
            );
            let image = c["image"].as_str().unwrap();
            let digest = image.rsplit_once("@sha256:").map(|(_, d)| d).unwrap_or("");
            assert!(
                digest.len() == 64 && digest.chars().all(|ch| ch.is_ascii_hexdigit()),
                "{what}: {name}/{cname} image {image} is not pinned by digest"
            );
        }
    }
}

/// No private key, master key or admin key in any ConfigMap.
fn check_no_secrets_in_config_maps(docs: &[Value], what: &str) {
    for cm in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        let name = cm["metadata"]["name"].as_str().unwrap();
        for (file, value) in cm["data"].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or("");
            assert!(
                !text.contains("PRIVATE KEY") && !file.ends_with(".key"),
                "{what}: ConfigMap {name} carries secret material in {file}"
            );
        }
    }
}

/// The broker configuration in the rendered ConfigMap, loaded as `ciel kbs
/// serve` loads it: refused as shipped (its placeholders are not hex, so a
/// broker never starts on them), loaded once they are replaced.
fn broker_config(docs: &[Value], what: &str) -> ciel_keybroker::config::Config {
    const PLACEHOLDERS: [(&str, usize); 5] = [
        ("REPLACE-WITH-YOUR-ADMIN-PUBLIC-KEY", 32),
        ("REPLACE-with-the-pod-VM-launch-measurement", 48),
        ("REPLACE-with-the-init-data-HOST_DATA", 32),
        ("REPLACE-with-the-pod-VM-MRTD", 48),
        ("REPLACE-with-the-init-data-MRCONFIGID", 48),
    ];
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("ciel-kbs-config"))
        })
        .unwrap_or_else(|| panic!("{what}: no ciel-kbs-config ConfigMap"));
    let dir = tempfile::tempdir().unwrap();
    let write = |replace: bool| {
        for (file, value) in cm["data"].as_object().unwrap() {
            let mut text = value.as_str().unwrap().to_string();
            if replace {
                for (placeholder, len) in PLACEHOLDERS {
                    text = text.replace(placeholder, &hex::encode(vec![7u8; len]));
                }
                assert!(
                    !text.contains("\"REPLACE"),
                    "{what}: {file}: a new placeholder"
                );
            }
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        ciel_keybroker::config::Config::load(&dir.path().join("kbs.toml"))
    };
    assert!(
        write(false).is_err(),
        "{what}: the broker starts on placeholders"
    );
    write(true).unwrap_or_else(|e| panic!("{what}: the broker's kbs.toml does not load: {e}"))
}

fn gunzip_base64(text: &str) -> String {
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let mut out = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[test]
#[ignore = "needs kubectl and kubernetes-validate: see the header"]
fn every_overlay_renders_validates_and_keeps_what_matters() {
    for (overlay, runtime_class, field) in [
        ("snp", "kata-qemu-snp", 32),
        ("tdx", "kata-qemu-tdx", 48),
        ("nvidia-gpu", "kata-qemu-nvidia-gpu-snp", 32),
    ] {
        let dir = deploy().join("overlays").join(overlay);
        let yaml = render(&dir);
        let (ok, report) = validate(&yaml);
        assert!(ok, "{overlay} does not validate against 1.37:\n{report}");
        let docs = documents(&yaml);
        check_workloads(&docs, overlay);
        check_no_secrets_in_config_maps(&docs, overlay);

        let server = find(&docs, "Deployment", "ciel-model-server");
        let pod = &server["spec"]["template"];
        assert_eq!(pod["spec"]["runtimeClassName"], runtime_class, "{overlay}");
        // The init-data Kata binds (the annotation) is byte for byte the
        // document the workload reads (its ConfigMap) and the overlay's file.
        let file = std::fs::read_to_string(dir.join("initdata.toml")).unwrap();
        let annotation = pod["metadata"]["annotations"][ciel_protocol::initdata::KATA_ANNOTATION]
            .as_str()
            .unwrap_or_else(|| panic!("{overlay}: no init-data annotation"));
        assert_eq!(
            gunzip_base64(annotation),
            file,
            "{overlay}: the annotation is not initdata.toml; regenerate it with `ciel image init-data {} --kustomize-patch ciel-model-server`",
            dir.join("initdata.toml").display()
        );
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "init-data")
            .unwrap();
        let cm = find(
            &docs,
            "ConfigMap",
            volume["configMap"]["name"].as_str().unwrap(),
        );
        assert_eq!(cm["data"]["initdata.toml"], file.as_str(), "{overlay}");
        let init = ciel_protocol::initdata::InitData::parse(&file).unwrap();
        assert_eq!(init.field(field).len(), field);
        let settings = ciel_enclave::guest_settings::GuestSettings::from_init_data(&init).unwrap();
        assert_eq!(
            settings.kbs.as_deref(),
            Some("https://ciel-kbs.ciel.svc:8443"),
            "{overlay}: the guest must be pointed at the broker's Service"
        );
        let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--coco-agent") && args.contains(&"--init-data"),
            "{args:?}"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
            "/healthz"
        );
        if overlay == "nvidia-gpu" {
            assert_eq!(
                pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/pgpu"],
                "1"
            );
        }

        // The broker's keys come from the Secret, its config from a ConfigMap.
        let broker = find(&docs, "StatefulSet", "ciel-kbs");
        assert_eq!(
            broker["spec"]["replicas"], 1,
            "{overlay}: one broker on its files"
        );
        assert_eq!(
            broker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "state",
            "{overlay}: the broker's key store and audit log need their volume"
        );
        let volumes = broker["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == "ciel-kbs")
        );
        for name in ["ciel-kbs", "ciel-model-server"] {
            find(&docs, "NetworkPolicy", name);
        }
        assert!(
            broker_config(&docs, overlay).storage.files().is_some(),
            "{overlay}: one broker keeps its state in files"
        );
        let ns = find(&docs, "Namespace", "ciel");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }

    // The broker as replicas on a shared database: two or more, no state
    // volume, [postgres] over TLS with its password in the Secret, egress
    // to the database only, a disruption budget.
    let yaml = render(&deploy().join("overlays/snp-broker-replicas"));
    let (ok, report) = validate(&yaml);
    assert!(ok, "snp-broker-replicas does not validate:\n{report}");
    let docs = documents(&yaml);
    check_workloads(&docs, "snp-broker-replicas");
    check_no_secrets_in_config_maps(&docs, "snp-broker-replicas");
    let broker = find(&docs, "StatefulSet", "ciel-kbs");
    assert!(broker["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert!(
        broker["spec"].get("volumeClaimTemplates").is_none()
            && !docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"),
        "replicas with a state volume"
    );
    let mounts = &broker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(
        !mounts.to_string().contains("/var/lib/ciel-kbs"),
        "{mounts}"
    );
    match broker_config(&docs, "snp-broker-replicas").storage {
        ciel_keybroker::config::Storage::Postgres(pg) => {
            assert!(pg.ca_file.is_some() && pg.password_file.is_some(), "{pg:?}");
            for f in [pg.ca_file.unwrap(), pg.password_file.unwrap()] {
                assert!(f.starts_with("/etc/ciel-kbs/secret"), "{}", f.display());
            }
        }
        other => panic!("snp-broker-replicas: the broker's storage is {other:?}"),
    }
    let egress = &find(&docs, "NetworkPolicy", "ciel-kbs")["spec"]["egress"];
    assert!(egress.to_string().contains("5432"), "{egress}");
    find(&docs, "PodDisruptionBudget", "ciel-kbs");

    // The verifying proxy joins the example client as a sidecar.
    let yaml = render(&deploy().join("examples/in-cluster-client"));
    let (ok, report) = validate(&yaml);
    assert!(ok, "the in-cluster client does not validate:\n{report}");
    let docs = documents(&yaml);
    check_workloads(&docs, "in-cluster-client");
    let client = find(&docs, "Deployment", "example-client");
    let names: Vec<&str> = client["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["client", "ciel-verifying-proxy"]);

    // The validator is live: a field Kubernetes does not know fails it.
    let broken =
        render(&deploy().join("overlays/snp")).replacen("runtimeClassName:", "runtimeClass:", 1);
    let (ok, report) = validate(&broken);
    assert!(!ok, "an unknown field passed validation:\n{report}");
}
