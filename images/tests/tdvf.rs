//! MRTD from a TDVF image. No real TDVF with a known MRTD is among the
//! shared vectors, so a synthetic image is measured here against the
//! definition written out literally (the whole stream of 128-byte blocks
//! and 256-byte chunks, hashed at once), in both page-add orders; and the
//! parser's refusals are checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ciel_images::snp_measure::Ovmf;
use ciel_images::tdvf::{PageAddOrder, mrtd, tdvf_sections};

const LEN: usize = 16 * 4096;
const BFV_GPA: u64 = 0x1_0000_0000 - 0x8000;

fn guid_le(s: &str) -> Vec<u8> {
    let h: Vec<u8> = s
        .split('-')
        .collect::<String>()
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    let mut g = Vec::new();
    g.extend(h[0..4].iter().rev());
    g.extend(h[4..6].iter().rev());
    g.extend(h[6..8].iter().rev());
    g.extend(&h[8..16]);
    g
}

/// (data_offset, raw size, gpa, memory size, kind, attributes)
type Section = (u32, u32, u64, u64, u32, u32);

const SECTIONS: [Section; 3] = [
    (0x8000, 0x8000, BFV_GPA, 0x8000, 0, 1), // BFV, measured
    (0, 0, 0x80_9000, 0x2000, 2, 0),         // TD_HOB, added only
    (0, 0, 0x80_b000, 0x1000, 3, 2),         // TempMem, PAGE.AUG: neither
];

