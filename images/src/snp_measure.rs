//! The SEV-SNP launch digest: what the AMD secure processor computes while
//! QEMU (or EC2, or GCE) loads a guest, recomputed from the same inputs —
//! the OVMF image, the direct-boot kernel/initrd/cmdline hashes, the VMSA
//! of each vCPU — so that a policy can name the MEASUREMENT a genuine
//! launch of this image produces (SEV-SNP ABI spec, "SNP_LAUNCH_UPDATE";
//! results equal AMD's `sev-snp-measure` tool's). Also a Coconut SVSM
//! launched below OVMF.

pub use crate::snp_vmsa::Vmm;
use crate::snp_vmsa::{BSP_EIP, ovmf_vmsa, svsm_vmsa};

/// Why a digest could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    #[error("OVMF image: {0}")]
    Ovmf(String),
    #[error(
        "a kernel was given but this OVMF has no SNP_KERNEL_HASHES section (build OVMF with AmdSevX64.dsc)"
    )]
    NoKernelHashes,
    #[error("input: {0}")]
    Input(String),
}

const PAGE: usize = 4096;
const FOUR_GB: u64 = 0x1_0000_0000;
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// As many as `ciel host launch` gives a guest: bounds the work a mistyped
/// count asks for.
pub const MAX_VCPUS: u32 = 512;

// Page types of SNP_LAUNCH_UPDATE.
const PAGE_NORMAL: u8 = 1;
const PAGE_VMSA: u8 = 2;
const PAGE_ZERO: u8 = 3;
const PAGE_UNMEASURED: u8 = 4;
const PAGE_SECRETS: u8 = 5;
const PAGE_CPUID: u8 = 6;

/// GUIDs in their on-disk (little-endian fields) byte order.
fn guid(s: &str) -> [u8; 16] {
    let hexes: String = s.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(hexes.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    let mut out = [0u8; 16];
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    for (o, i) in out.iter_mut().zip(order) {
        *o = b.get(i).copied().unwrap_or(0);
    }
    out
}

const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const SEV_HASH_TABLE_RV_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const SEV_METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
const HASH_TABLE_HEADER_GUID: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
const CMDLINE_GUID: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";
const INITRD_GUID: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const KERNEL_GUID: &str = "4de79437-abd2-427f-b835-d5b172d2045b";
/// In a Coconut SVSM image: its entry point, relative to where it is loaded.
const SVSM_INFO_GUID: &str = "a789a612-0597-4c4b-a49f-cbb1fe9d1ddd";

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
}

/// OVMF metadata section kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    SecMem,
    Secrets,
    Cpuid,
    SvsmCaa,
    KernelHashes,
}

#[derive(Debug, Clone, Copy)]
struct SectionDesc {
    gpa: u64,
    size: u64,
    kind: Section,
}

/// An OVMF image (or a Coconut SVSM image, which has the same footer
/// table): its bytes, GUIDed footer table, SEV metadata, and where it ends
/// in guest memory.
#[derive(Debug)]
pub struct Ovmf {
    data: Vec<u8>,
    end: u64,
    table: Vec<([u8; 16], Vec<u8>)>,
    sections: Vec<SectionDesc>,
}

impl Ovmf {
    /// Parses an OVMF image (the whole `OVMF.fd`, or its last pages),
    /// loaded so that it ends at 4 GiB.
    pub fn parse(data: Vec<u8>) -> Result<Self, MeasureError> {
        Self::parse_ending_at(data, FOUR_GB)
    }

