//! What can be asked for: each item of collateral named by the path (and
//! query) its upstream serves it at, so the host's service answers the
//! same requests as AMD's KDS, Intel's PCS/PCCS and NVIDIA's RIM service,
//! and a tool pointed at either gets the same bytes.
//!
//! Requests are parsed strictly (known paths, hex of the right length,
//! known parameters only): the service is reachable from the guest and from
//! clients, and nothing unparsed reaches an upstream or the disk.

use ciel_attestation::roots::AmdProduct;
use std::fmt;

/// Which upstream serves an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upstream {
    /// AMD's Key Distribution Service (VCEKs, cert chains, CRLs).
    Amd,
    /// Intel's PCS, or a PCCS (TCB info, QE identity, PCK CRLs).
    Intel,
    /// The Intel SGX Root CA's CRL: a whole URL (Intel's, or a PCCS's
    /// `…/sgx/certification/v4/rootcacrl`).
    IntelRootCaCrl,
    /// NVIDIA's RIM service (reference integrity manifests).
    NvidiaRim,
    /// NVIDIA's OCSP responder.
    NvidiaOcsp,
}

impl Upstream {
    pub const ALL: [Upstream; 5] = [
        Upstream::Amd,
        Upstream::Intel,
        Upstream::IntelRootCaCrl,
        Upstream::NvidiaRim,
        Upstream::NvidiaOcsp,
    ];

    /// The name used on the command line (`--collateral-upstream amd=URL`).
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Amd => "amd",
            Upstream::Intel => "intel",
            Upstream::IntelRootCaCrl => "intel-root-ca-crl",
            Upstream::NvidiaRim => "nvidia-rim",
            Upstream::NvidiaOcsp => "nvidia-ocsp",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Upstream::ALL.into_iter().find(|u| u.name() == s)
    }
}

/// The AMD key an item belongs to: VCEK (per chip) or VLEK (per cloud).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AmdKey {
    Vcek,
    Vlek,
}

impl AmdKey {
    fn segment(self) -> &'static str {
        match self {
            AmdKey::Vcek => "vcek",
            AmdKey::Vlek => "vlek",
        }
    }
}

/// DCAP's two TEE flavours (PCS serves each its own TCB info and QE
/// identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntelTee {
    Sgx,
    Tdx,
}

impl IntelTee {
    fn segment(self) -> &'static str {
        match self {
            IntelTee::Sgx => "sgx",
            IntelTee::Tdx => "tdx",
        }
    }
}

/// The CA that issued a PCK certificate, hence which PCK CRL applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PckCa {
    Processor,
    Platform,
}

/// The SVNs a VCEK is issued for (KDS query parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcekTcb {
    pub bl: u8,
    pub tee: u8,
    pub snp: u8,
    pub ucode: u8,
    /// Turin only.
    pub fmc: Option<u8>,
}

/// One item of collateral.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// KDS `/vcek/v1/{product}/{hwid}?…SPL=…`: a chip's VCEK at a TCB (DER).
    AmdVcek {
        product: AmdProduct,
        hwid: Vec<u8>,
        tcb: VcekTcb,
    },
    /// KDS `/{vcek|vlek}/v1/{product}/cert_chain`: ASK (or ASVK) then ARK (PEM).
    AmdChain { key: AmdKey, product: AmdProduct },
    /// KDS `/{vcek|vlek}/v1/{product}/crl`: the ARK-signed CRL (DER).
    AmdCrl { key: AmdKey, product: AmdProduct },
    /// PCS `/{sgx|tdx}/certification/v4/tcb?fmspc=…`: signed TCB info (JSON).
    IntelTcbInfo { tee: IntelTee, fmspc: [u8; 6] },
    /// PCS `/{sgx|tdx}/certification/v4/qe/identity`: signed QE identity (JSON).
    IntelQeIdentity { tee: IntelTee },
    /// PCS `/sgx/certification/v4/pckcrl?ca=…&encoding=der` (DER).
    IntelPckCrl { ca: PckCa },
    /// PCCS `/sgx/certification/v4/rootcacrl`: the Intel SGX Root CA's CRL.
    IntelRootCaCrl,
    /// NVIDIA RIM service `/v1/rim/{id}`: a RIM (JSON, the SWID tag base64).
    NvidiaRim { id: String },
    /// NVIDIA OCSP (POST): the response to one request, by the request's SHA-256.
    NvidiaOcsp { request_sha256: [u8; 32] },
}

