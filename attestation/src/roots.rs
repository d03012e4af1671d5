//! Trust anchors pinned in the binary.
//!
//! Every anchor is embedded with `include_bytes!` and pinned by the SHA-256
//! of its DER encoding; the tests check each one is self-signed and has the
//! expected fingerprint, so a swapped file fails the build's tests rather
//! than silently widening trust. The simulated root is never here: a policy
//! has to name it.

use crate::x509::Cert;

/// AMD SEV-SNP product lines, each with its own ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum AmdProduct {
    Milan,
    Genoa,
    Turin,
}

impl AmdProduct {
    pub const ALL: [AmdProduct; 3] = [AmdProduct::Milan, AmdProduct::Genoa, AmdProduct::Turin];

    pub fn name(self) -> &'static str {
        match self {
            AmdProduct::Milan => "Milan",
            AmdProduct::Genoa => "Genoa",
            AmdProduct::Turin => "Turin",
        }
    }

    /// The product from the CPUID family/model in a v3+ report.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(AmdProduct::Milan),
            (0x19, 0x10..=0x1f) | (0x19, 0xa0..=0xaf) => Some(AmdProduct::Genoa),
            (0x1a, 0x00..=0x11) => Some(AmdProduct::Turin),
            _ => None,
        }
    }

    /// The AMD Root Key (self-signed, RSA-4096, RSA-PSS).
    pub fn ark_der(self) -> &'static [u8] {
        match self {
            AmdProduct::Milan => include_bytes!("../roots/amd/ark_milan.der"),
            AmdProduct::Genoa => include_bytes!("../roots/amd/ark_genoa.der"),
            AmdProduct::Turin => include_bytes!("../roots/amd/ark_turin.der"),
        }
    }

    /// The AMD SEV Key, which signs VCEKs.
    pub fn ask_der(self) -> &'static [u8] {
        match self {
            AmdProduct::Milan => include_bytes!("../roots/amd/ask_milan.der"),
            AmdProduct::Genoa => include_bytes!("../roots/amd/ask_genoa.der"),
            AmdProduct::Turin => include_bytes!("../roots/amd/ask_turin.der"),
        }
    }

    /// The AMD SEV VLEK Key, which signs VLEKs.
    pub fn asvk_der(self) -> &'static [u8] {
        match self {
            AmdProduct::Milan => include_bytes!("../roots/amd/asvk_milan.der"),
            AmdProduct::Genoa => include_bytes!("../roots/amd/asvk_genoa.der"),
            AmdProduct::Turin => include_bytes!("../roots/amd/asvk_turin.der"),
        }
    }

    /// SHA-256 of the ARK's DER, the pin.
    pub fn ark_sha256(self) -> &'static str {
        match self {
            AmdProduct::Milan => "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            AmdProduct::Genoa => "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
            AmdProduct::Turin => "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        }
    }
}

/// Intel SGX Root CA (anchors TDX and SGX DCAP).
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("../roots/intel/sgx_root_ca.der");
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// NVIDIA Device Identity CA (anchors GPU attestation certificate chains).
pub const NVIDIA_DEVICE_ROOT_DER: &[u8] =
    include_bytes!("../roots/nvidia/device_identity_root.der");
pub const NVIDIA_DEVICE_ROOT_SHA256: &str =
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48";

/// NVIDIA CoRIM signing Root CA (anchors reference integrity manifests).
pub const NVIDIA_RIM_ROOT_DER: &[u8] = include_bytes!("../roots/nvidia/rim_root.der");
pub const NVIDIA_RIM_ROOT_SHA256: &str =
    "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1";

/// Which AMD product, if any, pins this root certificate.
pub fn amd_product_for_ark(ark: &Cert) -> Option<AmdProduct> {
    let fp = hex::encode(ark.sha256());
    AmdProduct::ALL.into_iter().find(|p| p.ark_sha256() == fp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check_root(der: &[u8], pin: &str) {
        let c = Cert::from_der(der).unwrap();
        assert_eq!(
            hex::encode(c.sha256()),
            pin,
            "fingerprint of {}",
            c.subject()
        );
        assert!(c.self_issued(), "{} is not self-issued", c.subject());
        c.verify_signed_by(&c, "root").unwrap();
    }

    #[test]
    fn amd_roots_are_pinned_and_self_signed() {
        for p in AmdProduct::ALL {
            check_root(p.ark_der(), p.ark_sha256());
            let ark = Cert::from_der(p.ark_der()).unwrap();
            assert_eq!(amd_product_for_ark(&ark), Some(p));
            assert_eq!(ark.common_name().unwrap(), format!("ARK-{}", p.name()));
            for (der, cn) in [
                (p.ask_der(), format!("SEV-{}", p.name())),
                (p.asvk_der(), format!("SEV-VLEK-{}", p.name())),
            ] {
                let inter = Cert::from_der(der).unwrap();
                assert_eq!(inter.common_name().unwrap(), cn);
                assert!(inter.issued_by(&ark));
                inter.verify_signed_by(&ark, "intermediate").unwrap();
            }
        }
    }

    #[test]
    fn intel_and_nvidia_roots_are_pinned_and_self_signed() {
        check_root(INTEL_SGX_ROOT_CA_DER, INTEL_SGX_ROOT_CA_SHA256);
        check_root(NVIDIA_DEVICE_ROOT_DER, NVIDIA_DEVICE_ROOT_SHA256);
        check_root(NVIDIA_RIM_ROOT_DER, NVIDIA_RIM_ROOT_SHA256);
    }

    #[test]
    fn product_from_cpuid() {
        assert_eq!(AmdProduct::from_cpuid(0x19, 0x01), Some(AmdProduct::Milan));
        assert_eq!(AmdProduct::from_cpuid(0x19, 0x11), Some(AmdProduct::Genoa));
        assert_eq!(AmdProduct::from_cpuid(0x1a, 0x02), Some(AmdProduct::Turin));
        assert_eq!(AmdProduct::from_cpuid(0x17, 0x31), None);
    }
}
