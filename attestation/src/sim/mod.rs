//! The simulated platform (placeholder replaced below).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("simulated platform: {0}")]
    Crypto(String),
}
