//! MRTD: the TDX module's measurement of the TD's initial memory, recomputed
//! from a TDVF image (TDX-enabled OVMF). The firmware's TDVF metadata lists
//! its sections; the VMM adds each section's pages with TDH.MEM.PAGE.ADD
//! (which extends MRTD with the page's address) and, for sections marked
//! MR.EXTEND, measures their contents with TDH.MR.EXTEND in 256-byte chunks
//! (address, then the bytes). Intel TDX module ABI, "TDH.MEM.PAGE.ADD" and
//! "TDH.MR.EXTEND"; TDVF design guide, "TDVF metadata".
//!
//! The VMMs differ in one thing that changes the digest: whether a page is
//! measured right after it is added (upstream KVM and QEMU) or all of a
//! section's pages are added first (earlier TDX QEMU/KVM trees).

use crate::snp_measure::{MeasureError, Ovmf, u32_at, u64_at};

/// The OVMF footer entry whose last four bytes give the TDVF descriptor's
/// offset from the end of the image.
const TDX_METADATA_OFFSET_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";

const PAGE: u64 = 4096;
const EXTEND_CHUNK: u64 = 256;
/// Section attributes.
const ATTR_MR_EXTEND: u32 = 1;
const ATTR_PAGE_AUG: u32 = 2;
/// Far more than any TDVF has (1 GiB of initial memory; OVMF's sections
/// total a few MiB): bounds the work a hostile image can ask for.
const MAX_PAGES: u64 = 1 << 18;
const MAX_SECTIONS: u32 = 64;

/// One TDVF metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Where its bytes are in the image (for measured sections).
    pub data_offset: u32,
    pub raw_data_size: u32,
    /// Where it is loaded, and how much memory it takes (page multiples).
    pub memory_address: u64,
    pub memory_data_size: u64,
    /// BFV 0, CFV 1, TD_HOB 2, TempMem 3, PermMem 4, Payload 5,
    /// PayloadParam 6, TD_INFO 7.
    pub kind: u32,
    pub attributes: u32,
}

/// When the VMM measures a page's contents relative to adding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAddOrder {
    /// Each page is added, then measured (upstream KVM, QEMU 10.1+).
    Interleaved,
    /// A section's pages are all added, then measured (earlier TDX trees).
    AddsFirst,
}

fn bad(m: String) -> MeasureError {
    MeasureError::Ovmf(format!("TDVF metadata: {m}"))
}

/// The TDVF sections of `image` (an OVMF build with TDX support).
pub fn tdvf_sections(image: &Ovmf) -> Result<Vec<TdvfSection>, MeasureError> {
    let data = image.data();
    let entry = image
        .entry(TDX_METADATA_OFFSET_GUID)
        .ok_or_else(|| bad("the image has no TDX metadata entry (not a TDVF build)".into()))?;
    let from_end = entry
        .len()
        .checked_sub(4)
        .and_then(|at| u32_at(entry, at))
        .ok_or_else(|| bad("offset entry shorter than 4 bytes".into()))?;
    let start = data
        .len()
        .checked_sub(from_end as usize)
        .ok_or_else(|| bad(format!("descriptor offset {from_end} is beyond the image")))?;
    let u32_at = |at: usize| u32_at(data, at);
    let u64_at = |at: usize| u64_at(data, at);
    if data.get(start..start + 4) != Some(b"TDVF") {
        return Err(bad(format!("no TDVF signature at image offset {start}")));
    }
    let (version, count) = match (u32_at(start + 8), u32_at(start + 12)) {
        (Some(v), Some(n)) => (v, n),
        _ => return Err(bad("descriptor truncated".into())),
    };
    if version != 1 {
        return Err(bad(format!(
            "descriptor version {version}, only 1 is known"
        )));
    }
    if count > MAX_SECTIONS {
        return Err(bad(format!("{count} sections, at most {MAX_SECTIONS}")));
    }
    let mut pages = 0u64;
    (0..count as usize)
        .map(|i| {
            let at = start + 16 + i * 32;
            let truncated = || bad(format!("section {i} truncated"));
            let s = TdvfSection {
                data_offset: u32_at(at).ok_or_else(truncated)?,
                raw_data_size: u32_at(at + 4).ok_or_else(truncated)?,
                memory_address: u64_at(at + 8).ok_or_else(truncated)?,
                memory_data_size: u64_at(at + 16).ok_or_else(truncated)?,
                kind: u32_at(at + 24).ok_or_else(truncated)?,
                attributes: u32_at(at + 28).ok_or_else(truncated)?,
            };
            check_section(i, &s, data.len())?;
            pages += s.memory_data_size / PAGE;
            if pages > MAX_PAGES {
                return Err(bad(format!("more than {MAX_PAGES} pages to measure")));
            }
            Ok(s)
        })
        .collect()
}

