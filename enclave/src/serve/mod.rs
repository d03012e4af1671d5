//! The serving guest: boot (key release → sealed model fetched from the
//! host → authenticated parallel decryption in memory → engine → data key
//! dropped → attested TLS identity) and then the OpenAI-compatible API on a
//! transport port, TLS terminating here and nowhere else.

pub mod api;
pub mod attested_tls;
pub mod connections;
pub mod embeddings;
pub mod fetch;
mod logprobs;
pub mod object_store;
pub mod request;
mod request_fields;
mod sse;
mod tools;
pub mod worker;

use crate::kbs_client::{Backoff, EvidenceSource, KbsClient};
use attested_tls::AttestedIdentity;
use ciel_engine::chat::ChatTemplate;
use ciel_engine::device::ComputeDevice;
use ciel_engine::gguf::read_metadata;
use ciel_engine::model::Model;
use ciel_engine::tokenizer::Tokenizer;
use ciel_protocol::claims::ModelClaims;
use ciel_protocol::sealed::{DataKey, SealedHeader, UnsealOptions, unseal_in_memory};
use ciel_transport::{Endpoint, Listener};
pub use connections::{ConnectionLimits, serve};
use std::sync::Arc;

/// How the guest boots and serves.
pub struct ServeConfig {
    pub platform: Arc<dyn EvidenceSource + Send + Sync>,
    /// The GPUs attested with the CPU ([`crate::gpu::NoGpus`] for none):
    /// their evidence goes to the key broker with every release and into
    /// the attestation document; they are set ready once a key is released.
    pub gpus: Arc<dyn crate::gpu::GpuSource>,
    /// The key broker, `https://HOST:PORT`.
    pub kbs_url: String,
    /// The broker's CA (PEM), pinned.
    pub kbs_ca_pem: Vec<u8>,
    /// Reach the broker through the host's relay at this transport address
    /// (a loopback bridge inside the guest forwards to it); TLS to the
    /// broker stays end to end.
    pub kbs_via: Option<Endpoint>,
    /// Where the sealed models come from (the host's blob service, or an
    /// object store) and the sealed model's name there.
    pub model_from: fetch::ModelSource,
    pub model_blob: String,
    /// The name clients use for the model (default: the sealed header's).
    pub model_name: Option<String>,
    /// A sealed sentence-embedding model (a bundle from `ciel embeddings
    /// pack`) to serve beside it on `/v1/embeddings`, by blob name, and
    /// the name clients use for it (default: the sealed header's).
    pub embedding_blob: Option<String>,
    pub embedding_name: Option<String>,
    /// Where the API listens (a vsock port in a VM).
    pub listen: Endpoint,
    /// Requests waiting beyond the running batch before 429.
    pub queue: usize,
    /// Where the forward pass runs (on a GPU: candle's kernels, one
    /// sequence per pass, so `max_batch` 1 and no prefix cache).
    pub device: ComputeDevice,
    /// Sequences decoded together in one pass.
    pub max_batch: usize,
    /// Tokens one pass carries (decodes and prompt chunks).
    pub step_tokens: usize,
    /// Reuse the keys of prefixes shared between requests.
    pub prefix_cache: bool,
    /// Bounds on connections and on slow clients.
    pub limits: ConnectionLimits,
    pub max_tokens_limit: usize,
    /// Bytes the K/V cache may take: the context served is the model's
    /// trained one or what fits this, whichever is smaller.
    pub kv_memory: u64,
    /// Parallel range requests when fetching the model.
    pub fetch_parallel: usize,
    /// Retries and per-attempt timeout for the key release.
    pub kbs_backoff: Backoff,
    /// How often the certificate's evidence is made anew (`None`: never),
    /// for clients whose policy bounds its age.
    pub evidence_refresh: Option<std::time::Duration>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("kbs_url", &self.kbs_url)
            .field("model_from", &self.model_from)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Why the guest did not come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error("fetching the sealed model from the host: {0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("sealed model: {0}")]
    Sealed(#[from] ciel_protocol::sealed::SealError),
    #[error("key release: {0}")]
    KeyRelease(#[from] crate::kbs_client::KbsClientError),
    #[error("the released key is {0} bytes, expected 32")]
    KeyLength(usize),
    #[error("model: {0}")]
    Model(String),
    #[error(transparent)]
    Identity(#[from] attested_tls::IdentityError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Io { what, source }
}

/// A loopback TCP listener inside the guest whose connections are carried
/// to `relay` (the host's key-broker relay, its collateral service), on the
/// one server loop. Returns the local port; the bridge lives as long as the
/// runtime.
pub async fn start_egress_bridge(relay: Endpoint) -> Result<u16, BootError> {
    use ciel_transport::server::{ConnectionCounters, Limits};
    let l = Listener::bind(&Endpoint::Tcp("127.0.0.1:0".into()))
        .await
        .map_err(io_err("egress bridge"))?;
    let port = l.tcp_addr().map_err(io_err("egress bridge"))?.port();
    // Only the guest's own key-release client connects here.
    let limits = Limits {
        max_connections: 64,
        grace: std::time::Duration::ZERO,
    };
    let counters = Arc::new(ConnectionCounters::default());
    tokio::spawn(ciel_transport::server::serve(
        l,
        limits,
        counters,
        std::future::pending(),
        move |mut local, _| {
            let relay = relay.clone();
            async move {
                match ciel_transport::connect(&relay).await {
                    Ok(mut remote) => {
                        let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                    }
                    Err(e) => tracing::warn!(%relay, error = %e, "key broker relay unreachable"),
                }
            }
        },
    ));
    Ok(port)
}

/// `https://host:port/...` with the port replaced.
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    if path.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}/{path}")
    }
}

/// Decrypts a sealed model in memory (chunks in parallel, each
/// authenticated before use), drops the key, and loads the engine with the
/// plaintext digest re-checked beside the load: the model, its tokenizer
/// and its chat template, if it has one. The plaintext is zeroized when this returns.
pub fn load_sealed_model(
    sealed: Vec<u8>,
    key: DataKey,
    device: ComputeDevice,
) -> Result<(Model, Tokenizer, Option<ChatTemplate>), BootError> {
    let options = UnsealOptions {
        verify_plaintext_digest: false,
        ..UnsealOptions::default()
    };
    let plain = unseal_in_memory(sealed, &key, options)?;
    drop(key);
    let meta = read_metadata(&mut plain.reader()).map_err(|e| BootError::Model(e.to_string()))?;
    let tokenizer = Tokenizer::from_gguf(&meta).map_err(|e| BootError::Model(e.to_string()))?;
    // A base model has no chat template: it serves completions, and chat
    // requests get a 400 saying so.
    let template = ChatTemplate::from_gguf(&meta).map_err(|e| BootError::Model(e.to_string()))?;
    if template.is_none() {
        tracing::warn!("the model has no chat template: /v1/chat/completions will refuse requests");
    }
    let model = crate::sealed_model::load_unsealed_on(&plain, device)
        .map_err(|e| BootError::Model(e.to_string()))?;
    Ok((model, tokenizer, template))
}

/// The data key of `resource`, released by the broker at `kbs_url` to this
/// guest's evidence.
async fn release_key(
    cfg: &ServeConfig,
    kbs_url: &str,
    resource: &str,
) -> Result<DataKey, BootError> {
    let (platform, gpus) = (cfg.platform.clone(), cfg.gpus.clone());
    let ca = cfg.kbs_ca_pem.clone();
    let backoff = cfg.kbs_backoff;
    let (url, res) = (kbs_url.to_string(), resource.to_string());
    let key = tokio::task::spawn_blocking(move || {
        let client = KbsClient::with_pinned_ca(&url, &ca, backoff)?;
        client.fetch_resource_with_gpus(&res, platform.as_ref(), gpus.as_ref())
    })
    .await
    .map_err(|e| BootError::Model(format!("key release task: {e}")))??;
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| BootError::KeyLength(key.len()))?;
    Ok(DataKey::from_bytes(key))
}

