//! Placeholder: the string command family.

use super::CommandSpec;

/// The string family's commands.
pub const COMMANDS: &[CommandSpec] = &[];