/// A request that names no item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ItemError(pub String);

fn bad(msg: impl Into<String>) -> ItemError {
    ItemError(msg.into())
}

fn product(s: &str) -> Result<AmdProduct, ItemError> {
    AmdProduct::ALL
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| bad(format!("unknown AMD product {s:?} (Milan, Genoa, Turin)")))
}

fn fixed_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], ItemError> {
    let v = hex::decode(s).map_err(|e| bad(format!("{what}: not hex: {e}")))?;
    v.try_into()
        .map_err(|v: Vec<u8>| bad(format!("{what}: {} bytes, expected {N}", v.len())))
}

/// Query parameters, each named once and all of them known.
struct Query<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Query<'a> {
    fn parse(q: Option<&'a str>, known: &[&str]) -> Result<Self, ItemError> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !known.contains(&k) {
                return Err(bad(format!(
                    "query parameter {k:?} is not supported here (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(bad(format!("query parameter {k:?} given twice")));
            }
            out.push((k, v));
        }
        Ok(Query(out))
    }

    fn get(&self, k: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    fn required(&self, k: &str) -> Result<&'a str, ItemError> {
        self.get(k)
            .ok_or_else(|| bad(format!("query parameter {k:?} is required")))
    }

    fn svn(&self, k: &str) -> Result<u8, ItemError> {
        let v = self.required(k)?;
        v.parse()
            .map_err(|_| bad(format!("query parameter {k}={v:?}: expected 0 to 255")))
    }
}