/// The sealed embedding model `blob`: fetched, its key released, decrypted
/// and digest-checked in memory, loaded; with the claims naming it.
async fn load_embedding_model(
    cfg: &ServeConfig,
    kbs_url: &str,
    blob: &str,
) -> Result<(embeddings::Embeddings, ModelClaims), BootError> {
    let sealed = cfg.model_from.fetch(blob, cfg.fetch_parallel).await?;
    let header = SealedHeader::parse(&sealed)?;
    let claims = ModelClaims {
        name: cfg
            .embedding_name
            .clone()
            .unwrap_or_else(|| header.header.model.name.clone()),
        sha256: header.header.plaintext_sha256.clone(),
    };
    let key = release_key(cfg, kbs_url, &header.header.resource).await?;
    let model = tokio::task::spawn_blocking(move || {
        let plain = unseal_in_memory(sealed, &key, UnsealOptions::default())?;
        drop(key);
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(
            usize::try_from(plain.len()).unwrap_or(0),
        ));
        plain.chunks().for_each(|c| bytes.extend_from_slice(c));
        drop(plain);
        ciel_engine::embeddings::EmbeddingModel::from_bundle(&bytes)
            .map_err(|e| BootError::Model(e.to_string()))
    })
    .await
    .map_err(|e| BootError::Model(format!("embedding model load task: {e}")))??;
    tracing::info!(
        name = %claims.name,
        dimensions = model.dimensions(),
        max_tokens = model.max_tokens(),
        "embedding model authenticated, decrypted and loaded; data key dropped"
    );
    Ok((
        embeddings::Embeddings::new(model, claims.name.clone(), cfg.queue),
        claims,
    ))
}