    /// Parses an image loaded so that it ends at `end` (a Coconut SVSM sits
    /// below OVMF and its variable store).
    pub fn parse_ending_at(data: Vec<u8>, end: u64) -> Result<Self, MeasureError> {
        let bad = |m: &str| MeasureError::Ovmf(m.to_string());
        if data.is_empty()
            || !data.len().is_multiple_of(PAGE)
            || !end.is_multiple_of(PAGE as u64)
            || data.len() as u64 > end
            || end > FOUR_GB
        {
            return Err(bad(
                "size is not a non-zero multiple of 4 KiB that fits below its end (at most 4 GiB)",
            ));
        }
        // The footer entry ends 32 bytes before the end: u16 size, GUID.
        let footer = data
            .len()
            .checked_sub(32 + 18)
            .ok_or_else(|| bad("too small"))?;
        let mut table = Vec::new();
        if data.get(footer + 2..footer + 18) == Some(&guid(FOOTER_GUID)[..]) {
            let size = usize::from(u16_at(&data, footer).ok_or_else(|| bad("footer"))?);
            let len = size
                .checked_sub(18)
                .ok_or_else(|| bad("footer table size"))?;
            let start = footer
                .checked_sub(len)
                .ok_or_else(|| bad("footer table runs before the image"))?;
            let mut entries = data
                .get(start..footer)
                .ok_or_else(|| bad("footer table"))?
                .to_vec();
            while entries.len() >= 18 {
                let n = entries.len();
                let esize = usize::from(u16_at(&entries, n - 18).unwrap_or(0));
                if esize < 18 || esize > n {
                    return Err(bad("malformed footer table entry"));
                }
                let mut g = [0u8; 16];
                g.copy_from_slice(&entries[n - 16..]);
                table.push((g, entries[n - esize..n - 18].to_vec()));
                entries.truncate(n - esize);
            }
        }
        let mut ovmf = Ovmf {
            data,
            end,
            table,
            sections: Vec::new(),
        };
        ovmf.sections = ovmf.parse_metadata()?;
        Ok(ovmf)
    }

    /// The data of the footer table's entry with GUID `g`, if any.
    pub(crate) fn entry(&self, g: &str) -> Option<&[u8]> {
        let g = guid(g);
        self.table
            .iter()
            .find(|(k, _)| *k == g)
            .map(|(_, v)| v.as_slice())
    }

    fn parse_metadata(&self) -> Result<Vec<SectionDesc>, MeasureError> {
        let bad = |m: String| MeasureError::Ovmf(m);
        let Some(e) = self.entry(SEV_METADATA_GUID) else {
            return Ok(Vec::new());
        };
        let from_end = u32_at(e, 0).ok_or_else(|| bad("SEV metadata entry".into()))? as usize;
        let start = self
            .data
            .len()
            .checked_sub(from_end)
            .ok_or_else(|| bad("SEV metadata offset".into()))?;
        if self.data.get(start..start + 4) != Some(b"ASEV") {
            return Err(bad("SEV metadata signature is not ASEV".into()));
        }
        let count =
            u32_at(&self.data, start + 12).ok_or_else(|| bad("SEV metadata header".into()))?;
        if count as usize > self.data.len().saturating_sub(start + 16) / 12 {
            return Err(bad(format!(
                "SEV metadata claims {count} sections, more than the image holds"
            )));
        }
        (0..count as usize)
            .map(|i| {
                let at = start + 16 + i * 12;
                let (gpa, size, ty) = (
                    u32_at(&self.data, at),
                    u32_at(&self.data, at + 4),
                    u32_at(&self.data, at + 8),
                );
                let (Some(gpa), Some(size), Some(ty)) = (gpa, size, ty) else {
                    return Err(bad(format!("SEV metadata section {i} truncated")));
                };
                let kind = match ty {
                    1 => Section::SecMem,
                    2 => Section::Secrets,
                    3 => Section::Cpuid,
                    4 => Section::SvsmCaa,
                    0x10 => Section::KernelHashes,
                    t => {
                        return Err(bad(format!(
                            "SEV metadata section {i}: unknown type {t:#x}"
                        )));
                    }
                };
                Ok(SectionDesc {
                    gpa: u64::from(gpa),
                    size: u64::from(size),
                    kind,
                })
            })
            .collect()
    }

    /// The image's bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Guest physical address the image is loaded at.
    pub fn gpa(&self) -> u64 {
        self.end - self.data.len() as u64
    }

    /// A Coconut SVSM image's entry point (guest physical).
    fn svsm_entry(&self) -> Option<u64> {
        self.entry(SVSM_INFO_GUID)
            .and_then(|e| u32_at(e, 0))
            .map(|off| self.gpa() + u64::from(off))
    }

    fn sev_es_reset_eip(&self) -> Option<u32> {
        self.entry(SEV_ES_RESET_BLOCK_GUID)
            .and_then(|e| u32_at(e, 0))
    }

    fn hashes_table_gpa(&self) -> Option<u64> {
        self.entry(SEV_HASH_TABLE_RV_GUID)
            .and_then(|e| u32_at(e, 0))
            .map(u64::from)
    }
}

/// The running launch digest (SNP ABI PAGE_INFO chaining).
#[derive(Debug, Clone)]
struct Gctx {
    ld: [u8; 48],
}

