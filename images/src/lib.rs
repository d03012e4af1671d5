//! # ciel-images
//!
//! A client or key broker can only trust a measurement it can recompute.
//! This crate builds guest images reproducibly (bit for bit from the same
//! inputs) and will compute the launch measurements the hardware reports.
//!
//! So far: the initramfs format ([`cpio`]) and TDX RTMR replay from a CC
//! event log ([`ccel`]).

#![forbid(unsafe_code)]

pub mod build;
pub mod ccel;
pub mod cpio;
pub mod snp_measure;
mod snp_vmsa;
