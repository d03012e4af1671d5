//! The initial vCPU state an SEV-SNP launch measures: one VMSA page per
//! vCPU (the SEV-ES save area, AMD APM vol. 2 table B-4). Every field not
//! set here is zero. The values are what each VMM really loads — they
//! differ between QEMU, EC2 and GCE, and for a Coconut SVSM — so a digest
//! is only reproducible with the right VMM named.

/// Where the boot vCPU starts (the reset vector).
pub(crate) const BSP_EIP: u64 = 0xFFFF_FFF0;

/// The PAT MSR's reset value (AMD APM vol. 2, A.3).
const DEFAULT_G_PAT: u64 = 0x0007_0406_0007_0406;

/// Which VMM launches the guest: it decides details of the VMSAs, how the
/// firmware's pre-validated memory is accepted, and when the CPUID page is
/// measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Qemu,
    Ec2,
    Gce,
}

/// A segment register as the save area holds it.
#[derive(Debug, Clone, Copy)]
struct Seg {
    selector: u16,
    attrib: u16,
    limit: u32,
    base: u64,
}

const fn seg(selector: u16, attrib: u16, limit: u32, base: u64) -> Seg {
    Seg {
        selector,
        attrib,
        limit,
        base,
    }
}

/// The save-area fields a launch sets.
#[derive(Debug, Clone, Copy)]
struct SaveArea {
    /// es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr — in save-area order.
    segs: [Seg; 10],
    cr0: u64,
    rip: u64,
    g_pat: u64,
    rdx: u64,
    sev_features: u64,
    mxcsr: u32,
    fcw: u16,
}

impl SaveArea {
    fn to_page(self) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        let mut put = |at: usize, bytes: &[u8]| v[at..at + bytes.len()].copy_from_slice(bytes);
        for (i, s) in self.segs.iter().enumerate() {
            let at = i * 16;
            put(at, &s.selector.to_le_bytes());
            put(at + 2, &s.attrib.to_le_bytes());
            put(at + 4, &s.limit.to_le_bytes());
            put(at + 8, &s.base.to_le_bytes());
        }
        put(0xd0, &0x1000u64.to_le_bytes()); // efer: SVME (KVM sets it)
        put(0x148, &0x40u64.to_le_bytes()); // cr4: MCE
        put(0x158, &self.cr0.to_le_bytes());
        put(0x160, &0x400u64.to_le_bytes()); // dr7
        put(0x168, &0xffff_0ff0u64.to_le_bytes()); // dr6
        put(0x170, &0x2u64.to_le_bytes()); // rflags
        put(0x178, &self.rip.to_le_bytes());
        put(0x268, &self.g_pat.to_le_bytes());
        put(0x310, &self.rdx.to_le_bytes());
        put(0x3b0, &self.sev_features.to_le_bytes());
        put(0x3e8, &0x1u64.to_le_bytes()); // xcr0: x87
        put(0x408, &self.mxcsr.to_le_bytes());
        put(0x410, &self.fcw.to_le_bytes()); // x87 control word
        v
    }
}

/// The VMSA of a vCPU starting at `eip` in real mode (OVMF's reset vector
/// for the boot CPU, its SEV-ES AP reset block for the others).
pub(crate) fn ovmf_vmsa(vmm: Vmm, eip: u64, vcpu_sig: u32, sev_features: u64) -> Vec<u8> {
    // QEMU passes the CPU signature in RDX and sets the FPU's reset control
    // words; EC2 and GCE report a fixed 0x600 and leave them zero. EC2's
    // code and stack segments are not marked accessed (and its boot CPU's
    // code segment not readable-accessed); GCE overwrites the PAT.
    let (cs, ss, tr, rdx, mxcsr, fcw, g_pat) = match vmm {
        Vmm::Qemu => (
            0x9b,
            0x93,
            0x8b,
            u64::from(vcpu_sig),
            0x1f80,
            0x37f,
            DEFAULT_G_PAT,
        ),
        Vmm::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, 0x600, 0, 0, DEFAULT_G_PAT)
        }
        Vmm::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    SaveArea {
        segs: [
            seg(0, 0x93, 0xffff, 0),
            seg(0xf000, cs, 0xffff, eip & 0xffff_0000),
            seg(0, ss, 0xffff, 0),
            seg(0, 0x93, 0xffff, 0),
            seg(0, 0x93, 0xffff, 0),
            seg(0, 0x93, 0xffff, 0),
            seg(0, 0, 0xffff, 0),
            seg(0, 0x82, 0xffff, 0),
            seg(0, 0, 0xffff, 0),
            seg(0, tr, 0xffff, 0),
        ],
        cr0: 0x10,
        rip: eip & 0xffff,
        g_pat,
        rdx,
        sev_features,
        mxcsr,
        fcw,
    }
    .to_page()
}

/// The VMSA Coconut SVSM's QEMU gives every vCPU: 32-bit protected mode
/// with flat segments, starting at the SVSM's entry point. Its SEV features
/// are SNP alone: the guest's own features apply to the VMSAs the SVSM
/// creates at run time, which the launch digest does not cover.
pub(crate) fn svsm_vmsa(eip: u64, vcpu_sig: u32) -> Vec<u8> {
    let flat_data = seg(16, 0xc93, 0xffff_ffff, 0);
    SaveArea {
        segs: [
            flat_data,
            seg(8, 0xc9b, 0xffff_ffff, 0),
            flat_data,
            flat_data,
            flat_data,
            seg(0, 0x93, 0xffff, 0),
            seg(0, 0, 0xffff, 0),
            seg(0, 0x82, 0xffff, 0),
            seg(0, 0, 0xffff, 0),
            seg(0, 0x8b, 0xffff, 0),
        ],
        cr0: 0x11,
        rip: eip,
        g_pat: DEFAULT_G_PAT,
        rdx: u64::from(vcpu_sig),
        sev_features: 0x1,
        mxcsr: 0x1f80,
        fcw: 0,
    }
    .to_page()
}
