//! AMD SEV-SNP: the attestation report, the VCEK/VLEK certificate chain to
//! a pinned ARK, and the checks that tie the certificate to the report.

pub mod cert_table;
mod claims;
mod crl;
pub mod report;
mod tcb;
mod verify;

pub use claims::{SnpClaims, TcbClaims};
pub use report::{GuestPolicy, SigningKey, SnpReport, TcbVersion};
pub use tcb::TcbMinimums;
pub(crate) use tcb::check_tcbs;
pub use verify::{SnpCollateral, verify_snp};
