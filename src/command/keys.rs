//! Placeholder: the keys command family.

use super::CommandSpec;

/// The keys family's commands.
pub const COMMANDS: &[CommandSpec] = &[];