impl Gctx {
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        // 99: IMI page (0); 100..103: VMPL permissions and reserved (0).
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = sha384(&info);
    }

    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE).enumerate() {
            self.update(PAGE_NORMAL, gpa + (i * PAGE) as u64, &sha384(page));
        }
    }

    /// One vCPU's VMSA, given the SHA-384 of its page.
    fn vmsa(&mut self, page_digest: &[u8; 48]) {
        self.update(PAGE_VMSA, VMSA_GPA, page_digest);
    }

    fn zero_pages(&mut self, gpa: u64, size: u64, page_type: u8) {
        let mut off = 0;
        while off < size {
            self.update(page_type, gpa + off, &[0u8; 48]);
            off += PAGE as u64;
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct SnpLaunch<'a> {
    pub ovmf: &'a Ovmf,
    /// Kernel, initrd and command line for measured direct boot.
    pub kernel: Option<&'a [u8]>,
    pub initrd: Option<&'a [u8]>,
    pub append: Option<&'a str>,
    pub vcpus: u32,
    /// CPUID(1).EAX signature given to the guest (QEMU only: EC2 and
    /// GCE report a fixed one).
    pub vcpu_sig: u32,
    /// SEV_FEATURES of the VMSAs (`guest_features`, e.g. 0x1 or 0x21).
    pub guest_features: u64,
    pub vmm: Vmm,
    /// A precomputed OVMF hash to start from instead of hashing the image.
    pub ovmf_hash: Option<[u8; 48]>,
    /// A Coconut SVSM launched below OVMF (QEMU only; no direct boot): the
    /// SVSM image, parsed to end where OVMF's variable store begins.
    pub svsm: Option<&'a Ovmf>,
}

/// CPUID signature from family/model/stepping (as QEMU builds it).
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (fam_low, fam_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (fam_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (fam_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// Named vCPU types and their signatures (QEMU's CPU models).
pub fn vcpu_type_sig(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "epyc" | "epyc-v1" | "epyc-v2" | "epyc-ibpb" | "epyc-v3" | "epyc-v4" => cpu_sig(23, 1, 2),
        "epyc-rome" | "epyc-rome-v1" | "epyc-rome-v2" | "epyc-rome-v3" => cpu_sig(23, 49, 0),
        "epyc-milan" | "epyc-milan-v1" | "epyc-milan-v2" => cpu_sig(25, 1, 1),
        "epyc-genoa" | "epyc-genoa-v1" => cpu_sig(25, 17, 0),
        _ => return None,
    })
}

/// The OVMF-only part of the digest (what `--ovmf-hash-only` prints).
pub fn ovmf_hash(ovmf: &Ovmf) -> [u8; 48] {
    let mut g = Gctx { ld: [0; 48] };
    g.normal_pages(ovmf.gpa(), &ovmf.data);
    g.ld
}

/// The kernel-hashes page: the SEV hash table at `offset` in a zero page.
fn hashes_page(
    kernel: &[u8],
    initrd: &[u8],
    append: Option<&str>,
    offset: usize,
) -> Result<Vec<u8>, MeasureError> {
    let sha = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    let mut cmdline = append.unwrap_or("").as_bytes().to_vec();
    cmdline.push(0);
    let entry = |g: &str, h: &[u8]| {
        let mut e = guid(g).to_vec();
        e.extend_from_slice(&50u16.to_le_bytes());
        e.extend_from_slice(h);
        e
    };
    let mut table = guid(HASH_TABLE_HEADER_GUID).to_vec();
    table.extend_from_slice(&168u16.to_le_bytes());
    table.extend(entry(CMDLINE_GUID, sha(&cmdline).as_ref()));
    table.extend(entry(INITRD_GUID, sha(initrd).as_ref()));
    table.extend(entry(KERNEL_GUID, sha(kernel).as_ref()));
    table.resize(table.len().div_ceil(16) * 16, 0);
    let mut page = vec![0u8; PAGE];
    page.get_mut(offset..offset + table.len())
        .ok_or_else(|| MeasureError::Ovmf("the SEV hash table does not fit in its page".into()))?
        .copy_from_slice(&table);
    Ok(page)
}

/// The launch digest (48 bytes) for `l`.
pub fn launch_digest(l: &SnpLaunch<'_>) -> Result<[u8; 48], MeasureError> {
    if l.vcpus == 0 || l.vcpus > MAX_VCPUS {
        return Err(MeasureError::Input(format!(
            "{} vCPUs: 1 to {MAX_VCPUS}",
            l.vcpus
        )));
    }
    let ovmf = l.ovmf;
    let mut g = match l.ovmf_hash {
        Some(h) => Gctx { ld: h },
        None => Gctx {
            ld: ovmf_hash(ovmf),
        },
    };
    if let Some(svsm) = l.svsm {
        return svsm_digest(g, svsm, l);
    }
    let kernel_hashes = match l.kernel {
        Some(kernel) => {
            let table_gpa = ovmf
                .hashes_table_gpa()
                .ok_or(MeasureError::NoKernelHashes)?;
            let offset = (table_gpa & 0xfff) as usize;
            Some(hashes_page(
                kernel,
                l.initrd.unwrap_or(&[]),
                l.append,
                offset,
            )?)
        }
        None => None,
    };
    metadata_pages(&mut g, ovmf, kernel_hashes.as_deref(), l.vmm)?;
    g.vmsa(&sha384(&ovmf_vmsa(
        l.vmm,
        BSP_EIP,
        l.vcpu_sig,
        l.guest_features,
    )));
    if l.vcpus > 1 {
        // Every application processor starts alike: one page, hashed once.
        let ap_eip = ovmf
            .sev_es_reset_eip()
            .ok_or_else(|| MeasureError::Ovmf("no SEV-ES reset block for APs".into()))?;
        let ap = sha384(&ovmf_vmsa(
            l.vmm,
            u64::from(ap_eip),
            l.vcpu_sig,
            l.guest_features,
        ));
        for _ in 1..l.vcpus {
            g.vmsa(&ap);
        }
    }
    Ok(g.ld)
}

fn sha384(b: &[u8]) -> [u8; 48] {
    let mut d = [0u8; 48];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, b).as_ref());
    d
}