fn check_section(i: usize, s: &TdvfSection, image_len: usize) -> Result<(), MeasureError> {
    let aligned = |v: u64| v.is_multiple_of(PAGE);
    if !aligned(s.memory_address) || !aligned(s.memory_data_size) {
        return Err(bad(format!("section {i}: memory range not page aligned")));
    }
    if u64::from(s.raw_data_size) > s.memory_data_size {
        return Err(bad(format!("section {i}: more raw data than memory")));
    }
    if s.memory_address.checked_add(s.memory_data_size).is_none() {
        return Err(bad(format!("section {i}: memory range wraps")));
    }
    // MR.EXTEND measures the section's whole memory size from the image.
    if s.attributes & ATTR_MR_EXTEND != 0 {
        let end = u64::from(s.data_offset).checked_add(s.memory_data_size);
        if end.is_none_or(|e| e > image_len as u64) {
            return Err(bad(format!(
                "section {i}: measured bytes run past the {image_len}-byte image"
            )));
        }
    }
    Ok(())
}

/// MRTD of a TD launched from `image` by a VMM adding pages in `order`.
pub fn mrtd(image: &Ovmf, order: PageAddOrder) -> Result<[u8; 48], MeasureError> {
    let sections = tdvf_sections(image)?;
    let data = image.data();
    let mut h = ring::digest::Context::new(&ring::digest::SHA384);
    // Each operation extends MRTD with a 128-byte block: its name, zero
    // padded to 16 bytes, then the guest address; MR.EXTEND then the chunk.
    let block = |name: &[u8], gpa: u64| {
        let mut b = [0u8; 128];
        b[..name.len()].copy_from_slice(name);
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    };
    let add = |h: &mut ring::digest::Context, s: &TdvfSection, page: u64| {
        if s.attributes & ATTR_PAGE_AUG == 0 {
            h.update(&block(b"MEM.PAGE.ADD", s.memory_address + page * PAGE));
        }
    };
    let extend = |h: &mut ring::digest::Context, s: &TdvfSection, page: u64| {
        if s.attributes & ATTR_MR_EXTEND == 0 {
            return;
        }
        for chunk in 0..PAGE / EXTEND_CHUNK {
            let off = page * PAGE + chunk * EXTEND_CHUNK;
            h.update(&block(b"MR.EXTEND", s.memory_address + off));
            // In range: check_section bounded data_offset + memory size.
            let from = (u64::from(s.data_offset) + off) as usize;
            h.update(&data[from..from + EXTEND_CHUNK as usize]);
        }
    };
    for s in &sections {
        let pages = s.memory_data_size / PAGE;
        match order {
            PageAddOrder::Interleaved => {
                for p in 0..pages {
                    add(&mut h, s, p);
                    extend(&mut h, s, p);
                }
            }
            PageAddOrder::AddsFirst => {
                (0..pages).for_each(|p| add(&mut h, s, p));
                (0..pages).for_each(|p| extend(&mut h, s, p));
            }
        }
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(h.finish().as_ref());
    Ok(out)
}
