//! What a verifier needs for a given SNP report or DCAP quote, found in a
//! [`Source`] (a bundle, or the host's collateral service): the items each
//! names, assembled into the shapes verification takes. Nothing is checked
//! here beyond shape; verification checks every signature.

use crate::bundle::Bundle;
use crate::entry::{Entry, rim_xml};
use crate::item::{AmdKey, IntelTee, Item, PckCa, VcekTcb};
use ciel_attestation::collateral::{CollateralLookup, DcapCollateral};
use ciel_attestation::roots::AmdProduct;
use ciel_attestation::snp::{SigningKey, SnpReport};

/// Somewhere items can be found.
pub trait Source {
    /// The item, or why it is not there.
    fn entry(&self, item: &Item) -> Result<Entry, String>;
}

impl Source for Bundle {
    fn entry(&self, item: &Item) -> Result<Entry, String> {
        self.get(item)
            .cloned()
            .ok_or_else(|| format!("the collateral bundle has no {item}"))
    }
}

/// The items a DCAP quote's verification needs: PCK CRL (by the PCK
/// certificate's CA), root CA CRL, TCB info (by its FMSPC) and QE identity.
pub fn dcap_items(quote: &[u8]) -> Result<[Item; 4], String> {
    let q = dcap_qvl::quote::Quote::parse(quote).map_err(|e| format!("DCAP quote: {e:#}"))?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&q)
        .map_err(|e| format!("DCAP quote's PCK certificate: {e:#}"))?;
    let ca = match dcap_qvl::intel::quote_ca(&q)
        .map_err(|e| format!("DCAP quote's PCK certificate: {e:#}"))?
    {
        dcap_qvl::config::PckCa::Processor => PckCa::Processor,
        dcap_qvl::config::PckCa::Platform => PckCa::Platform,
    };
    let tee = if q.header.is_sgx() {
        IntelTee::Sgx
    } else {
        IntelTee::Tdx
    };
    Ok([
        Item::IntelPckCrl { ca },
        Item::IntelRootCaCrl,
        Item::IntelTcbInfo { tee, fmspc },
        Item::IntelQeIdentity { tee },
    ])
}

/// A quote's DCAP collateral from `src`.
pub fn dcap_collateral<S: Source + ?Sized>(
    src: &S,
    quote: &[u8],
) -> Result<DcapCollateral, String> {
    let [pck_crl, root_crl, tcb, qe] = dcap_items(quote)?;
    let get = |item: &Item| src.entry(item);
    let (pck_crl, root_crl, tcb, qe) = (get(&pck_crl)?, get(&root_crl)?, get(&tcb)?, get(&qe)?);
    let header = |e: &Entry, name: &str| {
        e.header(name)
            .ok_or_else(|| format!("{}: no {name}", e.item))
    };
    let (tcb_info, tcb_info_signature) = signed_part(&tcb, "tcbInfo")?;
    let (qe_identity, qe_identity_signature) = signed_part(&qe, "enclaveIdentity")?;
    Ok(DcapCollateral {
        pck_crl_issuer_chain: header(&pck_crl, "SGX-PCK-CRL-Issuer-Chain")?,
        root_ca_crl: root_crl.body,
        pck_crl: pck_crl.body,
        tcb_info_issuer_chain: header(&tcb, "TCB-Info-Issuer-Chain")?,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain: header(&qe, "SGX-Enclave-Identity-Issuer-Chain")?,
        qe_identity,
        qe_identity_signature,
    })
}

