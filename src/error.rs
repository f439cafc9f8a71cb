//! The crate's top-level error: what `main` reports and what a command turns
//! into an error reply.
//!
//! Each layer has its own error type (configuration, cluster, storage) and
//! this enum wraps them with `#[from]`, so `?` lifts a layer's error to the
//! top without losing what it was. Every variant's `Display` is one
//! self-contained line that already includes its cause, so callers print
//! `{}` and need not walk `source()`.

use crate::cluster::ClusterError;
use crate::config::ConfigError;

/// The crate's top-level error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O error outside the storage engine (binding a socket, reading a file).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An address from the configuration could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The configuration key the address came from.
        key: &'static str,
        /// The address.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The Raft layer failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Telemetry (the trace exporter) could not start.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The RESP error prefix to use when this error reaches a client, as in
    /// `-ERR <message>`: the first word of the error reply, which clients
    /// match on (`ERR`, `CLUSTERDOWN`, `TIMEOUT`...).
    pub fn resp_prefix(&self) -> &'static str {
        match self {
            Error::Config(_) | Error::Io(_) | Error::Bind { .. } | Error::Telemetry(_) => "ERR",
            Error::Cluster(e) => e.resp_prefix(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_the_cause() {
        let io = Error::from(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "address in use",
        ));
        assert_eq!(io.to_string(), "I/O error: address in use");
        assert_eq!(io.resp_prefix(), "ERR");
        let config = Error::from(ConfigError::Join(
            "--join: 'x' is not a host:port address".into(),
        ));
        assert_eq!(
            config.to_string(),
            "invalid config: --join: 'x' is not a host:port address"
        );
        assert_eq!(config.resp_prefix(), "ERR");
    }
}
