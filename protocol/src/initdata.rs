//! Init-data, as Kata Confidential Containers and Trustee define it: a TOML
//! document (`version = "0.1.0"`, `algorithm = "sha256" | "sha384" |
//! "sha512"`, a `[data]` table of string values) that the host hands the
//! pod VM at launch. The host is untrusted, so the document is worth only
//! what the hardware binds: the digest of its **exact bytes** under its
//! `algorithm` is the VM's SEV-SNP `HOST_DATA` (32 bytes) or TDX
//! `MRCONFIGID` (48 bytes), zero-padded or cut to that length — the rule
//! Kata's runtime and Trustee's verifiers apply. A reader that checks the
//! digest against its evidence may then believe every entry.
//!
//! ciel keeps its own settings in the `ciel.toml` entry ([`CIEL_ENTRY`]),
//! beside Kata's `aa.toml`, `cdh.toml` and `policy.rego`.

use std::collections::BTreeMap;

/// The one init-data version Kata and Trustee define.
pub const VERSION: &str = "0.1.0";
/// The `[data]` entry holding ciel's guest settings.
pub const CIEL_ENTRY: &str = "ciel.toml";
/// Larger documents are refused (Kata's own limit on the annotation is
/// smaller; this bounds what a broker or client parses).
pub const MAX_LEN: usize = 256 * 1024;
/// The pod annotation through which Kata takes init-data (gzip, then base64).
pub const KATA_ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";

/// The digest algorithms init-data may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn digest(self, bytes: &[u8]) -> Vec<u8> {
        let alg = match self {
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha384 => &ring::digest::SHA384,
            Algorithm::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, bytes).as_ref().to_vec()
    }
}

/// Why a document is not init-data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitDataError {
    #[error("init-data is {0} bytes; at most {MAX_LEN} are accepted")]
    TooLong(usize),
    #[error("init-data is not TOML: {0}")]
    Toml(String),
    #[error("init-data `{field}`: {why}")]
    Field { field: String, why: String },
    #[error("init-data format {0:?} is not supported (only \"toml\", as Kata writes it)")]
    Format(String),
}

fn field_err(field: impl Into<String>, why: impl Into<String>) -> InitDataError {
    InitDataError::Field {
        field: field.into(),
        why: why.into(),
    }
}

/// A parsed init-data document and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    body: String,
    algorithm: Algorithm,
    data: BTreeMap<String, String>,
    digest: Vec<u8>,
}

impl InitData {
    /// Parses `body` (the exact text the host was given) and digests it.
    pub fn parse(body: &str) -> Result<Self, InitDataError> {
        if body.len() > MAX_LEN {
            return Err(InitDataError::TooLong(body.len()));
        }
        let doc: toml::Table = body
            .parse()
            .map_err(|e: toml::de::Error| InitDataError::Toml(e.message().to_string()))?;
        for key in doc.keys() {
            if !matches!(key.as_str(), "version" | "algorithm" | "data") {
                return Err(field_err(
                    key.as_str(),
                    "unknown field (version, algorithm, data)",
                ));
            }
        }
        let text = |name: &str| -> Result<&str, InitDataError> {
            doc.get(name)
                .ok_or_else(|| field_err(name, "missing"))?
                .as_str()
                .ok_or_else(|| field_err(name, "not a string"))
        };
        let version = text("version")?;
        if version != VERSION {
            return Err(field_err(
                "version",
                format!("{version:?} is not supported (only {VERSION:?})"),
            ));
        }
        let name = text("algorithm")?;
        let algorithm = Algorithm::from_name(name).ok_or_else(|| {
            field_err(
                "algorithm",
                format!("{name:?} is not supported (sha256, sha384, sha512)"),
            )
        })?;
        let mut data = BTreeMap::new();
        if let Some(table) = doc.get("data") {
            let table = table
                .as_table()
                .ok_or_else(|| field_err("data", "not a table"))?;
            for (k, v) in table {
                let v = v
                    .as_str()
                    .ok_or_else(|| field_err(format!("data.{k}"), "not a string"))?;
                data.insert(k.clone(), v.to_string());
            }
        }
        Ok(InitData {
            digest: algorithm.digest(body.as_bytes()),
            body: body.to_string(),
            algorithm,
            data,
        })
    }

