//! `keyrelease`: the whole RCAR exchange (auth → attest with simulated SNP
//! evidence → resource, JWE opened) against a broker on loopback in this
//! process: latency percentiles for one guest, and releases per second
//! with 16 guests at once; with `--pkcs11-*`, the same again with the
//! broker's master key in an HSM, beside the file key store's figures.

use super::{Report, percentile_ms, sample};
use anyhow::{Context, Result};
use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use ciel_keybroker::ResourcePath;
use ciel_keybroker::audit::AuditLog;
use ciel_keybroker::config::Config;
use ciel_keybroker::master_key::{MasterKey, Pkcs11Config};
use ciel_keybroker::server::{AppState, ServeOptions, serve};
use ciel_keybroker::store::KeyStore;
use std::sync::Arc;
use std::time::Instant;

const RESOURCE: &str = "default/model-key/bench";

/// A broker trusting `sim`'s root for RESOURCE, on a loopback port.
fn start_broker(sim: &SnpSim, dir: &std::path::Path, hsm: Option<&Pkcs11Config>) -> Result<String> {
    let fp = hex::encode(sim.root_sha256());
    let master = match hsm {
        None => {
            std::fs::write(dir.join("master.key"), hex::encode([9u8; 32]))?;
            "master_key_file = \"master.key\"\n".to_string()
        }
        Some(cfg) => {
            if MasterKey::open_pkcs11(cfg).is_err() {
                MasterKey::generate_pkcs11(cfg)?;
            }
            format!(
                "[master_key_pkcs11]\nmodule = {:?}\ntoken_label = {:?}\nkey_label = {:?}\npin_file = {:?}\n",
                cfg.module.display().to_string(),
                cfg.token_label,
                cfg.key_label,
                std::path::absolute(&cfg.pin_file)?.display().to_string()
            )
        }
    };
    std::fs::write(
        dir.join("p.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )?;
    std::fs::write(
        dir.join("kbs.toml"),
        format!(
            "key_store = \"keys.json\"\naudit_log = \"audit.jsonl\"\ndanger_simulated_roots = [\"{fp}\"]\n{master}[[resource]]\npath = \"{RESOURCE}\"\npolicy_file = \"p.toml\"\n"
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

pub fn run(r: &mut Report, hsm: Option<&Pkcs11Config>) -> Result<()> {
    let now = super::super::files::now();
    let sim = Arc::new(SnpSim::generate(ciel_attestation::UnixTime(now))?);
    let dir = tempfile::tempdir()?;
    let url = start_broker(&sim, dir.path(), None)?;
    let (p50, rate) = measure(r, &sim, &url, "")?;
    if let Some(cfg) = hsm {
        let dir = tempfile::tempdir()?;
        let url = start_broker(&sim, dir.path(), Some(cfg)).with_context(|| {
            format!("the broker with its master key in {}", cfg.module.display())
        })?;
        let (hsm_p50, hsm_rate) = measure(r, &sim, &url, ", master key in the HSM")?;
        r.compare(
            "keyrelease",
            "1 guest p50, master key in the HSM",
            hsm_p50,
            "ms",
            p50 / hsm_p50,
            "master key in a file",
        );
        r.compare(
            "keyrelease",
            "releases per second, 16 guests, master key in the HSM",
            hsm_rate,
            "rel/s",
            hsm_rate / rate,
            "master key in a file",
        );
    }
    Ok(())
}

/// One broker's figures (`what` names its master key); (p50 ms, rate).
fn measure(r: &mut Report, sim: &Arc<SnpSim>, url: &str, what: &str) -> Result<(f64, f64)> {
    let source = SimSnpSource {
        sim: sim.clone(),
        template: SimSnpReport::default(),
    };
    let client = KbsClient::new(url, Backoff::default());
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
        format!("auth + attest + resource, 1 guest: p50{what}"),
        p50,
        "ms",
        percentile_ms(&evidence_only, 50.0) / p50,
        "making the simulated evidence (share of the time)",
    );
    r.add(
        "keyrelease",
        format!("auth + attest + resource, 1 guest: p99{what}"),
        percentile_ms(&one, 99.0),
        "ms",
    );

    let guests = 16;
    let per_guest = if r.quick { 5 } else { 25 };
    let start = Instant::now();
    let handles: Vec<_> = (0..guests)
        .map(|_| {
            let url = url.to_string();
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
        format!("releases per second, 16 concurrent guests{what}"),
        rate,
        "rel/s",
        rate / (1e3 / p50),
        "1 guest sequential",
    );
    Ok((p50, rate))
}