/// A 64 KiB image: pseudo-random bytes, the TDVF descriptor at 0x1000 and
/// the OVMF footer table (one entry: the descriptor's offset from the end).
fn image(sections: &[Section]) -> Vec<u8> {
    let mut img: Vec<u8> = (0..LEN as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let desc = 0x1000;
    let mut d = b"TDVF".to_vec();
    d.extend((16 + 32 * sections.len() as u32).to_le_bytes());
    d.extend(1u32.to_le_bytes());
    d.extend((sections.len() as u32).to_le_bytes());
    for &(off, raw, gpa, size, kind, attr) in sections {
        d.extend(off.to_le_bytes());
        d.extend(raw.to_le_bytes());
        d.extend(gpa.to_le_bytes());
        d.extend(size.to_le_bytes());
        d.extend(kind.to_le_bytes());
        d.extend(attr.to_le_bytes());
    }
    img[desc..desc + d.len()].copy_from_slice(&d);
    let mut entry = ((LEN - desc) as u32).to_le_bytes().to_vec();
    entry.extend(22u16.to_le_bytes());
    entry.extend(guid_le("e47a6535-984a-4798-865e-4685a7bf8ec2"));
    let mut table = entry;
    table.extend(((table.len() + 18) as u16).to_le_bytes());
    table.extend(guid_le("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = LEN - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

/// The MRTD definition, literally: every block in order, hashed at once.
fn expected(img: &[u8], order: PageAddOrder) -> Vec<u8> {
    let block = |name: &[u8], gpa: u64| {
        let mut b = vec![0u8; 128];
        b[..name.len()].copy_from_slice(name);
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    };
    let mut stream = Vec::new();
    for &(off, _, gpa, size, _, attr) in &SECTIONS {
        let pages = size / 4096;
        let adds: Vec<Vec<u8>> = (0..pages)
            .map(|p| {
                if attr & 2 == 0 {
                    block(b"MEM.PAGE.ADD", gpa + p * 4096)
                } else {
                    vec![]
                }
            })
            .collect();
        let extends: Vec<Vec<u8>> = (0..pages)
            .map(|p| {
                let mut v = Vec::new();
                if attr & 1 != 0 {
                    for c in 0..16u64 {
                        let o = p * 4096 + c * 256;
                        v.extend(block(b"MR.EXTEND", gpa + o));
                        v.extend(&img[off as usize + o as usize..][..256]);
                    }
                }
                v
            })
            .collect();
        match order {
            PageAddOrder::Interleaved => {
                for (a, e) in adds.iter().zip(&extends) {
                    stream.extend(a);
                    stream.extend(e);
                }
            }
            PageAddOrder::AddsFirst => {
                adds.iter().for_each(|a| stream.extend(a));
                extends.iter().for_each(|e| stream.extend(e));
            }
        }
    }
    ring::digest::digest(&ring::digest::SHA384, &stream)
        .as_ref()
        .to_vec()
}

#[test]
fn mrtd_follows_the_tdx_module_definition_in_both_orders() {
    let img = image(&SECTIONS);
    let ovmf = Ovmf::parse(img.clone()).unwrap();
    assert_eq!(tdvf_sections(&ovmf).unwrap().len(), 3);
    let inter = mrtd(&ovmf, PageAddOrder::Interleaved).unwrap();
    let first = mrtd(&ovmf, PageAddOrder::AddsFirst).unwrap();
    assert_eq!(inter.to_vec(), expected(&img, PageAddOrder::Interleaved));
    assert_eq!(first.to_vec(), expected(&img, PageAddOrder::AddsFirst));
    assert_ne!(inter, first);

    // The fuzz target's seed (which the CLI test measures) is this image.
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/ovmf/synthetic-tdvf.bin");
    assert_eq!(std::fs::read(seed).unwrap(), img);

    // A byte of the measured firmware volume changes MRTD; a byte outside
    // every measured section does not.
    let mut changed = img.clone();
    changed[0x8000 + 4097] ^= 1;
    assert_ne!(
        mrtd(&Ovmf::parse(changed).unwrap(), PageAddOrder::Interleaved).unwrap(),
        inter
    );
    let mut unmeasured = img.clone();
    unmeasured[0x3000] ^= 1;
    assert_eq!(
        mrtd(&Ovmf::parse(unmeasured).unwrap(), PageAddOrder::Interleaved).unwrap(),
        inter
    );
}

#[test]
fn malformed_tdvf_metadata_is_refused_with_the_reason() {
    let err = |sections: &[Section]| {
        mrtd(
            &Ovmf::parse(image(sections)).unwrap(),
            PageAddOrder::Interleaved,
        )
        .unwrap_err()
        .to_string()
    };
    let mut s = SECTIONS;
    s[0].2 += 1;
    assert!(err(&s).contains("not page aligned"), "{}", err(&s));
    let mut s = SECTIONS;
    s[0].0 = 0xc000; // 32 KiB measured from 48 KiB: past the 64 KiB image
    assert!(err(&s).contains("past the"), "{}", err(&s));
    let mut s = SECTIONS;
    s[1].1 = 0x3000; // more raw data than memory
    assert!(err(&s).contains("more raw data"), "{}", err(&s));
    let mut s = SECTIONS;
    s[1].2 = u64::MAX - 0xfff;
    assert!(err(&s).contains("wraps"), "{}", err(&s));

    // No signature where the entry points.
    let mut img = image(&SECTIONS);
    img[0x1000] = b'X';
    let e = mrtd(&Ovmf::parse(img).unwrap(), PageAddOrder::Interleaved).unwrap_err();
    assert!(e.to_string().contains("no TDVF signature"), "{e}");

    // Without the TDX metadata entry, the image is not a TDVF build.
    let mut img = image(&SECTIONS);
    let guid_at = LEN - 32 - 18 - 16;
    img[guid_at] ^= 0xff;
    let e = mrtd(&Ovmf::parse(img).unwrap(), PageAddOrder::Interleaved).unwrap_err();
    assert!(e.to_string().contains("not a TDVF build"), "{e}");

    // The shared vectors' last 4 KiB of a real OVMF build: its TDVF
    // metadata names the firmware volumes before it, which are missing.
    let dir = std::env::var_os("CIEL_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
        });
    let suffix = std::fs::read(dir.join("measure/sev-snp-measure/ovmf_AmdSev_suffix.bin")).unwrap();
    let e = mrtd(&Ovmf::parse(suffix).unwrap(), PageAddOrder::Interleaved).unwrap_err();
    assert!(
        e.to_string().contains("run past the 4096-byte image"),
        "{e}"
    );
}
