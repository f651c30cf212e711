//! Errors.
/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
/// Placeholder, replaced by the real error enum.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);
