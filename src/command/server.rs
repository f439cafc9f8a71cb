//! Placeholder: the server command family.

use super::CommandSpec;

/// The server family's commands.
pub const COMMANDS: &[CommandSpec] = &[];
