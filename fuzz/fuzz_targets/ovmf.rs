//! OVMF images (footer table, SEV metadata) and launch digests, for each
//! VMM, and the same bytes as a Coconut SVSM image below the firmware.
#![no_main]
use ciel_images::snp_measure::{Ovmf, SnpLaunch, Vmm, launch_digest};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    img.resize(img.len().div_ceil(4096).max(1) * 4096, 0);
    let Ok(ovmf) = Ovmf::parse(img.clone()) else {
        return;
    };
    let svsm = Ovmf::parse_ending_at(img, ovmf.gpa()).ok();
    for vmm in [Vmm::Qemu, Vmm::Ec2, Vmm::Gce] {
        let l = SnpLaunch { ovmf: &ovmf, kernel: Some(b""), initrd: None, append: Some(""), vcpus: 2, vcpu_sig: 0x800f12, guest_features: 1, vmm, ovmf_hash: Some([0; 48]), svsm: None };
        let _ = launch_digest(&l);
    }
    if let Some(svsm) = &svsm {
        let l = SnpLaunch { ovmf: &ovmf, kernel: None, initrd: None, append: None, vcpus: 2, vcpu_sig: 0x800f12, guest_features: 1, vmm: Vmm::Qemu, ovmf_hash: Some([0; 48]), svsm: Some(svsm) };
        let _ = launch_digest(&l);
    }
});