    /// The exact text, as the host was given it.
    pub fn body(&self) -> &str {
        &self.body
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The digest of the body under its algorithm.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// One `[data]` entry.
    pub fn entry(&self, name: &str) -> Option<&str> {
        self.data.get(name).map(String::as_str)
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// The value the hardware field must hold: the digest zero-padded or
    /// cut to `len` bytes (32 for SNP `HOST_DATA`, 48 for TDX `MRCONFIGID`).
    pub fn field(&self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (o, d) in out.iter_mut().zip(&self.digest) {
            *o = *d;
        }
        out
    }

    /// SEV-SNP `HOST_DATA`.
    pub fn host_data(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.field(32));
        out
    }

    /// TDX `MRCONFIGID`.
    pub fn mr_config_id(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(&self.field(48));
        out
    }

    /// Whether `field` (the evidence's `HOST_DATA` or `MRCONFIGID`, whole)
    /// binds this document. Nothing here is secret: a plain comparison.
    pub fn bound_by(&self, field: &[u8]) -> bool {
        field == self.field(field.len()).as_slice()
    }

    /// What an Azure vTPM's PCR 8 holds when launched with this document:
    /// its SHA-256 digest extended into a zeroed PCR, SHA-256(0³² ‖
    /// digest), as Kata's Azure images measure it and Trustee checks it.
    /// `None` for another digest algorithm (the PCR bank is SHA-256).
    pub fn pcr8(&self) -> Option<[u8; 32]> {
        if self.algorithm != Algorithm::Sha256 {
            return None;
        }
        let mut extended = [0u8; 64];
        extended[32..].copy_from_slice(self.digest.get(..32)?);
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &extended).as_ref());
        Some(out)
    }

    /// Whether evidence binds this document where it does (`anchor`): what
    /// binds it, or why not. The one check of the guest (at start), the key
    /// broker (at `/attest`) and the client (on every connection).
    pub fn check_anchor(&self, anchor: Anchor<'_>) -> Result<String, String> {
        let digest = format!("{} {}", self.algorithm.name(), hex::encode(&self.digest));
        match anchor {
            Anchor::Field(field) => {
                let name = if field.len() == 32 {
                    "HOST_DATA"
                } else {
                    "MRCONFIGID"
                };
                if self.bound_by(field) {
                    Ok(format!("{name} binds the init-data ({digest})"))
                } else {
                    Err(format!(
                        "the evidence's {name} is {}, not the init-data's digest ({digest})",
                        hex::encode(field)
                    ))
                }
            }
            Anchor::Pcr8(pcr) => match self.pcr8() {
                None => Err(format!(
                    "a vTPM binds init-data by its SHA-256 digest in PCR 8; this init-data's digest is {}",
                    self.algorithm.name()
                )),
                Some(want) if want == *pcr => {
                    Ok(format!("the quoted PCR 8 binds the init-data ({digest})"))
                }
                Some(want) => Err(format!(
                    "the quoted PCR 8 is {}, not SHA-256(0³² ‖ the init-data's digest) = {}",
                    hex::encode(pcr),
                    hex::encode(want)
                )),
            },
        }
    }
}

/// Where evidence binds init-data: HOST_DATA (SNP, 32 bytes) or MRCONFIGID
/// (TDX, 48 bytes) holding its digest, or an Azure vTPM's quoted PCR 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor<'a> {
    Field(&'a [u8]),
    Pcr8(&'a [u8; 32]),
}

/// Init-data as it travels in `/kbs/v0/attest` (`"init-data": {"format",
/// "body"}`, Trustee's KBS protocol).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitDataDocument {
    pub format: String,
    pub body: String,
}

impl InitDataDocument {
    pub fn toml(data: &InitData) -> Self {
        InitDataDocument {
            format: "toml".into(),
            body: data.body().to_string(),
        }
    }

