//! # ciel-images
//!
//! A client or key broker can only trust a measurement it can recompute.
//! This crate builds guest images reproducibly (bit for bit from the same
//! inputs) and will compute the launch measurements the hardware reports.
//!
//! It starts with the initramfs format, [`cpio`].

#![forbid(unsafe_code)]

pub mod cpio;
