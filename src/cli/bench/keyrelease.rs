//! `keyrelease`: the whole RCAR exchange (auth → attest with simulated SNP
//! evidence → resource, JWE opened) against a broker on loopback in this
//! process: latency percentiles for one guest, and releases per second
//! with 16 guests at once; with `--pkcs11-*`, the same again with the
//! broker's master key in an HSM, beside the file key store's figures;
//! with `--postgres`, with the broker's state in PostgreSQL, 1 and 2
//! replicas.

use super::{Report, percentile_ms, sample};
use anyhow::{Context, Result};
use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use ciel_keybroker::ResourcePath;
use ciel_keybroker::config::Config;
use ciel_keybroker::master_key::{MasterKey, Pkcs11Config};
use ciel_keybroker::server::{ServeOptions, serve};
use std::sync::Arc;
use std::time::Instant;

const RESOURCE: &str = "default/model-key/bench";

/// Where a benchmarked broker keeps its state.
#[derive(Clone, Copy)]
enum Store<'a> {
    /// The key store and audit log files (one broker).
    Files,
    /// PostgreSQL (a libpq connection string and a password file), shared
    /// by replicas.
    Postgres(&'a str, Option<&'a std::path::Path>),
}

/// A broker trusting `sim`'s root for RESOURCE, on a loopback port; a
/// second one on the same `dir` and database is a replica of the first.
fn start_broker(
    sim: &SnpSim,
    dir: &std::path::Path,
    hsm: Option<&Pkcs11Config>,
    store: Store<'_>,
) -> Result<String> {
    let fp = hex::encode(sim.root_sha256());
    let master = match hsm {
        None => {
            let path = dir.join("master.key");
            if !path.exists() {
                std::fs::write(&path, hex::encode([9u8; 32]))?;
            }
            "master_key_file = \"master.key\"\n".to_string()
        }
        Some(cfg) => {
            if MasterKey::open_pkcs11(cfg).is_err() {
                MasterKey::generate_pkcs11(cfg)?;
            }
            let cfg = Pkcs11Config {
                pin_file: std::path::absolute(&cfg.pin_file)?,
                ..cfg.clone()
            };
            ciel_keybroker::config::toml_table("master_key_pkcs11", &cfg)?
        }
    };
    std::fs::write(
        dir.join("p.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )?;
    // Top-level keys before tables (a TOML table runs to the next header).
    let (mut top, mut tables) = (
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
        String::new(),
    );
    match store {
        Store::Files => top.push_str("key_store = \"keys.json\"\naudit_log = \"audit.jsonl\"\n"),
        Store::Postgres(url, password_file) => {
            let pg = ciel_keybroker::postgres::PgConfig {
                url: url.to_string(),
                password_file: password_file.map(std::path::absolute).transpose()?,
                ca_file: None,
                schema: "ciel_bench".into(),
                pool_size: ciel_keybroker::postgres::default_pool(),
            };
            tables.push_str(&ciel_keybroker::config::toml_table("postgres", &pg)?);
        }
    }
    if hsm.is_some() { &mut tables } else { &mut top }.push_str(&master);
    std::fs::write(
        dir.join("kbs.toml"),
        format!("{top}{tables}[[resource]]\npath = \"{RESOURCE}\"\npolicy_file = \"p.toml\"\n"),
    )?;
    let config = Config::load(&dir.join("kbs.toml"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(anyhow::Error::from(e)));
                return;
            }
        };
        rt.block_on(async move {
            let started = async {
                let state = Arc::new(ciel_keybroker::backend::open(config).await?);
                let resource = ResourcePath::parse(RESOURCE)?;
                let present = state.backend.key(&resource, None).await;
                if !matches!(present, Ok(Ok(_))) {
                    state
                        .backend
                        .put_key(&resource, &[1; 32], |_| Ok(()))
                        .await
                        .map_err(|e| anyhow::anyhow!("storing the bench key: {}", e.detail))?;
                }
                let ep = ciel_transport::Endpoint::Tcp("127.0.0.1:0".into());
                let l = ciel_transport::Listener::bind(&ep).await?;
                let addr = l.tcp_addr()?;
                anyhow::Ok((state, l, addr))
            };
            match started.await {
                Ok((state, l, addr)) => {
                    let _ = tx.send(Ok(addr));
                    serve(l, state, ServeOptions::new(None), std::future::pending()).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let addr = rx.recv().context("broker thread")??;
    Ok(format!("http://{addr}"))
}

pub fn run(
    r: &mut Report,
    hsm: Option<&Pkcs11Config>,
    postgres: Option<(&str, Option<&std::path::Path>)>,
) -> Result<()> {
    let now = super::super::files::now();
    let sim = Arc::new(SnpSim::generate(ciel_attestation::UnixTime(now))?);
    let dir = tempfile::tempdir()?;
    let url = start_broker(&sim, dir.path(), None, Store::Files)?;
    let (p50, rate) = measure(r, &sim, &[url], "")?;
    if let Some(cfg) = hsm {
        let dir = tempfile::tempdir()?;
        let url = start_broker(&sim, dir.path(), Some(cfg), Store::Files).with_context(|| {
            format!("the broker with its master key in {}", cfg.module.display())
        })?;
        let (hsm_p50, hsm_rate) = measure(r, &sim, &[url], ", master key in the HSM")?;
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
    if let Some((url, password_file)) = postgres {
        let store = Store::Postgres(url, password_file);
        let dir = tempfile::tempdir()?;
        let one = start_broker(&sim, dir.path(), None, store)
            .with_context(|| format!("the broker on PostgreSQL at {url}"))?;
        let (pg_p50, pg_rate) = measure(
            r,
            &sim,
            std::slice::from_ref(&one),
            ", PostgreSQL, 1 replica",
        )?;
        r.compare(
            "keyrelease",
            "1 guest p50, PostgreSQL store",
            pg_p50,
            "ms",
            p50 / pg_p50,
            "file store",
        );
        // A second replica on the same database; the guests alternate
        // between the two (as behind a round-robin load balancer).
        let two = start_broker(&sim, dir.path(), None, store)?;
        let (_, pg2_rate) = measure(r, &sim, &[one, two], ", PostgreSQL, 2 replicas")?;
        r.compare(
            "keyrelease",
            "releases per second, 16 guests, PostgreSQL, 2 replicas",
            pg2_rate,
            "rel/s",
            pg2_rate / pg_rate,
            "1 replica",
        );
        r.compare(
            "keyrelease",
            "releases per second, 16 guests, PostgreSQL, 1 replica",
            pg_rate,
            "rel/s",
            pg_rate / rate,
            "file store",
        );
    }
    Ok(())
}

/// One deployment's figures (`what` names it): one guest on the first
/// broker, then 16 guests spread over `urls`; (p50 ms, rate).
fn measure(r: &mut Report, sim: &Arc<SnpSim>, urls: &[String], what: &str) -> Result<(f64, f64)> {
    let url = urls.first().context("no broker")?;
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
        .map(|g| {
            let url = urls[g % urls.len()].clone();
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
