//! What crosses into the guest or its clients besides TLS: control
//! messages from the host, the attestation document in a guest certificate,
//! an SNP certificate table from the host, transport addresses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ciel_protocol::control::decode(data);
    let _ = ciel_protocol::control::read_message(&mut &data[..]);
    if let Ok(doc) = ciel_protocol::claims::decode_extension(data) {
        let _ = doc.claims.report_data();
    }
    if let Ok(doc) = ciel_protocol::claims::AttestationDocument::from_json(data) {
        let _ = ciel_attestation::tee_evidence::decode(&doc.tee, &doc.evidence, None);
    }
    if let Ok(t) = ciel_attestation::snp::cert_table::CertTable::parse(data) {
        let _ = t.signer();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ciel_protocol::endpoint::Endpoint::parse(s);
    }
});
