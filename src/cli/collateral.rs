//! `ciel collateral`: bundles of attestation collateral for air-gapped hubs
//! (made from the host's cache or fetched from a collateral service), and
//! what a bundle holds; and the upstream options the host's collateral
//! service shares with `bundle --fetch`.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::{Evidence, UnixTime};
use ciel_collateral::lookup::{self, Source};
use ciel_collateral::{Bundle, Entry, Store, Upstream, Upstreams};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum CollateralCommand {
    /// Write one file with collateral and when each item was fetched, for
    /// clients (`ciel verify --collateral-bundle`) and brokers
    /// (`collateral_bundle` in the broker's config) with no network.
    Bundle(BundleArgs),
    /// List what a bundle holds: each item, when it was fetched, when its
    /// content stops being current.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Every item of the host's collateral cache (`ciel host serve
    /// --collateral-cache DIR`).
    #[arg(long, conflicts_with = "from")]
    pub from_cache: Option<PathBuf>,
    /// A collateral service to fetch from (the host's, `http://HOST:PORT`),
    /// the items the `--for` evidence needs.
    #[arg(long, requires = "evidence")]
    pub from: Option<String>,
    /// Evidence whose collateral to fetch: an SNP report or a DCAP quote
    /// (raw binary), or Azure vTPM evidence (Trustee's az-snp-vtpm or
    /// az-tdx-vtpm JSON: its SNP report's or TD quote's); repeatable.
    #[arg(long = "for", id = "evidence")]
    pub evidence: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub bundle: PathBuf,
}

/// The upstream options of the host's collateral service.
#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// NAME=URL: where items are fetched from (amd, intel,
    /// intel-root-ca-crl, nvidia-rim, nvidia-ocsp; a mirror or a PCCS);
    /// NAME=none fetches none of that kind. Default: the vendors' services.
    #[arg(long = "collateral-upstream", value_name = "NAME=URL")]
    pub upstream: Vec<String>,
    /// PEM roots that https upstreams are checked by.
    #[arg(
        long = "collateral-upstream-ca",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub upstream_ca: PathBuf,
    /// Seconds a fetch may take.
    #[arg(long = "collateral-fetch-timeout-secs", default_value_t = 30)]
    pub fetch_timeout_secs: u64,
}

impl UpstreamArgs {
    /// The upstreams: the vendors' services, overridden or turned off
    /// per `--collateral-upstream`.
    pub fn upstreams(&self) -> Result<Upstreams> {
        let mut urls: BTreeMap<Upstream, String> = ciel_collateral::upstream::DEFAULTS
            .into_iter()
            .map(|(u, url)| (u, url.to_string()))
            .collect();
        for spec in &self.upstream {
            let (name, url) = spec
                .split_once('=')
                .with_context(|| format!("--collateral-upstream {spec:?}: expected NAME=URL"))?;
            let Some(u) = Upstream::from_name(name) else {
                let names: Vec<&str> = Upstream::ALL.iter().map(|u| u.name()).collect();
                bail!(
                    "--collateral-upstream {name:?}: unknown (one of {})",
                    names.join(", ")
                );
            };
            if url == "none" {
                urls.remove(&u);
            } else {
                urls.insert(u, url.to_string());
            }
        }
        let https = urls.values().any(|u| u.starts_with("https://"));
        let roots = if https {
            Some(files::read("--collateral-upstream-ca", &self.upstream_ca)?)
        } else {
            None
        };
        Upstreams::new(
            urls,
            roots.as_deref(),
            Duration::from_secs(self.fetch_timeout_secs.max(1)),
        )
        .map_err(anyhow::Error::msg)
    }
}

pub fn run(cmd: CollateralCommand) -> Result<ExitCode> {
    match cmd {
        CollateralCommand::Bundle(a) => bundle(a),
        CollateralCommand::Show(a) => show(a),
    }
}

fn now() -> UnixTime {
    UnixTime(files::now())
}

fn bundle(a: BundleArgs) -> Result<ExitCode> {
    let entries: Vec<Entry> = match (&a.from_cache, &a.from) {
        (Some(dir), None) => {
            if !dir.is_dir() {
                bail!("--from-cache {}: not a directory", dir.display());
            }
            Store::open(dir)?.entries()
        }
        (None, Some(url)) => {
            let service =
                Upstreams::service(url, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
            let mut out = Vec::new();
            for path in &a.evidence {
                out.extend(
                    needed(&service, &files::read("evidence", path)?).with_context(|| {
                        format!("{}: the collateral it needs from {url}", path.display())
                    })?,
                );
            }
            out
        }
        _ => bail!("give --from-cache DIR, or --from URL with --for EVIDENCE"),
    };
    if entries.is_empty() {
        bail!("nothing to bundle: no items");
    }
    let bundle = Bundle::new(now(), entries);
    files::write_atomic(&a.out, &bundle.to_json())
        .with_context(|| format!("--out {}", a.out.display()))?;
    eprintln!("{}: {} items", a.out.display(), bundle.len());
    Ok(ExitCode::SUCCESS)
}

/// The items `evidence` needs, fetched from `src`: a quote's four DCAP
/// items; a report's VCEK, and its product's chain and CRL where served;
/// for Azure vTPM evidence, those of the hardware report it binds.
fn needed(src: &Upstreams, evidence: &[u8]) -> Result<Vec<Entry>> {
    use ciel_attestation::azure::AzVtpm;
    if AzVtpm::detect(evidence) {
        let vtpm = AzVtpm::from_json(evidence).map_err(anyhow::Error::msg)?;
        let report = vtpm.hardware_report().map_err(anyhow::Error::msg)?;
        return needed(src, report);
    }
    let get = |item| src.entry(&item).map_err(anyhow::Error::msg);
    match Evidence::parse(evidence).context("not an SNP report or a DCAP quote")? {
        Evidence::Dcap(_) => lookup::dcap_items(evidence)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(get)
            .collect(),
        Evidence::Snp(report) => {
            let mut out = Vec::new();
            let products = match report.product() {
                Some(p) => vec![p],
                None => ciel_attestation::roots::AmdProduct::ALL.to_vec(),
            };
            let mut why = Vec::new();
            for p in products {
                match get(lookup::vcek_item(&report, p)) {
                    Ok(vcek) => {
                        out.push(vcek);
                        for item in lookup::amd_items(&report, p) {
                            match get(item) {
                                Ok(e) => out.push(e),
                                Err(e) => tracing::warn!(error = %e, "left out"),
                            }
                        }
                        return Ok(out);
                    }
                    Err(e) => why.push(e.to_string()),
                }
            }
            bail!("no VCEK for this report: {}", why.join("; "))
        }
        Evidence::Nvidia(_) => bail!("GPU evidence: bundle its RIMs from a cache (--from-cache)"),
    }
}

fn show(a: ShowArgs) -> Result<ExitCode> {
    let bundle = Bundle::from_json(&files::read("bundle", &a.bundle)?)
        .with_context(|| a.bundle.display().to_string())?;
    let now = now();
    let mut out = format!(
        "{}: {} items, made {}\n",
        a.bundle.display(),
        bundle.len(),
        bundle.created_at
    );
    for e in bundle.entries() {
        let until = match e.not_after {
            Some(t) if e.expired(now) => format!("EXPIRED {t}"),
            Some(t) => format!("until {t}"),
            None => "no end stated".to_string(),
        };
        out.push_str(&format!(
            "{:<18} fetched {}  {until}  {}\n",
            e.item.kind(),
            e.fetched_at,
            e.item
        ));
    }
    super::attest::write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}
