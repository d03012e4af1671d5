//! Subcommand implementations: argument types and the glue between files,
//! clocks and the pure library crates.

pub mod attest;
mod files;
pub mod seal;
mod sim;
