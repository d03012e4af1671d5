//! Broker configuration: raw TOML (serde) → validated [`Config`]. Every
//! served resource must name its attestation policy; there is no default
//! that releases keys.

use crate::resource::ResourcePath;
use ciel_attestation::Policy;
use ciel_attestation::collateral::CollateralLookup;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The file store (one broker); or, instead, `[postgres]`.
    key_store: Option<PathBuf>,
    /// The master key in a file (hex); or, instead, `[master_key_pkcs11]`.
    master_key_file: Option<PathBuf>,
    /// The master key inside a PKCS#11 token (an HSM).
    master_key_pkcs11: Option<crate::master_key::Pkcs11Config>,
    audit_log: Option<PathBuf>,
    /// Keys, sessions and the audit log in PostgreSQL, shared by replicas.
    postgres: Option<crate::postgres::PgConfig>,
    session_ttl_seconds: Option<u64>,
    max_sessions: Option<usize>,
    /// Ed25519 public key (hex) whose signatures authorize admin requests
    /// (every role; `[[admin]]` tables name keys with chosen roles).
    admin_public_key: Option<String>,
    #[serde(default)]
    admin: Vec<RawAdmin>,
    /// DANGER: simulated roots accepted as authentic at `/attest`.
    #[serde(default)]
    danger_simulated_roots: Vec<String>,
    #[serde(default)]
    resource: Vec<RawResource>,
    /// DCAP collateral (JSON) for TDX evidence that carries none.
    dcap_collateral: Option<PathBuf>,
    /// A collateral bundle (`ciel collateral bundle`): DCAP collateral by
    /// FMSPC, VCEKs for SNP evidence that carries none, AMD's CRLs.
    collateral_bundle: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    name: String,
    public_key: String,
    /// Any of register, rotate, retire, audit.
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    path: String,
    /// Attestation policy (TOML) that evidence must satisfy for release.
    policy_file: Option<PathBuf>,
    /// A Trustee resource policy (Rego) over the attestation token's
    /// claims; with `policy_file`, both must allow the release.
    rego_policy_file: Option<PathBuf>,
    /// DANGER: release to Trustee's unsigned `sample` evidence (interop
    /// tests only; anyone can make such evidence).
    #[serde(default)]
    danger_accept_sample_evidence: bool,
}

/// What releasing one resource requires.
#[derive(Debug)]
pub struct ResourcePolicy {
    /// The TOML policy over the evidence (`None`: the broker's authenticity
    /// policy, with the Rego policy deciding).
    pub evidence: Option<Policy>,
    pub rego: Option<crate::rego::RegoPolicy>,
    /// DANGER: released to Trustee's unsigned `sample` evidence too (the
    /// Rego policy, if any, still decides).
    pub danger_accept_sample_evidence: bool,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where keys, sessions and the audit log are kept.
    pub storage: Storage,
    pub master_key: MasterKeySource,
    pub session_ttl: Duration,
    pub max_sessions: usize,
    /// The keys that may sign admin requests, with their roles.
    pub admin_keys: Vec<crate::admin::AdminKey>,
    /// The authenticity policy applied at `/attest`.
    pub attest_policy: Policy,
    /// Release policy per resource.
    pub resources: BTreeMap<ResourcePath, ResourcePolicy>,
    /// Collateral for TDX evidence in Trustee's shape (quote only).
    pub dcap_collateral: Option<ciel_attestation::collateral::DcapCollateral>,
    /// Collateral for evidence that carries none (and AMD's CRLs).
    pub collateral_bundle: Option<ciel_collateral::Bundle>,
}

impl Config {
    /// Where collateral the evidence does not carry comes from: the bundle,
    /// then `dcap_collateral` for a quote the bundle has nothing for.
    pub fn collateral(&self) -> Option<&(dyn CollateralLookup + Sync)> {
        match (&self.collateral_bundle, &self.dcap_collateral) {
            (None, None) => None,
            _ => Some(self),
        }
    }