/// Makes the certificate's evidence anew every `every`, for as long as the
/// guest serves; a failure is logged and the certificate keeps its last.
async fn refresh_evidence(
    identity: Arc<AttestedIdentity>,
    platform: Arc<dyn EvidenceSource + Send + Sync>,
    gpus: Arc<dyn crate::gpu::GpuSource>,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (id, p, g) = (identity.clone(), platform.clone(), gpus.clone());
        match tokio::task::spawn_blocking(move || id.refresh(p.as_ref(), g.as_ref())).await {
            Ok(Ok(doc)) => tracing::info!(
                issued_at = doc.claims.issued_at.unwrap_or(0),
                gpus = doc.claims.gpus.len(),
                "the certificate's evidence made anew"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "refreshing the evidence failed; the certificate keeps its last")
            }
            Err(e) => tracing::warn!(error = %e, "the evidence refresh task failed"),
        }
    }
}

/// Boots and serves until SIGINT/SIGTERM. `ready` is called with the
/// verified claims once the API listens.
pub async fn run(cfg: ServeConfig, ready: impl FnOnce(&AttestedIdentity)) -> Result<(), BootError> {
    let started = std::time::Instant::now();
    // 1. The sealed model, fetched from the (untrusted) host in parallel.
    let sealed = cfg
        .model_from
        .fetch(&cfg.model_blob, cfg.fetch_parallel)
        .await?;
    let header = SealedHeader::parse(&sealed)?;
    let resource = header.header.resource.clone();
    let model_sha256 = header.header.plaintext_sha256.clone();
    let model_name = cfg
        .model_name
        .clone()
        .unwrap_or_else(|| header.header.model.name.clone());
    tracing::info!(bytes = sealed.len(), %resource, "sealed model fetched from the host");

    // 2. Key release, through the host's relay when configured.
    let kbs_url = match &cfg.kbs_via {
        Some(relay) => with_port(&cfg.kbs_url, start_egress_bridge(relay.clone()).await?),
        None => cfg.kbs_url.clone(),
    };
    let key = release_key(&cfg, &kbs_url, &resource).await?;

    // 3. Decrypt in memory (chunks in parallel, each authenticated before
    //    use), drop the key, load with the digest re-checked alongside
    //    (onto the GPU, when serving on one, from the decrypted memory).
    let device = cfg.device;
    let (model, tokenizer, template) =
        tokio::task::spawn_blocking(move || load_sealed_model(sealed, key, device))
            .await
            .map_err(|e| BootError::Model(format!("load task: {e}")))??;
    tracing::info!(%device, "model authenticated, decrypted and loaded; data key dropped");
    let (embeddings, embedding_claims) = match &cfg.embedding_blob {
        None => (None, None),
        Some(blob) => {
            let (e, claims) = load_embedding_model(&cfg, &kbs_url, blob).await?;
            (Some(Arc::new(e)), Some(claims))
        }
    };

    // 4. TLS identity and evidence bound to it (the CPU's and every GPU's).
    let (platform, gpus) = (cfg.platform.clone(), cfg.gpus.clone());
    let model_claims = ModelClaims {
        name: model_name,
        sha256: model_sha256,
    };
    let identity = tokio::task::spawn_blocking(move || {
        AttestedIdentity::generate(
            platform.as_ref(),
            gpus.as_ref(),
            model_claims,
            embedding_claims,
        )
    })
    .await
    .map_err(|e| BootError::Model(format!("identity task: {e}")))??;
    let identity = Arc::new(identity);
    if let Some(every) = cfg.evidence_refresh {
        tokio::spawn(refresh_evidence(
            identity.clone(),
            cfg.platform.clone(),
            cfg.gpus.clone(),
            every,
        ));
    }

    // 5. Serve, with the context the K/V budget holds.
    let mut model = model;
    let trained = model.context();
    let context = model
        .bound_kv_memory(cfg.kv_memory)
        .map_err(|e| BootError::Model(e.to_string()))?;
    if context == 0 {
        return Err(BootError::Model(format!(
            "--kv-memory {} bytes holds no token of this model's K/V cache ({} bytes a token)",
            cfg.kv_memory,
            model.kv_bytes_per_token()
        )));
    }
    let limits = ciel_engine::scheduler::Limits {
        max_batch: cfg.max_batch,
        step_tokens: cfg.step_tokens,
        kv_blocks: model.kv_blocks(),
        context,
        prefix_cache: cfg.prefix_cache,
    };
    limits
        .check()
        .map_err(|e| BootError::Model(e.to_string()))?;
    tracing::info!(
        trained_context = trained,
        context,
        kv_memory = cfg.kv_memory,
        kv_bytes_per_token = model.kv_bytes_per_token(),
        kv_blocks = limits.kv_blocks,
        max_batch = limits.max_batch,
        step_tokens = limits.step_tokens,
        prefix_cache = limits.prefix_cache,
        "context and batch bounded by the K/V memory budget"
    );
    let worker = worker::Worker::spawn(model, Arc::new(tokenizer), limits, cfg.queue)
        .map_err(io_err("engine thread"))?;
    let state = Arc::new(api::ApiState {
        worker,
        template,
        claims: identity.claims.clone(),
        platform: cfg.platform.clone(),
        gpus: cfg.gpus.clone(),
        max_tokens_limit: cfg.max_tokens_limit,
        embeddings,
    });
    let listener = Listener::bind(&cfg.listen)
        .await
        .map_err(io_err(format!("listening on {}", cfg.listen)))?;
    // Made (its signal handlers installed) before the guest says it
    // serves: a SIGTERM from then on stops it gracefully.
    let serving = serve(
        listener,
        identity.server_config.clone(),
        api::router(state),
        cfg.limits,
    );
    tracing::info!(
        listen = %cfg.listen,
        boot_ms = started.elapsed().as_millis() as u64,
        tls_spki_sha256 = %identity.claims.tls_spki_sha256,
        gpus = identity.claims.gpus.len(),
        "serving"
    );
    ready(&identity);
    serving.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_port_replaces_only_the_port() {
        assert_eq!(
            super::with_port("https://127.0.0.1:8443", 9),
            "https://127.0.0.1:9"
        );
        assert_eq!(
            super::with_port("https://localhost/kbs", 9),
            "https://localhost:9/kbs"
        );
    }
}
