//! OVMF images (footer table, SEV metadata) and launch digests.
#![no_main]
use ciel_images::snp_measure::{Ovmf, SnpLaunch, Vmm, launch_digest};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    img.resize(img.len().div_ceil(4096).max(1) * 4096, 0);
    if let Ok(ovmf) = Ovmf::parse(img) {
        let l = SnpLaunch { ovmf: &ovmf, kernel: Some(b""), initrd: None, append: Some(""), vcpus: 2, vcpu_sig: 0x800f12, guest_features: 1, vmm: Vmm::Qemu, ovmf_hash: Some([0; 48]) };
        let _ = launch_digest(&l);
    }
});