impl Item {
    /// The item a GET request names (`path` without the query).
    pub fn from_get(path: &str, query: Option<&str>) -> Result<Item, ItemError> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let no_query = |q: Option<&str>| Query::parse(q, &[]).map(|_| ());
        match segs.as_slice() {
            [key @ ("vcek" | "vlek"), "v1", p, leaf] => {
                let key = if *key == "vcek" {
                    AmdKey::Vcek
                } else {
                    AmdKey::Vlek
                };
                let product = product(p)?;
                match *leaf {
                    "cert_chain" => no_query(query).map(|()| Item::AmdChain { key, product }),
                    "crl" => no_query(query).map(|()| Item::AmdCrl { key, product }),
                    hwid if key == AmdKey::Vcek => {
                        let turin = product == AmdProduct::Turin;
                        let hwid_len = if turin { 8 } else { 64 };
                        let hwid = hex::decode(hwid)
                            .map_err(|e| bad(format!("VCEK hwid: not hex: {e}")))?;
                        if hwid.len() != hwid_len {
                            return Err(bad(format!(
                                "VCEK hwid: {} bytes, a {} chip ID is {hwid_len}",
                                hwid.len(),
                                product.name()
                            )));
                        }
                        let known: &[&str] = if turin {
                            &["fmcSPL", "blSPL", "teeSPL", "snpSPL", "ucodeSPL"]
                        } else {
                            &["blSPL", "teeSPL", "snpSPL", "ucodeSPL"]
                        };
                        let q = Query::parse(query, known)?;
                        let tcb = VcekTcb {
                            bl: q.svn("blSPL")?,
                            tee: q.svn("teeSPL")?,
                            snp: q.svn("snpSPL")?,
                            ucode: q.svn("ucodeSPL")?,
                            fmc: if turin { Some(q.svn("fmcSPL")?) } else { None },
                        };
                        Ok(Item::AmdVcek { product, hwid, tcb })
                    }
                    other => Err(bad(format!(
                        "/vlek/v1/{}/{other}: VLEKs are not served per chip (cert_chain, crl)",
                        product.name()
                    ))),
                }
            }
            [tee @ ("sgx" | "tdx"), "certification", "v4", rest @ ..] => {
                let tee = if *tee == "sgx" {
                    IntelTee::Sgx
                } else {
                    IntelTee::Tdx
                };
                match (tee, rest) {
                    (_, ["tcb"]) => {
                        let q = Query::parse(query, &["fmspc"])?;
                        let fmspc = fixed_hex::<6>(q.required("fmspc")?, "fmspc")?;
                        Ok(Item::IntelTcbInfo { tee, fmspc })
                    }
                    (_, ["qe", "identity"]) => {
                        no_query(query).map(|()| Item::IntelQeIdentity { tee })
                    }
                    (IntelTee::Sgx, ["pckcrl"]) => {
                        let q = Query::parse(query, &["ca", "encoding"])?;
                        let ca = match q.required("ca")? {
                            "processor" => PckCa::Processor,
                            "platform" => PckCa::Platform,
                            other => {
                                return Err(bad(format!(
                                    "ca={other:?}: expected processor or platform"
                                )));
                            }
                        };
                        match q.get("encoding") {
                            None | Some("der") => Ok(Item::IntelPckCrl { ca }),
                            Some(other) => {
                                Err(bad(format!("encoding={other:?}: only der is served")))
                            }
                        }
                    }
                    (IntelTee::Sgx, ["rootcacrl"]) => {
                        no_query(query).map(|()| Item::IntelRootCaCrl)
                    }
                    _ => Err(bad(format!("no such collateral: {path}"))),
                }
            }
            ["v1", "rim", id] => {
                no_query(query)?;
                let ok = !id.is_empty()
                    && id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
                if !ok {
                    return Err(bad(format!("RIM id {id:?}: 1 to 128 of A-Z a-z 0-9 _ . -")));
                }
                Ok(Item::NvidiaRim { id: id.to_string() })
            }
            _ => Err(bad(format!(
                "no such collateral: {path} (AMD KDS /vcek|vlek/v1/…, Intel PCS /sgx|tdx/certification/v4/…, NVIDIA /v1/rim/…, POST /ocsp)"
            ))),
        }
    }

    /// The item an OCSP request (DER, POSTed) is answered by.
    pub fn ocsp(request_der: &[u8]) -> Item {
        use sha2::Digest;
        Item::NvidiaOcsp {
            request_sha256: sha2::Sha256::digest(request_der).into(),
        }
    }

    pub fn upstream(&self) -> Upstream {
        match self {
            Item::AmdVcek { .. } | Item::AmdChain { .. } | Item::AmdCrl { .. } => Upstream::Amd,
            Item::IntelTcbInfo { .. } | Item::IntelQeIdentity { .. } | Item::IntelPckCrl { .. } => {
                Upstream::Intel
            }
            Item::IntelRootCaCrl => Upstream::IntelRootCaCrl,
            Item::NvidiaRim { .. } => Upstream::NvidiaRim,
            Item::NvidiaOcsp { .. } => Upstream::NvidiaOcsp,
        }
    }

    /// A short name of the item's kind (metrics, `max_collateral_age`, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Item::AmdVcek { .. } => "amd-vcek",
            Item::AmdChain { .. } => "amd-cert-chain",
            Item::AmdCrl { .. } => "amd-crl",
            Item::IntelTcbInfo { .. } => "intel-tcb-info",
            Item::IntelQeIdentity { .. } => "intel-qe-identity",
            Item::IntelPckCrl { .. } => "intel-pck-crl",
            Item::IntelRootCaCrl => "intel-root-ca-crl",
            Item::NvidiaRim { .. } => "nvidia-rim",
            Item::NvidiaOcsp { .. } => "nvidia-ocsp",
        }
    }

    /// The HTTP response headers that carry part of the item (Intel's
    /// issuer chains), as PCS names them.
    pub fn headers(&self) -> &'static [&'static str] {
        match self {
            Item::IntelTcbInfo { .. } => &["TCB-Info-Issuer-Chain"],
            Item::IntelQeIdentity { .. } => &["SGX-Enclave-Identity-Issuer-Chain"],
            Item::IntelPckCrl { .. } => &["SGX-PCK-CRL-Issuer-Chain"],
            _ => &[],
        }
    }
}

/// The canonical request: path and query as the upstream takes them (an
/// OCSP item, POSTed, shows as `/ocsp#<request sha256>`).
impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::AmdVcek { product, hwid, tcb } => {
                write!(f, "/vcek/v1/{}/{}?", product.name(), hex::encode(hwid))?;
                if let Some(fmc) = tcb.fmc {
                    write!(f, "fmcSPL={fmc}&")?;
                }
                write!(
                    f,
                    "blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
                    tcb.bl, tcb.tee, tcb.snp, tcb.ucode
                )
            }
            Item::AmdChain { key, product } => {
                write!(f, "/{}/v1/{}/cert_chain", key.segment(), product.name())
            }
            Item::AmdCrl { key, product } => {
                write!(f, "/{}/v1/{}/crl", key.segment(), product.name())
            }
            Item::IntelTcbInfo { tee, fmspc } => write!(
                f,
                "/{}/certification/v4/tcb?fmspc={}",
                tee.segment(),
                hex::encode_upper(fmspc)
            ),
            Item::IntelQeIdentity { tee } => {
                write!(f, "/{}/certification/v4/qe/identity", tee.segment())
            }
            Item::IntelPckCrl { ca } => write!(
                f,
                "/sgx/certification/v4/pckcrl?ca={}&encoding=der",
                match ca {
                    PckCa::Processor => "processor",
                    PckCa::Platform => "platform",
                }
            ),
            Item::IntelRootCaCrl => write!(f, "/sgx/certification/v4/rootcacrl"),
            Item::NvidiaRim { id } => write!(f, "/v1/rim/{id}"),
            Item::NvidiaOcsp { request_sha256 } => {
                write!(f, "/ocsp#{}", hex::encode(request_sha256))
            }
        }
    }
}

