//! Subcommand implementations: argument types and the glue between files,
//! clocks and the pure library crates.

pub mod attest;
pub mod bench;
pub mod client;
pub mod demo;
pub mod enclave;
pub mod files;
pub mod host;
pub mod image;
pub mod kbs;
mod proxy;
pub mod seal;
mod sim;

/// Logs to stderr; `RUST_LOG` filters (default: info).
/// A `--max-connections` value: at least one (a cap of zero would refuse
/// every client), at most a million.
pub fn connection_cap(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a connection count from 1 to 1000000"
        )),
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
