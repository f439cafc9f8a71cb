//! The top-level error type (placeholder).
