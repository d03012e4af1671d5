//! Subcommand implementations: argument types and the glue between files,
//! clocks and the pure library crates.

pub mod attest;
pub mod attest_gpus;
pub mod bench;
pub mod client;
pub mod collateral;
pub mod demo;
pub mod embeddings;
pub mod enclave;
pub mod files;
pub mod host;
pub mod image;
pub mod image_oci;
pub mod kbs;
mod kbs_admin;
mod proxy;
pub mod seal;
mod sim;

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

/// A size in bytes: a whole number, optionally with B, KiB, MiB or GiB.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: a size is a number with B, KiB, MiB or GiB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size above zero"))
}

/// Logs to stderr; `RUST_LOG` filters (default: info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::byte_size;

    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("512MiB"), Ok(512 << 20));
        assert_eq!(byte_size("2GiB"), Ok(2 << 30));
        assert_eq!(byte_size("3 KiB"), Ok(3 << 10));
        for bad in ["", "0", "2GB", "GiB", "-1MiB", "99999999999999GiB"] {
            let e = byte_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