    /// Loads `path`; relative paths inside are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: m,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut attest_policy = Policy::authenticity_only();
        for fp in &raw.danger_simulated_roots {
            let b: [u8; 32] = hex::decode(fp)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err(format!(
                        "danger_simulated_roots: {fp:?} is not a 32-byte hex fingerprint"
                    ))
                })?;
            attest_policy.danger_trust_simulated_root(b);
        }
        let mut resources = BTreeMap::new();
        for r in &raw.resource {
            let rp = ResourcePath::parse(&r.path).map_err(|e| err(e.to_string()))?;
            if r.policy_file.is_none()
                && r.rego_policy_file.is_none()
                && !r.danger_accept_sample_evidence
            {
                return Err(err(format!(
                    "resource {rp} names no policy: give policy_file (TOML), rego_policy_file (Rego) or both"
                )));
            }
            let evidence = match &r.policy_file {
                Some(pf) => {
                    let pf = rel(pf);
                    let text = std::fs::read_to_string(&pf)
                        .map_err(|e| err(format!("resource {rp}: policy {}: {e}", pf.display())))?;
                    Some(
                        Policy::from_toml(&text).map_err(|e| {
                            err(format!("resource {rp}: policy {}: {e}", pf.display()))
                        })?,
                    )
                }
                None => None,
            };
            let rego = match &r.rego_policy_file {
                Some(p) => Some(
                    crate::rego::RegoPolicy::load(&rel(p))
                        .map_err(|e| err(format!("resource {rp}: {e}")))?,
                ),
                None => None,
            };
            if resources
                .insert(
                    rp.clone(),
                    ResourcePolicy {
                        evidence,
                        rego,
                        danger_accept_sample_evidence: r.danger_accept_sample_evidence,
                    },
                )
                .is_some()
            {
                return Err(err(format!("resource {rp} is configured twice")));
            }
        }
        let admin_keys = admin_keys(&raw).map_err(err)?;
        // A file named by a field, read and parsed; errors name both.
        fn load<T, E: std::fmt::Display>(
            field: &str,
            path: Option<PathBuf>,
            parse: impl Fn(&[u8]) -> Result<T, E>,
        ) -> Result<Option<T>, String> {
            let Some(p) = path else { return Ok(None) };
            let bytes = std::fs::read(&p).map_err(|e| format!("{field} {}: {e}", p.display()))?;
            parse(&bytes)
                .map(Some)
                .map_err(|e| format!("{field} {}: {e}", p.display()))
        }
        let dcap_collateral = load(
            "dcap_collateral",
            raw.dcap_collateral.as_deref().map(rel),
            ciel_attestation::collateral::DcapCollateral::from_json,
        )
        .map_err(err)?;
        let collateral_bundle = load(
            "collateral_bundle",
            raw.collateral_bundle.as_deref().map(rel),
            ciel_collateral::Bundle::from_json,
        )
        .map_err(err)?;
        let storage = match (&raw.key_store, &raw.audit_log, &raw.postgres) {
            (Some(k), Some(a), None) => Storage::Files {
                key_store: rel(k),
                audit_log: rel(a),
            },
            (None, None, Some(pg)) => Storage::Postgres(pg.clone().resolve(rel).map_err(err)?),
            (_, _, Some(_)) => {
                return Err(err(
                    "[postgres] holds the keys and the audit log: leave key_store and audit_log out".into(),
                ));
            }
            (None, _, None) | (_, None, None) => {
                return Err(err(
                    "give key_store and audit_log (files, one broker), or [postgres] (replicas)"
                        .into(),
                ));
            }
        };
        Ok(Config {
            dcap_collateral,
            collateral_bundle,
            storage,
            master_key: match (&raw.master_key_file, &raw.master_key_pkcs11) {
                (Some(f), None) => MasterKeySource::File(rel(f)),
                (None, Some(p)) => MasterKeySource::Pkcs11(crate::master_key::Pkcs11Config {
                    pin_file: rel(&p.pin_file),
                    ..p.clone()
                }),
                (Some(_), Some(_)) => {
                    return Err(err(
                        "master_key_file and [master_key_pkcs11] both given: the master key is in one place".into(),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        "no master key: set master_key_file, or [master_key_pkcs11] for a key in an HSM".into(),
                    ));
                }
            },
            session_ttl: Duration::from_secs(raw.session_ttl_seconds.unwrap_or(300)),
            max_sessions: raw.max_sessions.unwrap_or(10_000),
            admin_keys,
            attest_policy,
            resources,
        })
    }
}

impl Config {
    /// Whether any resource accepts Trustee's unsigned `sample` evidence
    /// (only then does `/auth` take `tee: sample`).
    pub fn accepts_sample_evidence(&self) -> bool {
        self.resources
            .values()
            .any(|r| r.danger_accept_sample_evidence)
    }
}

