//! OVMF images (footer table, SEV and TDVF metadata): SNP launch digests
//! for each VMM, the same bytes as a Coconut SVSM image below the
//! firmware, and MRTD.
#![no_main]
use ciel_images::snp_measure::{Ovmf, SnpLaunch, Vmm, launch_digest};
use ciel_images::tdvf::{PageAddOrder, mrtd};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    img.resize(img.len().div_ceil(4096).max(1) * 4096, 0);
    let Ok(ovmf) = Ovmf::parse(img.clone()) else {
        return;
    };
    // The same bytes as a TDVF (TDX metadata), in both page-add orders.
    for order in [PageAddOrder::Interleaved, PageAddOrder::AddsFirst] {
        let _ = mrtd(&ovmf, order);
    }
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
