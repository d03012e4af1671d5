//! Trustee's `sample` TEE: evidence with no signature (`{svn,
//! report_data}`), which guest-components' attester produces where no TEE
//! is found. Anyone can make it, so it proves nothing; a broker accepts it
//! only for resources whose configuration says
//! `danger_accept_sample_evidence = true` (interoperability tests with
//! Trustee's clients), and every release on it is audited as such.

use base64::Engine;

/// Sample evidence as the attester writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEvidence {
    pub svn: String,
    pub report_data: Vec<u8>,
}

impl SampleEvidence {
    /// Parses `{"svn": "…", "report_data": "<base64>"}`.
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let field = |name: &str| {
            v.get(name)
                .and_then(|x| x.as_str())
                .ok_or_else(|| format!("sample evidence: missing string field `{name}`"))
        };
        let report_data = base64::engine::general_purpose::STANDARD
            .decode(field("report_data")?)
            .map_err(|e| format!("sample evidence: report_data is not base64: {e}"))?;
        Ok(SampleEvidence {
            svn: field("svn")?.to_string(),
            report_data,
        })
    }

    /// Whether it carries `expected` (the 64-byte binding), whole or as the
    /// digest it starts with (the sample attester does not pad).
    pub fn binds(&self, expected: &[u8; 64]) -> bool {
        self.report_data == expected.as_slice()
            || Some(self.report_data.as_slice()) == expected.get(..48)
    }
}

/// `tee-evidence` split as Trustee's clients send it (`{primary_evidence,
/// additional_evidence}`, kbs-types 0.15), or whole in the older shape:
/// (the primary evidence, the additional evidence string if any).
pub fn split_composite(
    tee_evidence: &serde_json::Value,
) -> Result<(&serde_json::Value, Option<&str>), String> {
    match (
        tee_evidence.get("primary_evidence"),
        tee_evidence.get("additional_evidence"),
    ) {
        (Some(primary), Some(additional)) => {
            let additional = additional
                .as_str()
                .ok_or("tee-evidence.additional_evidence: not a string")?;
            Ok((primary, Some(additional)))
        }
        (Some(_), None) => Err("tee-evidence: primary_evidence without additional_evidence".into()),
        _ => Ok((tee_evidence, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_evidence_binds_the_digest_padded_or_not() {
        let mut expected = [0u8; 64];
        expected[..48].fill(7);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        for rd in [&expected[..48], &expected[..]] {
            let s = SampleEvidence::parse(&serde_json::json!({"svn": "1", "report_data": b64(rd)}))
                .unwrap();
            assert!(s.binds(&expected));
        }
        let other =
            SampleEvidence::parse(&serde_json::json!({"svn": "1", "report_data": b64(&[8; 48])}))
                .unwrap();
        assert!(!other.binds(&expected));
        assert!(SampleEvidence::parse(&serde_json::json!({"svn": "1"})).is_err());
    }

    #[test]
    fn composite_evidence_is_split_and_the_old_shape_kept() {
        let v = serde_json::json!({"primary_evidence": {"svn": "1"}, "additional_evidence": ""});
        let (p, a) = split_composite(&v).unwrap();
        assert_eq!((p["svn"].as_str(), a), (Some("1"), Some("")));
        let old = serde_json::json!({"report": "AAAA"});
        assert_eq!(split_composite(&old).unwrap(), (&old, None));
        assert!(split_composite(&serde_json::json!({"primary_evidence": {}})).is_err());
        assert!(
            split_composite(&serde_json::json!({"primary_evidence": {}, "additional_evidence": 1}))
                .is_err()
        );
    }
}
