//! `ciel demo`: the whole system on one machine, as separate processes on
//! the SIMULATED platform, Unix sockets standing in for vsock:
//!
//! owner: `kbs init` → `seal --kbs` (key registered at the broker)
//! broker: `kbs serve` (TLS)            host: `host serve` (untrusted shim)
//! guest: `enclave serve --sim` (key via the host's relay, model via the
//!        host's blob service, API on a Unix socket behind the host)
//! client (this process): verify the guest's attestation, ask, stream.
//!
//! Everything is stopped at the end; the exit status says whether it all
//! worked. The simulated platform gives NO confidentiality: it shows the
//! protocol, not the protection.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::sim::{SimSnpReport, SimTdxQuote};
use ciel_client::Client;
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The GGUF model (default: SmolLM2-135M-Instruct Q4_1, fetched once).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The model's name in the API (default: the file's stem).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Also serve a sentence-embedding model on /v1/embeddings: a
    /// sentence-transformers folder (`scripts/fetch-model.sh minilm`) or a
    /// bundle from `ciel embeddings pack`; sealed under its own key.
    #[arg(long)]
    pub embedding_model: Option<PathBuf>,
    /// The simulated platform the guest runs on: `snp` (SEV-SNP reports) or
    /// `tdx` (TDX quotes, each with the collateral that verifies it).
    #[arg(long, default_value = "snp", value_parser = ["snp", "tdx"])]
    pub platform: String,
    /// Simulated GPUs attested with the guest (`sim:N`, or `none`): the key
    /// broker and the client then require N genuine GPUs in CC mode, and
    /// the client shows each GPU's checks.
    #[arg(long, default_value = "none", value_parser = parse_demo_gpus)]
    pub gpus: u32,
    /// The question.
    #[arg(
        long,
        default_value = "Explain in a few sentences why the sky is blue."
    )]
    pub prompt: String,
    #[arg(long, default_value_t = 96)]
    pub max_tokens: usize,
    /// Keep the demo's files (keys, logs, sealed model) in this directory
    /// instead of a temporary one.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Seconds to wait for the guest to come up.
    #[arg(long, default_value_t = 300)]
    pub boot_timeout: u64,
    /// After verifying, keep the system up instead of asking the question:
    /// print one JSON line with the endpoints (client URL, policy, key
    /// broker, sockets) and serve until SIGINT/SIGTERM.
    #[arg(long)]
    pub serve: bool,
}

fn parse_demo_gpus(s: &str) -> Result<u32, String> {
    match super::enclave::parse_gpus(s)? {
        super::enclave::GpuChoice::None => Ok(0),
        super::enclave::GpuChoice::Sim(n) => Ok(n),
        super::enclave::GpuChoice::Nvml => {
            Err("the demo runs on the simulated platform: none or sim:N".into())
        }
    }
}

/// The file `scripts/fetch-model.sh` caches the demo model as.
const DEMO_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const BLOB: &str = "smollm2.csm";
const EMBEDDING_BLOB: &str = "embeddings.csm";

