//! A broker in-process on loopback, and the simulated guest's side.

use super::*;

pub fn sim() -> &'static SnpSim {
    static S: OnceLock<SnpSim> = OnceLock::new();
    S.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SnpSim::generate(ciel_attestation::UnixTime(now)).unwrap()
    })
}

/// The simulated Intel PKI (TDX quotes, their collateral).
pub fn tdx_sim() -> &'static ciel_attestation::sim::TdxSim {
    static S: OnceLock<ciel_attestation::sim::TdxSim> = OnceLock::new();
    S.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        ciel_attestation::sim::TdxSim::generate(ciel_attestation::UnixTime(now - 86_400)).unwrap()
    })
}

/// The simulated GPU hierarchy and two GPUs issued from it.
pub fn gpu_sim() -> &'static (NvidiaSim, SimGpu, SimGpu) {
    static S: OnceLock<(NvidiaSim, SimGpu, SimGpu)> = OnceLock::new();
    S.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = ciel_attestation::UnixTime(now - 86_400);
        let sim = NvidiaSim::generate(at).unwrap();
        let (a, b) = (sim.issue_gpu(0, at).unwrap(), sim.issue_gpu(1, at).unwrap());
        (sim, a, b)
    })
}

pub const KEY: [u8; 32] = [0x42; 32];

/// The TLS key (its DER stand-in) of the guests whose documents tests make.
pub const GUEST_SPKI: &[u8] = b"the guest's TLS key";

/// Runtime claims of a guest with [`GUEST_SPKI`], no GPUs yet.
pub fn guest_claims() -> ciel_protocol::claims::RuntimeClaims {
    use ciel_protocol::claims::{CLAIMS_VERSION, ModelClaims, RuntimeClaims};
    RuntimeClaims {
        version: CLAIMS_VERSION,
        platform: "snp".into(),
        runtime: "ciel-enclave test".into(),
        tls_spki_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, GUEST_SPKI)),
        model: ModelClaims {
            name: "m".into(),
            sha256: "00".repeat(32),
        },
        embedding_model: None,
        nonce: None,
        gpus: Vec::new(),
        issued_at: None,
    }
}

pub struct Broker {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub admin: ring::signature::Ed25519KeyPair,
    pub state: Arc<AppState>,
    pub _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Broker {
    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
}

/// Starts a broker whose resources name the policies given (TOML bodies).
pub fn start(ttl: u64, trust_sim: bool, resources: &[(&str, String)]) -> Broker {
    start_with_audit(ttl, trust_sim, resources, |c| {
        AuditLog::open(files(c).1).unwrap()
    })
}

/// [`start`], with the audit log the closure makes.
pub fn start_with_audit(
    ttl: u64,
    trust_sim: bool,
    resources: &[(&str, String)],
    audit_log: impl FnOnce(&Config) -> AuditLog,
) -> Broker {
    let resources: Vec<(&str, Policies)> = resources
        .iter()
        .map(|(path, toml)| {
            (
                *path,
                Policies {
                    toml: Some(toml.clone()),
                    rego: None,
                },
            )
        })
        .collect();
    start_with_policies(ttl, trust_sim, &resources, "", audit_log)
}

/// A resource's policies: TOML (with the simulated root trusted), Rego, or
/// both; neither: `danger_accept_sample_evidence` (Trustee's sample TEE).
pub struct Policies {
    pub toml: Option<String>,
    pub rego: Option<String>,
}

/// A broker whose resources name the policies given.
pub fn start_with_policies(
    ttl: u64,
    trust_sim: bool,
    resources: &[(&str, Policies)],
    extra_config: &str,
    audit_log: impl FnOnce(&Config) -> AuditLog,
) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    // The simulated SNP, TDX and GPU roots, as a TOML array's items.
    let fp = format!(
        "{}\", \"{}\", \"{}",
        hex::encode(sim().root_sha256()),
        hex::encode(tdx_sim().root_sha256()),
        hex::encode(gpu_sim().0.root_sha256())
    );
    std::fs::write(dir.path().join("master.key"), hex::encode([9u8; 32])).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let admin = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    use ring::signature::KeyPair;
    let mut cfg = format!(
        "key_store = \"keys.json\"\nmaster_key_file = \"master.key\"\naudit_log = \"audit.jsonl\"\nsession_ttl_seconds = {ttl}\nadmin_public_key = \"{}\"\n",
        hex::encode(admin.public_key().as_ref())
    );
    if trust_sim {
        cfg.push_str(&format!("danger_simulated_roots = [\"{fp}\"]\n"));
    }
    cfg.push_str(extra_config);
    for (i, (path, policies)) in resources.iter().enumerate() {
        cfg.push_str(&format!("[[resource]]\npath = \"{path}\"\n"));
        if let Some(policy) = &policies.toml {
            let pf = format!("policy{i}.toml");
            std::fs::write(
                dir.path().join(&pf),
                format!("danger_simulated_roots = [\"{fp}\"]\n{policy}"),
            )
            .unwrap();
            cfg.push_str(&format!("policy_file = \"{pf}\"\n"));
        }
        if policies.toml.is_none() && policies.rego.is_none() {
            cfg.push_str("danger_accept_sample_evidence = true\n");
        }
        if let Some(rego) = &policies.rego {
            let rf = format!("policy{i}.rego");
            std::fs::write(dir.path().join(&rf), rego).unwrap();
            cfg.push_str(&format!("rego_policy_file = \"{rf}\"\n"));
        }
    }
    std::fs::write(dir.path().join("kbs.toml"), cfg).unwrap();
    let config = Config::load(&dir.path().join("kbs.toml")).unwrap();
    let mut store =
        KeyStore::open_with(files(&config).0, config.master_key.open().unwrap()).unwrap();
    for (path, _) in resources {
        store
            .put(&ResourcePath::parse(path).unwrap(), &KEY)
            .unwrap();
    }
    let audit = audit_log(&config);
    let state = Arc::new(AppState::new(config, store, audit).unwrap());
    let serving = state.clone();
    let (addr, tx) = serve_in_background(move |listener, stop| async move {
        serve(listener, serving, ServeOptions::new(None), async move {
            let _ = stop.await;
        })
        .await;
    });
    Broker {
        base: format!("http://{addr}"),
        dir,
        admin,
        state,
        _shutdown: tx,
    }
}

