//! The replicated operation and its result (placeholder).

use serde::{Deserialize, Serialize};

/// One replicated write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {}

/// The deterministic outcome of applying an [`Op`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OpResult {}