/// OVMF, then the SVSM image, its metadata pages, and a VMSA per vCPU all
/// starting in the SVSM (which then starts OVMF itself, unmeasured).
fn svsm_digest(mut g: Gctx, svsm: &Ovmf, l: &SnpLaunch<'_>) -> Result<[u8; 48], MeasureError> {
    if l.vmm != Vmm::Qemu || l.kernel.is_some() {
        return Err(MeasureError::Input(
            "an SVSM launch is measured for QEMU without direct kernel boot only".into(),
        ));
    }
    if svsm.end > l.ovmf.gpa() {
        return Err(MeasureError::Input("the SVSM image overlaps OVMF".into()));
    }
    let entry = svsm
        .svsm_entry()
        .ok_or_else(|| MeasureError::Ovmf("the SVSM image has no SVSM_INFO entry".into()))?;
    g.normal_pages(svsm.gpa(), &svsm.data);
    metadata_pages(&mut g, svsm, None, Vmm::Qemu)?;
    let page = sha384(&svsm_vmsa(entry, l.vcpu_sig));
    for _ in 0..l.vcpus {
        g.vmsa(&page);
    }
    Ok(g.ld)
}

/// The pages the firmware's SEV metadata names, as the VMM loads them;
/// `kernel_hashes` is the hashes page of a direct boot (kernel, initrd,
/// command line), measured in place of the zero page otherwise there.
fn metadata_pages(
    g: &mut Gctx,
    ovmf: &Ovmf,
    kernel_hashes: Option<&[u8]>,
    vmm: Vmm,
) -> Result<(), MeasureError> {
    let has_hashes_section = ovmf
        .sections
        .iter()
        .any(|s| s.kind == Section::KernelHashes);
    if kernel_hashes.is_some() && !has_hashes_section {
        return Err(MeasureError::NoKernelHashes);
    }
    for s in &ovmf.sections {
        match s.kind {
            // GCE accepts the firmware's pre-validated memory unmeasured.
            Section::SecMem if vmm == Vmm::Gce => g.zero_pages(s.gpa, s.size, PAGE_UNMEASURED),
            Section::SecMem | Section::SvsmCaa => g.zero_pages(s.gpa, s.size, PAGE_ZERO),
            Section::Secrets => g.update(PAGE_SECRETS, s.gpa, &[0; 48]),
            Section::Cpuid if vmm != Vmm::Ec2 => g.update(PAGE_CPUID, s.gpa, &[0; 48]),
            Section::Cpuid => {}
            Section::KernelHashes => match kernel_hashes {
                Some(page) => g.normal_pages(s.gpa, page),
                None => g.zero_pages(s.gpa, s.size, PAGE_ZERO),
            },
        }
    }
    // EC2 measures the CPUID page last.
    if vmm == Vmm::Ec2 {
        for s in ovmf.sections.iter().filter(|s| s.kind == Section::Cpuid) {
            g.update(PAGE_CPUID, s.gpa, &[0; 48]);
        }
    }
    Ok(())
}