/// A second broker over TLS on `b`'s files (config, keys, audit log).
pub struct TlsBroker {
    pub base: String,
    pub ca_pem: String,
    pub state: Arc<AppState>,
    pub _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a [`TlsBroker`] with the default options as `adjust` leaves them.
pub fn start_tls(b: &Broker, adjust: impl FnOnce(&mut ServeOptions)) -> TlsBroker {
    use ciel_keybroker::tls::{generate_dev_pki, server_config};
    let pki = generate_dev_pki(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let dir = b.dir.path();
    std::fs::write(dir.join("tls.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.key_pem).unwrap();
    let tls = server_config(&dir.join("tls.pem"), &dir.join("tls.key")).unwrap();
    let config = Config::load(&dir.join("kbs.toml")).unwrap();
    let store = KeyStore::open_with(files(&config).0, config.master_key.open().unwrap()).unwrap();
    let audit = AuditLog::open(files(&config).1).unwrap();
    let state = Arc::new(AppState::new(config, store, audit).unwrap());
    let mut options = ServeOptions::new(Some(tls));
    adjust(&mut options);
    let serving = state.clone();
    let (addr, stop) = serve_in_background(move |listener, stop| async move {
        serve(listener, serving, options, async move {
            let _ = stop.await;
        })
        .await;
    });
    TlsBroker {
        base: format!("https://127.0.0.1:{}", addr.port()),
        ca_pem: pki.ca_pem,
        state,
        _stop: stop,
    }
}

/// Runs `server` on a fresh loopback listener, on a runtime of its own in
/// a background thread; it stops when the returned sender is dropped.
pub fn serve_in_background<F, Fut>(
    server: F,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    F: FnOnce(ciel_transport::Listener, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let ep = ciel_transport::Endpoint::Tcp("127.0.0.1:0".into());
            let listener = ciel_transport::Listener::bind(&ep).await.unwrap();
            addr_tx.send(listener.tcp_addr().unwrap()).unwrap();
            server(listener, rx).await
        });
    });
    (addr_rx.recv().unwrap(), tx)
}

/// A simulated guest with the default report: the measurement the
/// tests' policies allow.
pub fn genuine_guest() -> SimSnpSource<&'static SnpSim> {
    SimSnpSource {
        sim: sim(),
        template: SimSnpReport::default(),
    }
}

pub fn measurement() -> String {
    hex::encode(SimSnpReport::default().measurement)
}

pub fn client(b: &Broker) -> KbsClient {
    KbsClient::new(
        &b.base,
        Backoff {
            attempts: 2,
            first: Duration::from_millis(10),
            max: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(30),
        },
    )
}

pub fn refused_kind(e: KbsClientError) -> String {
    match e {
        KbsClientError::Refused { kind, .. } => kind,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// The key store and audit log of a broker configured with files.
pub fn files(c: &Config) -> (&std::path::Path, &std::path::Path) {
    c.storage.files().expect("a broker with file storage")
}

/// A client that returns refusals as answers (no error on 4xx/5xx).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET /kbs/v0/resource/{path}` with a session cookie or a bearer token:
/// (status, body).
pub fn get_resource(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = agent().get(&format!("{base}/kbs/v0/resource/{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_json().unwrap_or_default(),
    )
}

/// Part `index` of a JWT (0 the header, 1 the claims), decoded.
pub fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
