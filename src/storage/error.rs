//! The storage layer's error: everything that can go wrong below the data
//! model (fjall I/O, a snapshot stream that is truncated or corrupt, bytes on
//! disk that do not decode).
//!
//! Deterministic command failures (WRONGTYPE, not an integer...) are not
//! errors here: apply returns them as `OpResult::Error` so every replica
//! agrees on them. A `StorageError` means this node cannot trust its disk,
//! and the cluster layer stops the node rather than let replicas diverge.

/// A failure of the local storage, never of the command being applied.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The fjall engine failed (I/O, poisoned journal, ...).
    #[error("storage engine error: {0}")]
    Engine(#[from] fjall::Error),
    /// Reading or writing a snapshot stream failed.
    #[error("snapshot stream I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A snapshot stream is truncated, corrupt or of an unknown format.
    #[error("invalid snapshot stream: {0}")]
    Snapshot(&'static str),
    /// Bytes stored on disk do not decode.
    #[error("corrupt stored data: {0}")]
    Corrupt(&'static str),
}

impl From<StorageError> for crate::server::Reply {
    /// A read that hit a storage failure answers with an error reply; the
    /// connection stays usable.
    fn from(error: StorageError) -> Self {
        crate::server::Reply::error(format!("ERR {error}"))
    }
}