    /// Parses the body; only the `toml` format (what Kata produces).
    pub fn parse(&self) -> Result<InitData, InitDataError> {
        if self.format != "toml" {
            return Err(InitDataError::Format(self.format.clone()));
        }
        InitData::parse(&self.body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DOC: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"ciel.toml\" = '''\nkbs = \"https://kbs.ciel.svc:8443\"\n'''\n\"aa.toml\" = \"\"\n";

    #[test]
    fn the_digest_is_over_the_exact_bytes_and_fits_each_platform() {
        let d = InitData::parse(DOC).unwrap();
        let want = ring::digest::digest(&ring::digest::SHA384, DOC.as_bytes());
        assert_eq!(d.digest(), want.as_ref());
        assert_eq!(d.algorithm(), Algorithm::Sha384);
        // SNP keeps the first 32 bytes; TDX all 48.
        assert_eq!(&d.host_data()[..], &want.as_ref()[..32]);
        assert_eq!(&d.mr_config_id()[..], want.as_ref());
        assert!(d.bound_by(&d.host_data()));
        assert!(d.bound_by(&d.mr_config_id()));
        assert_eq!(
            d.entry(CIEL_ENTRY),
            Some("kbs = \"https://kbs.ciel.svc:8443\"\n")
        );
        // One more space is another document.
        let other = InitData::parse(&format!("{DOC} ")).unwrap();
        assert!(!other.bound_by(&d.host_data()));
        // sha256 fills HOST_DATA exactly and is zero-padded in MRCONFIGID.
        let short = InitData::parse(&DOC.replace("sha384", "sha256")).unwrap();
        assert_eq!(&short.mr_config_id()[32..], &[0u8; 16]);
        assert_eq!(&short.mr_config_id()[..32], &short.host_data()[..]);
    }

    #[test]
    fn malformed_documents_are_named() {
        let cases = [
            ("version = \"0.2.0\"\nalgorithm = \"sha384\"\n", "version"),
            ("version = \"0.1.0\"\nalgorithm = \"md5\"\n", "algorithm"),
            ("version = \"0.1.0\"\n", "algorithm"),
            (
                "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = 1\n",
                "data.x",
            ),
            (
                "version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = \"\"\n",
                "extra",
            ),
        ];
        for (doc, field) in cases {
            match InitData::parse(doc) {
                Err(InitDataError::Field { field: f, .. }) => assert_eq!(f, field, "{doc}"),
                other => panic!("{doc}: {other:?}"),
            }
        }
        assert!(matches!(
            InitData::parse("version = "),
            Err(InitDataError::Toml(_))
        ));
        assert!(matches!(
            InitData::parse(&"#".repeat(MAX_LEN + 1)),
            Err(InitDataError::TooLong(_))
        ));
        let json = InitDataDocument {
            format: "json".into(),
            body: "{}".into(),
        };
        assert_eq!(json.parse(), Err(InitDataError::Format("json".into())));
    }

    /// PCR 8 holds the SHA-256 digest extended into zeros; a document
    /// digested with another algorithm has no PCR 8 value.
    #[test]
    fn pcr8_is_the_sha256_digest_extended_into_zeros() {
        assert_eq!(InitData::parse(DOC).unwrap().pcr8(), None);
        let doc = DOC.replace("sha384", "sha256");
        let d = InitData::parse(&doc).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, doc.as_bytes());
        let mut input = vec![0u8; 32];
        input.extend_from_slice(digest.as_ref());
        let want = ring::digest::digest(&ring::digest::SHA256, &input);
        assert_eq!(d.pcr8().map(|p| p.to_vec()), Some(want.as_ref().to_vec()));
    }

    /// One check for every anchor: a field holding the digest (by its
    /// length, HOST_DATA or MRCONFIGID), a quoted PCR 8; each mismatch says
    /// what was found and what was wanted.
    #[test]
    fn anchors_bind_or_say_why_not() {
        let sha384 = InitData::parse(DOC).unwrap();
        let field = sha384.field(48);
        let ok = sha384.check_anchor(Anchor::Field(&field)).unwrap();
        assert!(ok.starts_with("MRCONFIGID binds"), "{ok}");
        let e = sha384.check_anchor(Anchor::Field(&[0; 48])).unwrap_err();
        assert!(
            e.contains("MRCONFIGID is 0000") && e.contains("sha384"),
            "{e}"
        );
        let e = sha384.check_anchor(Anchor::Field(&[0; 32])).unwrap_err();
        assert!(e.contains("HOST_DATA"), "{e}");
        let e = sha384.check_anchor(Anchor::Pcr8(&[0; 32])).unwrap_err();
        assert!(e.contains("SHA-256 digest in PCR 8"), "{e}");
        let sha256 = InitData::parse(&DOC.replace("sha384", "sha256")).unwrap();
        let pcr8 = sha256.pcr8().unwrap();
        assert!(sha256.check_anchor(Anchor::Pcr8(&pcr8)).is_ok());
        let e = sha256.check_anchor(Anchor::Pcr8(&[1; 32])).unwrap_err();
        assert!(e.contains(&hex::encode(pcr8)), "{e}");
    }
}