/// The other way: a quote's DCAP collateral (as dcap-qvl and PCCS lay it
/// out, one JSON) as the four items PCS serves, for a cache or a bundle.
pub fn dcap_entries(
    quote: &[u8],
    col: &DcapCollateral,
    fetched_at: ciel_attestation::UnixTime,
) -> Result<Vec<Entry>, String> {
    let [pck_crl, root_crl, tcb, qe] = dcap_items(quote)?;
    let chain = |pem: &str| {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let signed = |field: &str, raw: &str, sig: &[u8]| {
        format!(
            "{{\"{field}\":{raw},\"signature\":\"{}\"}}",
            hex::encode(sig)
        )
        .into_bytes()
    };
    let header = |item: &Item, v: &str| {
        item.headers()
            .iter()
            .map(|h| (h.to_string(), chain(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let parts = [
        (
            header(&pck_crl, &col.pck_crl_issuer_chain),
            pck_crl,
            col.pck_crl.clone(),
        ),
        (Default::default(), root_crl, col.root_ca_crl.clone()),
        (
            header(&tcb, &col.tcb_info_issuer_chain),
            tcb,
            signed("tcbInfo", &col.tcb_info, &col.tcb_info_signature),
        ),
        (
            header(&qe, &col.qe_identity_issuer_chain),
            qe,
            signed(
                "enclaveIdentity",
                &col.qe_identity,
                &col.qe_identity_signature,
            ),
        ),
    ];
    parts
        .into_iter()
        .map(|(headers, item, body)| {
            let name = item.to_string();
            Entry::assess(item, body, headers, fetched_at).map_err(|e| format!("{name}: {e}"))
        })
        .collect()
}

/// The signed object's exact text and its signature, from Intel's
/// `{"<field>": {…}, "signature": "<hex>"}` (the signature covers those
/// bytes as sent, so the object is not re-serialised).
fn signed_part(e: &Entry, field: &str) -> Result<(String, Vec<u8>), String> {
    #[derive(serde::Deserialize)]
    struct Signed<'a> {
        #[serde(borrow, rename = "tcbInfo")]
        tcb_info: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, rename = "enclaveIdentity")]
        enclave_identity: Option<&'a serde_json::value::RawValue>,
        signature: String,
    }
    let s: Signed<'_> =
        serde_json::from_slice(&e.body).map_err(|err| format!("{}: {err}", e.item))?;
    let raw = if field == "tcbInfo" {
        s.tcb_info
    } else {
        s.enclave_identity
    }
    .ok_or_else(|| format!("{}: no `{field}`", e.item))?;
    let sig = hex::decode(&s.signature).map_err(|err| format!("{}: signature: {err}", e.item))?;
    Ok((raw.get().to_string(), sig))
}

/// The products a report may come from: its own (v3+), else each in turn.
fn products(report: &SnpReport) -> Vec<AmdProduct> {
    match report.product() {
        Some(p) => vec![p],
        None => AmdProduct::ALL.to_vec(),
    }
}

/// The VCEK item for `report` as made by `product`.
pub fn vcek_item(report: &SnpReport, product: AmdProduct) -> Item {
    let turin = product == AmdProduct::Turin;
    let t = report.reported_tcb(turin);
    Item::AmdVcek {
        product,
        hwid: report.chip_id_for_vcek(turin).to_vec(),
        tcb: VcekTcb {
            bl: t.bl,
            tee: t.tee,
            snp: t.snp,
            ucode: t.ucode,
            fmc: t.fmc,
        },
    }
}

/// The VCEK for `report` (signed by a VCEK, chip ID not masked).
pub fn snp_vcek<S: Source + ?Sized>(src: &S, report: &SnpReport) -> Result<Vec<u8>, String> {
    if report.signing_key() != SigningKey::Vcek {
        return Err("the report is not signed by a VCEK (a VLEK comes with the evidence)".into());
    }
    if report.chip_id_masked() {
        return Err("the report masks its chip ID, so no VCEK can be looked up".into());
    }
    let mut why = Vec::new();
    for product in products(report) {
        match src.entry(&vcek_item(report, product)) {
            Ok(e) => return Ok(e.body),
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

fn amd_key(report: &SnpReport) -> AmdKey {
    match report.signing_key() {
        SigningKey::Vlek => AmdKey::Vlek,
        _ => AmdKey::Vcek,
    }
}

/// The first of the report's products for which `src` has an item.
fn per_product<S: Source + ?Sized>(
    src: &S,
    report: &SnpReport,
    item: impl Fn(AmdProduct) -> Item,
) -> Option<Vec<u8>> {
    products(report)
        .into_iter()
        .find_map(|product| src.entry(&item(product)).ok())
        .map(|e| e.body)
}

/// The chain and CRL items for the report's key on `product`.
pub fn amd_items(report: &SnpReport, product: AmdProduct) -> [Item; 2] {
    let key = amd_key(report);
    [
        Item::AmdChain { key, product },
        Item::AmdCrl { key, product },
    ]
}

/// AMD's CRL for the report's key and product, where `src` has it.
pub fn snp_crl<S: Source + ?Sized>(src: &S, report: &SnpReport) -> Option<Vec<u8>> {
    let key = amd_key(report);
    per_product(src, report, |product| Item::AmdCrl { key, product })
}

/// The ASK/ASVK + ARK for the report's key and product, where `src` has it.
pub fn snp_chain<S: Source + ?Sized>(src: &S, report: &SnpReport) -> Option<Vec<u8>> {
    let key = amd_key(report);
    per_product(src, report, |product| Item::AmdChain { key, product })
}

/// A RIM's SWID tag (XML) by its id.
pub fn rim<S: Source + ?Sized>(src: &S, id: &str) -> Result<Vec<u8>, String> {
    rim_xml(&src.entry(&Item::NvidiaRim { id: id.to_string() })?.body)
}

impl CollateralLookup for Bundle {
    fn dcap(&self, quote: &[u8]) -> Result<DcapCollateral, String> {
        dcap_collateral(self, quote)
    }

    fn snp_vcek(&self, report: &SnpReport) -> Result<Vec<u8>, String> {
        snp_vcek(self, report)
    }

    fn snp_chain(&self, report: &SnpReport) -> Option<Vec<u8>> {
        snp_chain(self, report)
    }

    fn snp_crl(&self, report: &SnpReport) -> Option<Vec<u8>> {
        snp_crl(self, report)
    }
}
