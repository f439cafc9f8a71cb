//! Storage on fjall (placeholder until the storage layer lands).

/// The local applied key-value state.
pub struct Store {}
