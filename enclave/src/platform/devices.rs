//! The SEV guest driver's character device, for kernels without
//! configfs-tsm (or with it disabled): `/dev/sev-guest`
//! (`SNP_GET_EXT_REPORT`: the report and the host's certificate table).
//!
//! There is no TDX counterpart on purpose: `/dev/tdx_guest`'s
//! `TDX_CMD_GET_REPORT0` gives a TDREPORT, which only the host's quoting
//! service turns into a quote a remote verifier can check — and configfs-tsm
//! already asks it for one (the kernel sends the TDREPORT to the host's QGS
//! through the VMM), so a TDX guest takes its quotes from configfs-tsm.
//!
//! With the entry to the engine's AVX2 kernel, this is one of the two
//! places in ciel with `unsafe`: one `ioctl(2)` per
//! request, on structs laid out as the kernel's UAPI header
//! (`linux/sev-guest.h`) declares them; the layouts are
//! pinned by tests.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `_IOWR(ty, nr, size)` as in `asm-generic/ioctl.h`.
const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    (3u64 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct snp_report_req`.
#[repr(C)]
struct SnpReportReq {
    user_data: [u8; 64],
    vmpl: u32,
    rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`.
#[repr(C)]
struct SnpExtReportReq {
    data: SnpReportReq,
    certs_address: u64,
    certs_len: u32,
}

/// `struct snp_report_resp`: the firmware's `MSG_REPORT_RSP` (status,
/// report size, 24 reserved bytes, then the report).
#[repr(C)]
struct SnpReportResp {
    data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct SnpGuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    /// `exitinfo2`: firmware error (low 32 bits), VMM error (high 32 bits).
    exitinfo2: u64,
}

const SNP_GET_EXT_REPORT: u64 = iowr(b'S', 0x2, std::mem::size_of::<SnpGuestRequestIoctl>());
/// The VMM's answer when the certificate buffer is too small; it then
/// writes the length it needs into `certs_len`.
const SNP_GUEST_VMM_ERR_INVALID_LEN: u32 = 1;
const SNP_REPORT_LEN: usize = 1184;

/// One ioctl on `file`.
fn ioctl<T>(file: &File, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` value of
    // the type the request number encodes (its size is part of `request`),
    // and every pointer inside it refers to a buffer that outlives this
    // call, with its length stated beside it. The kernel writes only within
    // those bounds. `file` keeps the descriptor open for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An SNP report for `report_data` at VMPL 0, and the certificate table the
/// host supplied (empty if it supplied none).
pub fn snp_extended_report(device: &Path, report_data: [u8; 64]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let file = File::options().read(true).write(true).open(device)?;
    let mut certs = vec![0u8; 4 * 4096];
    for _ in 0..2 {
        let mut req = SnpExtReportReq {
            data: SnpReportReq {
                user_data: report_data,
                vmpl: 0,
                rsvd: [0; 28],
            },
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: u32::try_from(certs.len()).unwrap_or(u32::MAX),
        };
        let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
        let mut call = SnpGuestRequestIoctl {
            msg_version: 1,
            req_data: &mut req as *mut SnpExtReportReq as u64,
            resp_data: &mut *resp as *mut SnpReportResp as u64,
            exitinfo2: 0,
        };
        match ioctl(&file, SNP_GET_EXT_REPORT, &mut call) {
            Ok(()) => return parse_snp_response(&resp.data, &certs, req.certs_len),
            Err(e) if (call.exitinfo2 >> 32) as u32 == SNP_GUEST_VMM_ERR_INVALID_LEN => {
                // The host's table is larger: grow to what it asked for, once.
                let need = req.certs_len as usize;
                if need <= certs.len() || need > 1 << 20 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: certificate table of {need} bytes refused ({e})",
                            device.display()
                        ),
                    ));
                }
                certs.resize(need, 0);
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{}: SNP_GET_EXT_REPORT failed: {e} (firmware error {:#x}, VMM error {:#x})",
                        device.display(),
                        call.exitinfo2 as u32,
                        (call.exitinfo2 >> 32) as u32
                    ),
                ));
            }
        }
    }
    Err(io::Error::other(
        "the host kept asking for a larger certificate buffer",
    ))
}

/// The report out of `MSG_REPORT_RSP`, checked, and the used table bytes.
fn parse_snp_response(resp: &[u8], certs: &[u8], certs_len: u32) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let word = |at: usize| {
        resp.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(u32::MAX)
    };
    let (status, size) = (word(0), word(4) as usize);
    if status != 0 {
        return Err(io::Error::other(format!(
            "SNP firmware report status {status:#x}"
        )));
    }
    let report = resp
        .get(32..32 + size)
        .filter(|_| size == SNP_REPORT_LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("SNP report of {size} bytes"),
            )
        })?;
    let table = certs
        .get(..(certs_len as usize).min(certs.len()))
        .unwrap_or_default();
    Ok((report.to_vec(), table.to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The layouts and request numbers of the kernel headers.
    #[test]
    fn layouts_match_the_kernel_uapi() {
        assert_eq!(size_of::<SnpReportReq>(), 96);
        assert_eq!(size_of::<SnpExtReportReq>(), 112);
        assert_eq!(offset_of!(SnpExtReportReq, certs_address), 96);
        assert_eq!(offset_of!(SnpExtReportReq, certs_len), 104);
        assert_eq!(size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, req_data), 8);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, exitinfo2), 24);
        assert_eq!(SNP_GET_EXT_REPORT, 0xc020_5302);
    }

    #[test]
    fn the_firmware_response_is_checked() {
        let mut resp = vec![0u8; 4000];
        resp[4..8].copy_from_slice(&1184u32.to_le_bytes());
        resp[32] = 5;
        let (report, table) = parse_snp_response(&resp, &[1, 2, 3], 2).unwrap();
        assert_eq!(report.len(), 1184);
        assert_eq!(report[0], 5);
        assert_eq!(table, vec![1, 2]);
        resp[0] = 0x16;
        assert!(parse_snp_response(&resp, &[], 0).is_err());
        resp[0] = 0;
        resp[4..8].copy_from_slice(&4000u32.to_le_bytes());
        assert!(parse_snp_response(&resp, &[], 0).is_err());
    }

    #[test]
    fn missing_devices_are_clear_errors() {
        let e = snp_extended_report(Path::new("/nonexistent/sev-guest"), [0; 64]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