/// `value` as the TOML table `[name]` of a `kbs.toml` (for the files
/// `ciel kbs init` and the benchmarks write: quoted as TOML quotes).
pub fn toml_table<T: serde::Serialize>(name: &str, value: &T) -> Result<String, toml::ser::Error> {
    let mut outer = std::collections::BTreeMap::new();
    outer.insert(name, value);
    toml::to_string(&outer)
}

/// Where the broker keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// One broker: a key store file and an audit log file (the default).
    Files {
        key_store: PathBuf,
        audit_log: PathBuf,
    },
    /// Replicas: everything in one PostgreSQL database.
    Postgres(crate::postgres::PgConfig),
}

impl Storage {
    /// The key store and audit log files, for a broker that uses them.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match self {
            Storage::Files {
                key_store,
                audit_log,
            } => Some((key_store, audit_log)),
            Storage::Postgres(_) => None,
        }
    }
}

/// Where the key store's master key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file holding the key as hex (the embedded default).
    File(PathBuf),
    /// A key inside a PKCS#11 token.
    Pkcs11(crate::master_key::Pkcs11Config),
}

impl MasterKeySource {
    /// Reads the file, or logs in to the token and finds the key.
    pub fn open(&self) -> Result<crate::master_key::MasterKey, crate::master_key::MasterKeyError> {
        match self {
            MasterKeySource::File(p) => crate::master_key::MasterKey::from_file(p),
            MasterKeySource::Pkcs11(c) => crate::master_key::MasterKey::open_pkcs11(c),
        }
    }
}

fn ed25519_key(field: &str, hex_key: &str) -> Result<[u8; 32], String> {
    hex::decode(hex_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{field}: not a 32-byte hex Ed25519 key"))
}

/// `admin_public_key` (every role, named "admin") and the `[[admin]]` keys.
fn admin_keys(raw: &RawConfig) -> Result<Vec<crate::admin::AdminKey>, String> {
    use crate::admin::{AdminKey, Role};
    let mut keys = Vec::new();
    if let Some(h) = &raw.admin_public_key {
        keys.push(AdminKey {
            name: "admin".into(),
            public_key: ed25519_key("admin_public_key", h)?,
            roles: Role::ALL.to_vec(),
        });
    }
    for (i, a) in raw.admin.iter().enumerate() {
        let field = format!("admin[{i}] ({:?})", a.name);
        if a.name.is_empty() || keys.iter().any(|k: &AdminKey| k.name == a.name) {
            return Err(format!("{field}: the name must be non-empty and unique"));
        }
        let public_key = ed25519_key(&format!("{field}.public_key"), &a.public_key)?;
        if keys.iter().any(|k| k.public_key == public_key) {
            return Err(format!("{field}: this public key is already configured"));
        }
        if a.roles.is_empty() {
            return Err(format!(
                "{field}.roles: empty (register, rotate, retire, audit)"
            ));
        }
        let roles = a
            .roles
            .iter()
            .map(|r| {
                Role::parse(r).ok_or_else(|| {
                    format!("{field}.roles: unknown role {r:?} (register, rotate, retire, audit)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.push(AdminKey {
            name: a.name.clone(),
            public_key,
            roles,
        });
    }
    Ok(keys)
}

impl CollateralLookup for Config {
    fn dcap(&self, quote: &[u8]) -> Result<ciel_attestation::collateral::DcapCollateral, String> {
        match (&self.collateral_bundle, &self.dcap_collateral) {
            (Some(b), None) => b.dcap(quote),
            (Some(b), Some(d)) => b.dcap(quote).or_else(|_| d.dcap(quote)),
            (None, Some(d)) => d.dcap(quote),
            (None, None) => Err("no collateral source is configured".into()),
        }
    }

    fn snp_vcek(&self, report: &ciel_attestation::snp::SnpReport) -> Result<Vec<u8>, String> {
        match &self.collateral_bundle {
            Some(b) => b.snp_vcek(report),
            None => Err("the broker has no `collateral_bundle` to find a VCEK in".into()),
        }
    }

    fn snp_chain(&self, report: &ciel_attestation::snp::SnpReport) -> Option<Vec<u8>> {
        self.collateral_bundle.as_ref()?.snp_chain(report)
    }

    fn snp_crl(&self, report: &ciel_attestation::snp::SnpReport) -> Option<Vec<u8>> {
        self.collateral_bundle.as_ref()?.snp_crl(report)
    }
}
