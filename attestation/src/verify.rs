//! The one entry point: `verify(evidence, collateral, policy, now)`.

use crate::collateral::Collateral;
use crate::evidence::Evidence;
use crate::nvidia::verify_nvidia;
use crate::policy::Policy;
use crate::snp::{SnpCollateral, verify_snp};
use crate::tdx::verify_dcap;
use crate::time::UnixTime;
use crate::verdict::{ReasonKind, Verdict};

/// Verifies parsed evidence against the collateral and policy at `now`.
/// Pure: no clock, no network, no files. Never panics.
pub fn verify(
    evidence: &Evidence,
    collateral: &Collateral,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let mut v = match evidence {
        Evidence::Snp(report) => {
            let col = SnpCollateral {
                signer: collateral.snp_signer.clone(),
                chain: collateral.snp_chain.clone(),
                crl: collateral.snp_crl.clone(),
            };
            verify_snp(report, &col, policy, now)
        }
        Evidence::Dcap(quote) => verify_dcap(quote, collateral.dcap.as_ref(), policy, now),
        Evidence::Nvidia(report) => verify_nvidia(
            report,
            collateral.gpu_cert_chain.as_deref(),
            &collateral.gpu_rims,
            policy,
            now,
        ),
    };
    // A policy's vTPM PCR rules are met only by evidence with a TPM quote
    // (`azure::verify_az_vtpm`, which checks them and verifies the
    // report inside without them); a guest with none does not pass them by
    // default. GPU evidence is checked apart from the CPU's.
    if !policy.vtpm.pcrs.is_empty() && !matches!(evidence, Evidence::Nvidia(_)) {
        v.reject(
            ReasonKind::PcrNotAllowed,
            "the policy constrains vTPM PCRs ([vtpm] pcrs), and this evidence carries no TPM quote",
        );
    }
    v
}
