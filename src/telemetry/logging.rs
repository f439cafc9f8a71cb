//! The log subscriber: human-readable text or JSON lines on stderr.
//!
//! `main` installs it once, before the node starts, from `log.level` and
//! `log.format`; `RUST_LOG` overrides the level for a debugging session.
//! stdout stays free for commands' own output (and the stdout span
//! exporter). What is logged at info is what an operator wants to see once:
//! startup, leader changes, membership changes, snapshots; nothing per
//! request.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global log subscriber, writing to stderr.
///
/// # Errors
///
/// A one-line message if `RUST_LOG` or `log.level` does not parse, or a
/// subscriber is already installed.
pub fn init(config: &Config) -> Result<(), String> {
    let filter = filter(
        std::env::var(EnvFilter::DEFAULT_ENV).ok(),
        &config.log.level,
    )?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes would litter log files and captured test output.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// The filter from `RUST_LOG` when it is set and not blank, else from the
/// configured level.
fn filter(rust_log: Option<String>, level: &str) -> Result<EnvFilter, String> {
    match rust_log {
        Some(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG '{directives}': {e}")),
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid log.level '{level}': {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_beats_the_configured_level_unless_blank() {
        let f = filter(Some("debug".into()), "info").unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter(Some("  ".into()), "warn").unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = filter(None, "info,openraft=warn").unwrap();
        assert_eq!(f.to_string(), "openraft=warn,info");
    }

    #[test]
    fn bad_directives_name_their_source() {
        let e = filter(Some("=[".into()), "info").unwrap_err();
        assert!(e.starts_with("invalid RUST_LOG '=['"), "{e}");
        let e = filter(None, "=[").unwrap_err();
        assert!(e.starts_with("invalid log.level '=['"), "{e}");
    }
}
