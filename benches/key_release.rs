//! Key release latency over loopback with simulated SNP evidence: auth +
//! attest + resource, each iteration a fresh guest key, nonce and report.
//! Run: `cargo bench --bench key_release`. Target (issue): median ≤ 20 ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, EvidenceSource, KbsClient};
use ciel_keybroker::ResourcePath;
use ciel_keybroker::audit::AuditLog;
use ciel_keybroker::config::Config;
use ciel_keybroker::server::{AppState, serve};
use ciel_keybroker::store::KeyStore;
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sim = SnpSim::generate(ciel_attestation::UnixTime(now)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fp = hex::encode(sim.root_sha256());
    std::fs::write(dir.path().join("master.key"), hex::encode([9u8; 32])).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("kbs.toml"),
        format!("key_store = \"keys.json\"\nmaster_key_file = \"master.key\"\naudit_log = \"audit.jsonl\"\ndanger_simulated_roots = [\"{fp}\"]\n[[resource]]\npath = \"default/model-key/bench\"\npolicy_file = \"p.toml\"\n"),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("kbs.toml")).unwrap();
    let master = ciel_keybroker::store::read_master_key(&config.master_key_file).unwrap();
    let mut store = KeyStore::open(&config.key_store, &master).unwrap();
    store
        .put(
            &ResourcePath::parse("default/model-key/bench").unwrap(),
            &[1; 32],
        )
        .unwrap();
    let audit = AuditLog::open(&config.audit_log).unwrap();
    let state = Arc::new(AppState::new(config, store, audit));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            serve(l, state, std::future::pending()).await.unwrap();
        });
    });
    let base = format!("http://{}", rx.recv().unwrap());
    let client = KbsClient::new(&base, Backoff::default());
    let source = SimSnpSource {
        sim: &sim,
        template: SimSnpReport::default(),
    };

    c.bench_function("sim SNP report generation (baseline part)", |b| {
        b.iter(|| source.evidence([0; 64]).unwrap())
    });
    c.bench_function(
        "key release: auth + attest + resource (loopback, sim SNP)",
        |b| {
            b.iter(|| {
                client
                    .fetch_resource("default/model-key/bench", &source)
                    .unwrap()
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
