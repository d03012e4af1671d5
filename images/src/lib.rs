//! # ciel-images
//!
//! A client or key broker can only trust a measurement it can recompute.
//! This crate builds guest images reproducibly (bit for bit from the same
//! inputs) and computes the launch measurements the hardware reports:
//! the image itself ([`build`], in the [`cpio`] initramfs format), the
//! SEV-SNP launch digest ([`snp_measure`]), TDX's RTMRs replayed from a CC
//! event log ([`ccel`]) and MRTD from a TDVF image ([`tdvf`]); and the
//! reproducible OCI image a Kata Confidential Containers pod runs ([`oci`]).

#![forbid(unsafe_code)]

pub mod build;
pub mod ccel;
pub mod cpio;
pub mod oci;
pub mod snp_measure;
mod snp_vmsa;
pub mod tdvf;