fn banner(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

/// Children stopped (SIGTERM, then SIGKILL) when dropped, errors included.
struct Processes {
    children: Vec<(&'static str, Child, PathBuf)>,
}

impl Processes {
    fn spawn(&mut self, name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<()> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        self.children.push((name, child, log));
        Ok(())
    }

    /// Process ids by role (for watching memory, or signals in tests).
    fn pids(&self) -> serde_json::Value {
        self.children
            .iter()
            .map(|(name, child, _)| (name.to_string(), json!(child.id())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Fails if a child has exited, with the end of its log.
    fn check_alive(&mut self) -> Result<()> {
        for (name, child, log) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the {name} exited ({status}); the end of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        for (_, child, _) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child, _) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("the {name} did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// The demo model: `--model`, or fetched (once, checked, cached) by the
/// repository's `scripts/fetch-model.sh`, found above the running binary
/// (`target/*/ciel`) or in the current directory. (Not a path fixed at
/// build time: the binary is the guest image's `/init`, and must not
/// depend on where it was built.)
fn demo_model(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the ciel binary")?;
    let cwd = std::env::current_dir().context("the current directory")?;
    let Some(script) = exe
        .ancestors()
        .chain(std::iter::once(cwd.as_path()))
        .map(|d| d.join("scripts/fetch-model.sh"))
        .find(|p| p.is_file())
    else {
        bail!(
            "no demo model: give one with --model PATH, or run ciel demo from the repository (its scripts/fetch-model.sh fetches it)"
        );
    };
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("fetching the demo model failed (give one with --model PATH)");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the ciel binary")?;
    let temp;
    let work = match &a.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("ciel-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let data = work.join("data");
    let ciel = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.args(args)
            .env("CIEL_DATA_DIR", &data)
            .env("RUST_LOG", "info");
        c
    };
    println!(
        "\x1b[1;33mWARNING: everything below runs on the SIMULATED platform. It shows the protocol — sealing,\n\
         attested key release, attested TLS, an untrusted host carrying ciphertext — but gives NO\n\
         confidentiality: there is no hardware protecting the guest's memory.\x1b[0m"
    );

    banner("1. The demo model");
    let model = demo_model(a.model.clone())?;
    println!("{}", model.display());
    // The name clients see: --model-name, the demo model's, or the file's
    // stem.
    let model_name = match &a.model_name {
        Some(n) => n.clone(),
        None if model.file_name() == Some(std::ffi::OsStr::new(DEMO_MODEL_FILE)) => {
            "smollm2-135m-instruct".to_string()
        }
        None => model
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "model".into()),
    };
    // Each model's key is named after the model (a resource path keeps
    // letters, digits, '.', '_' and '-').
    let resource_of = |name: &str| {
        format!(
            "default/model-key/{}",
            name.chars()
                .map(
                    |c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '-'
                    }
                )
                .collect::<String>()
        )
    };
    let resource = resource_of(&model_name);
    let embedding = match &a.embedding_model {
        Some(p) => {
            let (bundle, name) = super::embeddings::demo_bundle(p, &work)?;
            let resource = resource_of(&name);
            Some((bundle, name, resource))
        }
        None => None,
    };
    // A base model (no chat template) is asked through /v1/completions.
    let chat_model = {
        let mut f =
            std::fs::File::open(&model).with_context(|| format!("opening {}", model.display()))?;
        let meta = ciel_engine::gguf::read_metadata(&mut f)
            .with_context(|| format!("the metadata of {}", model.display()))?;
        ciel_engine::chat::ChatTemplate::from_gguf(&meta)
            .with_context(|| format!("the chat template of {}", model.display()))?
            .is_some()
    };

    banner("2. The owner: a key broker, a policy for the model's key, the sealed model");
    let kbs_dir = work.join("kbs");
    run_step(
        "kbs init",
        &mut ciel(&["kbs", "init", &kbs_dir.to_string_lossy()]),
    )?;
    // The platform's simulated root, and the guest's launch measurement as
    // the policies name it (SNP's MEASUREMENT, TDX's MRTD).
    let (root, measurement, measurement_table) = match a.platform.as_str() {
        "tdx" => (
            hex::encode(super::sim::load_or_create_tdx_in(&data)?.0.root_sha256()),
            hex::encode(SimTdxQuote::default().mrtd),
            "[tdx]\nmrtd",
        ),
        _ => (
            hex::encode(super::sim::load_or_create_snp_in(&data)?.0.root_sha256()),
            hex::encode(SimSnpReport::default().measurement),
            "[snp]\nmeasurements",
        ),
    };
    // With simulated GPUs, their root is trusted too and N of them are
    // required, by the broker for the key and by the client.
    let gpu_root = match a.gpus {
        0 => None,
        _ => Some(hex::encode(
            super::sim::load_or_create_nvidia_in(&data)?.0.root_sha256(),
        )),
    };
    let roots_line = format!(
        "danger_simulated_roots = [{}]",
        std::iter::once(&root)
            .chain(gpu_root.as_ref())
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The platforms whose evidence the policies take: the guest's, and
    // NVIDIA's for its GPUs.
    let platforms = match a.gpus {
        0 => format!("platforms = [\"{}\"]", a.platform),
        _ => format!("platforms = [\"{}\", \"nvidia\"]", a.platform),
    };
    let gpu_table = match a.gpus {
        0 => String::new(),
        n => format!(
            "[nvidia]\nmin_gpus = {n}\nrequire_ocsp = true\nmax_ocsp_age_seconds = 86400\nrequire_rims = true\n"
        ),
    };
    std::fs::write(
        kbs_dir.join("model.policy.toml"),
        format!(
            "{roots_line}\n{platforms}\n{measurement_table} = [\"{measurement}\"]\n{gpu_table}"
        ),
    )?;
    let cfg_path = kbs_dir.join("kbs.toml");
    let cfg = std::fs::read_to_string(&cfg_path)?;
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("# danger_simulated_roots") {
                roots_line.clone()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut resources = vec![resource.clone()];
    resources.extend(embedding.iter().map(|e| e.2.clone()));
    let tables: String = resources
        .iter()
        .map(|r| format!("\n[[resource]]\npath = \"{r}\"\npolicy_file = \"model.policy.toml\"\n"))
        .collect();
    std::fs::write(&cfg_path, format!("{cfg}{tables}"))?;
    println!(
        "policy for {resource}: the simulated {} root, guest measurement {measurement}{}",
        a.platform,
        match a.gpus {
            0 => String::new(),
            n => format!(
                ", {n} simulated GPUs in CC mode, their measurements as their RIMs state, OCSP-good"
            ),
        }
    );

    let mut procs = Processes {
        children: Vec::new(),
    };
    let kbs_port = free_port()?;
    let kbs_url = format!("https://127.0.0.1:{kbs_port}");
    let kbs_ca = kbs_dir.join("tls-ca.pem");
    procs.spawn(
        "key broker",
        &mut ciel(&[
            "kbs",
            "serve",
            "--config",
            &cfg_path.to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{kbs_port}"),
            "--tls-cert",
            &kbs_dir.join("tls.pem").to_string_lossy(),
            "--tls-key",
            &kbs_dir.join("tls.key").to_string_lossy(),
        ]),
        work.join("kbs.log"),
    )?;
    wait_for_port(&mut procs, kbs_port, Duration::from_secs(30))?;
    let models = work.join("models");
    std::fs::create_dir_all(&models)?;
    let seal = |input: &Path, blob: &str, resource: &str| -> Result<String> {
        let sealed = models.join(blob);
        run_step(
            "seal",
            ciel(&[
                "seal",
                "--in",
                &input.to_string_lossy(),
                "--out",
                &sealed.to_string_lossy(),
                "--resource",
                resource,
                "--kbs",
                &kbs_url,
                "--admin-key",
                &kbs_dir.join("admin.key").to_string_lossy(),
                "--kbs-ca",
                &kbs_ca.to_string_lossy(),
            ])
            .stderr(Stdio::inherit()),
        )?;
        let header = ciel_protocol::sealed::SealedHeader::parse(&read_head(&sealed)?)
            .context("the sealed model's header")?;
        Ok(header.header.plaintext_sha256.clone())
    };
    let model_sha256 = seal(&model, BLOB, &resource)?;
    let embedding_sha256 = match &embedding {
        Some((bundle, _, resource)) => Some(seal(bundle, EMBEDDING_BLOB, resource)?),
        None => None,
    };

    banner(
        "3. The untrusted host and the guest (separate processes; Unix sockets stand in for vsock)",
    );
    let host_port = free_port()?;
    let metrics_port = free_port()?;
    let sock = |n: &str| format!("unix:{}", work.join(n).display());
    procs.spawn(
        "host shim",
        &mut ciel(&[
            "host",
            "serve",
            "--listen",
            &format!("tcp://127.0.0.1:{host_port}"),
            "--guest-api",
            &sock("guest-api.sock"),
            "--models",
            &models.to_string_lossy(),
            "--blob-listen",
            &sock("blobs.sock"),
            "--kbs-relay-listen",
            &sock("kbs-relay.sock"),
            "--kbs-upstream",
            &format!("tcp://127.0.0.1:{kbs_port}"),
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
        ]),
        work.join("host.log"),
    )?;
    let mut guest_embedding_args = Vec::new();
    if let Some((_, name, _)) = &embedding {
        guest_embedding_args.extend([
            "--embedding-model-blob".to_string(),
            EMBEDDING_BLOB.to_string(),
            "--embedding-model-name".to_string(),
            name.clone(),
        ]);
    }
    procs.spawn(
        "guest",
        ciel(&[
            "enclave",
            "serve",
            "--sim",
            &a.platform,
            "--kbs",
            &kbs_url,
            "--kbs-ca",
            &kbs_ca.to_string_lossy(),
            "--kbs-via",
            &sock("kbs-relay.sock"),
            "--model-from",
            &sock("blobs.sock"),
            "--model-blob",
            BLOB,
            "--model-name",
            &model_name,
            "--listen",
            &sock("guest-api.sock"),
            "--gpus",
            &match a.gpus {
                0 => "none".to_string(),
                n => format!("sim:{n}"),
            },
        ])
        .args(&guest_embedding_args),
        work.join("guest.log"),
    )?;
    println!(
        "host: clients at tcp://127.0.0.1:{host_port}; the guest boots (attest, key, fetch, decrypt, load) ..."
    );

    banner("4. The client verifies the guest before sending anything");
    let policy_path = work.join("client.policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "{roots_line}\n{platforms}\nmodel_sha256 = [{}]\n{measurement_table} = [\"{measurement}\"]\n{gpu_table}",
            std::iter::once(&model_sha256)
                .chain(embedding_sha256.as_ref())
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    let policy = files::load_policy(&policy_path)?;
    let url = format!("https://127.0.0.1:{host_port}");
    let rt = tokio::runtime::Runtime::new()?;
    let deadline = Instant::now() + Duration::from_secs(a.boot_timeout);
    let client = loop {
        procs.check_alive()?;
        match rt.block_on(Client::connect(&url, policy.clone())) {
            Ok(c) => break c,
            Err(e @ ciel_client::ClientError::Refused { .. }) => return Err(e.into()),
            Err(e) if Instant::now() > deadline => {
                bail!("the guest did not come up within {} s: {e}", a.boot_timeout)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    super::attest::warn_simulated();
    print!(
        "{}",
        ciel_client::report::render_verification(client.verification())
    );
    let fresh = rt.block_on(client.fresh_attestation())?;
    println!(
        "fresh evidence for a random client nonce: accepted ({} checks)",
        fresh.checks.len()
    );
    if a.serve {
        use tokio::signal::unix::{SignalKind, signal};
        // Listen for the signals before saying "ready".
        let (mut term, mut int) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        let ready = json!({
            "ready": true,
            "url": url,
            "policy": policy_path,
            "workdir": work,
            "kbs_url": kbs_url,
            "kbs_ca": kbs_ca,
            "kbs_relay": sock("kbs-relay.sock"),
            "guest_api": sock("guest-api.sock"),
            "metrics": format!("http://127.0.0.1:{metrics_port}/metrics"),
            "model_sha256": model_sha256,
            "embedding_model_sha256": embedding_sha256,
            "platform": a.platform,
            "measurement": measurement,
            "simulated_root_sha256": root,
            "simulated_gpu_root_sha256": gpu_root,
            "gpus": a.gpus,
            "pids": procs.pids(),
        });
        println!("{ready}");
        let _ = std::io::stdout().flush();
        eprintln!(
            "serving until Ctrl-C; try: ciel chat {url} --policy {}",
            policy_path.display()
        );
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        procs.stop();
        return Ok(ExitCode::SUCCESS);
    }

    banner("5. A question, answered inside the guest, streamed back through the host");
    println!("> {}", a.prompt);
    let started = Instant::now();
    let mut first = None;
    let mut pieces = 0usize;
    let finish = if chat_model {
        let req = json!({
            "model": client.verification().claims.model.name,
            "messages": [{"role": "user", "content": a.prompt}],
            "max_tokens": a.max_tokens,
        });
        rt.block_on(client.chat_stream(&req, |t| {
            first.get_or_insert_with(|| started.elapsed());
            pieces += 1;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }))?
    } else {
        println!(
            "(the model has no chat template: its continuation of the prompt, from /v1/completions)"
        );
        let req = json!({
            "model": client.verification().claims.model.name,
            "prompt": a.prompt,
            "max_tokens": a.max_tokens,
        });
        let answer = rt.block_on(client.completions(&req))?;
        first = Some(started.elapsed());
        pieces = 1;
        print!(
            "{}",
            answer["choices"][0]["text"].as_str().unwrap_or_default()
        );
        answer["choices"][0]["finish_reason"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    };
    println!();
    println!(
        "(finish: {finish}; first text after {} ms, {pieces} pieces in {} ms)",
        first.unwrap_or_default().as_millis(),
        started.elapsed().as_millis()
    );

    banner("6. What the host saw: byte counts only (TLS and sealed ciphertext)");
    if let Ok(text) = http_get(metrics_port, "/metrics") {
        for line in text.lines().filter(|l| {
            l.starts_with("ciel_host_bytes") || l.starts_with("ciel_host_connections_total")
        }) {
            println!("{line}");
        }
    }
    println!("audit log of the key broker:");
    let audit = std::fs::read_to_string(kbs_dir.join("audit.jsonl")).unwrap_or_default();
    for line in audit.lines() {
        println!("  {}", line.chars().take(160).collect::<String>());
    }
    drop(client);
    procs.stop();
    banner(
        "Done. Reminder: SIMULATED platform — the protocol ran for real, but nothing here was confidential.",
    );
    Ok(ExitCode::SUCCESS)
}

/// Enough of the sealed file to parse its header.
fn read_head(p: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut head = Vec::new();
    f.take(1 << 16).read_to_end(&mut head)?;
    Ok(head)
}

fn wait_for_port(procs: &mut Processes, port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        procs.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "nothing listens on 127.0.0.1:{port} after {} s",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A plain-HTTP GET on loopback (the host's metrics).
fn http_get(port: u16, path: &str) -> Result<String> {
    let mut resp = ureq::get(&format!("http://127.0.0.1:{port}{path}")).call()?;
    Ok(resp.body_mut().read_to_string()?)
}
