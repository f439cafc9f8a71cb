//! Configuration (placeholder until the config layer lands).

/// The node's configuration.
pub struct Config {}