impl Item {
    /// Parses the canonical form back (what a bundle or the cache stores).
    pub fn parse(canonical: &str) -> Result<Item, ItemError> {
        if let Some(h) = canonical.strip_prefix("/ocsp#") {
            return Ok(Item::NvidiaOcsp {
                request_sha256: fixed_hex::<32>(h, "OCSP request digest")?,
            });
        }
        let (path, query) = match canonical.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (canonical, None),
        };
        Item::from_get(path, query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_canonical_form() {
        let items = [
            Item::AmdVcek {
                product: AmdProduct::Milan,
                hwid: vec![0xab; 64],
                tcb: VcekTcb {
                    bl: 3,
                    tee: 0,
                    snp: 8,
                    ucode: 115,
                    fmc: None,
                },
            },
            Item::AmdVcek {
                product: AmdProduct::Turin,
                hwid: vec![0x01; 8],
                tcb: VcekTcb {
                    bl: 1,
                    tee: 2,
                    snp: 3,
                    ucode: 4,
                    fmc: Some(5),
                },
            },
            Item::AmdChain {
                key: AmdKey::Vlek,
                product: AmdProduct::Genoa,
            },
            Item::AmdCrl {
                key: AmdKey::Vcek,
                product: AmdProduct::Turin,
            },
            Item::IntelTcbInfo {
                tee: IntelTee::Tdx,
                fmspc: [0x90, 0xc0, 0x6f, 0, 0, 0],
            },
            Item::IntelQeIdentity { tee: IntelTee::Sgx },
            Item::IntelPckCrl {
                ca: PckCa::Platform,
            },
            Item::IntelRootCaCrl,
            Item::NvidiaRim {
                id: "NV_GPU_DRIVER_GH100_535.86.10".into(),
            },
            Item::ocsp(b"request"),
        ];
        for item in items {
            let text = item.to_string();
            assert_eq!(Item::parse(&text), Ok(item.clone()), "{text}");
        }
    }

    #[test]
    fn requests_are_parsed_strictly() {
        let refused = [
            ("/vcek/v1/Naples/cert_chain", None, "unknown AMD product"),
            (
                "/vcek/v1/Milan/abcd",
                Some("blSPL=1&teeSPL=0&snpSPL=8&ucodeSPL=1"),
                "64",
            ),
            (
                "/vcek/v1/Milan/cert_chain",
                Some("x=1"),
                "\"x\" is not supported",
            ),
            ("/tdx/certification/v4/tcb", Some("fmspc=00"), "expected 6"),
            (
                "/tdx/certification/v4/tcb",
                Some("fmspc=90C06F000000&fmspc=90C06F000000"),
                "twice",
            ),
            (
                "/sgx/certification/v4/pckcrl",
                Some("ca=other"),
                "processor or platform",
            ),
            (
                "/sgx/certification/v4/pckcrl",
                Some("ca=platform&encoding=pem"),
                "only der",
            ),
            (
                "/tdx/certification/v4/pckcrl",
                Some("ca=platform"),
                "no such collateral",
            ),
            ("/v1/rim/../../etc/passwd", None, "no such collateral"),
            ("/v1/rim/a%2Fb", None, "RIM id"),
            ("/etc/passwd", None, "no such collateral"),
        ];
        for (path, query, why) in refused {
            let e = Item::from_get(path, query).expect_err(path);
            assert!(e.0.contains(why), "{path}: {e}");
        }
        let vcek = "blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115";
        let hwid = "ab".repeat(64);
        let item = Item::from_get(&format!("/vcek/v1/Milan/{hwid}"), Some(vcek)).unwrap();
        assert_eq!(item.upstream(), Upstream::Amd);
        assert_eq!(item.to_string(), format!("/vcek/v1/Milan/{hwid}?{vcek}"));
    }
}
