//! `keyrelease`: the whole RCAR exchange (auth → attest with simulated SNP
//! evidence → resource, JWE opened) against a broker on loopback in this
//! process: latency percentiles for one guest, and releases per second
//! with 16 guests at once.

use super::{Report, percentile_ms, sample};
use anyhow::{Context, Result};
use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use ciel_keybroker::ResourcePath;
use ciel_keybroker::audit::AuditLog;
use ciel_keybroker::config::Config;
use ciel_keybroker::server::{AppState, ServeOptions, serve};
use ciel_keybroker::store::KeyStore;
use std::sync::Arc;
use std::time::Instant;

const RESOURCE: &str = "default/model-key/bench";

/// A broker trusting `sim`'s root for RESOURCE, on a loopback port.
fn start_broker(sim: &SnpSim, dir: &std::path::Path) -> Result<String> {
    let fp = hex::encode(sim.root_sha256());
    std::fs::write(dir.join("master.key"), hex::encode([9u8; 32]))?;
    std::fs::write(
        dir.join("p.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )?;
    std::fs::write(
        dir.join("kbs.toml"),
        format!(
            "key_store = \"keys.json\"\nmaster_key_file = \"master.key\"\naudit_log = \"audit.jsonl\"\ndanger_simulated_roots = [\"{fp}\"]\n[[resource]]\npath = \"{RESOURCE}\"\npolicy_file = \"p.toml\"\n"
        ),
    )?;
    let config = Config::load(&dir.join("kbs.toml"))?;
    let mut store = KeyStore::open_with(&config.key_store, config.master_key.open()?)?;
    store.put(&ResourcePath::parse(RESOURCE)?, &[1; 32])?;
    let audit = AuditLog::open(&config.audit_log)?;
    let state = Arc::new(AppState::new(config, store, audit)?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let ep = ciel_transport::Endpoint::Tcp("127.0.0.1:0".into());
            let Ok(l) = ciel_transport::Listener::bind(&ep).await else {
                return;
            };
            let _ = tx.send(l.tcp_addr());
            serve(l, state, ServeOptions::new(None), std::future::pending()).await;
        });
    });
    let addr = rx.recv().context("broker thread")??;
    Ok(format!("http://{addr}"))
}

pub fn run(r: &mut Report) -> Result<()> {
    let now = super::super::files::now();
    let sim = Arc::new(SnpSim::generate(ciel_attestation::UnixTime(now))?);
    let dir = tempfile::tempdir()?;
    let url = start_broker(&sim, dir.path())?;
    let source = SimSnpSource {
        sim: sim.clone(),
        template: SimSnpReport::default(),
    };
    let client = KbsClient::new(&url, Backoff::default());
    client
        .fetch_resource(RESOURCE, &source)
        .context("first release")?;
    let n = if r.quick { 30 } else { 200 };
    let evidence_only = sample(n, || {
        let _ = std::hint::black_box(ciel_enclave::kbs_client::EvidenceSource::evidence(
            &source, [0; 64],
        ));
    });
    let one = sample(n, || {
        let _ = std::hint::black_box(client.fetch_resource(RESOURCE, &source).is_ok());
    });
    let p50 = percentile_ms(&one, 50.0);
    r.compare(
        "keyrelease",
        "auth + attest + resource, 1 guest: p50",
        p50,
        "ms",
        percentile_ms(&evidence_only, 50.0) / p50,
        "making the simulated evidence (share of the time)",
    );
    r.add(
        "keyrelease",
        "auth + attest + resource, 1 guest: p99",
        percentile_ms(&one, 99.0),
        "ms",
    );

    let guests = 16;
    let per_guest = if r.quick { 5 } else { 25 };
    let start = Instant::now();
    let handles: Vec<_> = (0..guests)
        .map(|_| {
            let url = url.clone();
            let sim = sim.clone();
            std::thread::spawn(move || {
                let client = KbsClient::new(&url, Backoff::default());
                let source = SimSnpSource {
                    sim,
                    template: SimSnpReport::default(),
                };
                (0..per_guest)
                    .filter(|_| client.fetch_resource(RESOURCE, &source).is_ok())
                    .count()
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    anyhow::ensure!(
        ok == guests * per_guest,
        "only {ok} of {} releases succeeded",
        guests * per_guest
    );
    let rate = ok as f64 / start.elapsed().as_secs_f64();
    r.compare(
        "keyrelease",
        "releases per second, 16 concurrent guests",
        rate,
        "rel/s",
        rate / (1e3 / p50),
        "1 guest sequential",
    );
    Ok(())
}
