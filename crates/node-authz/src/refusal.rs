//! The refusal type and the helpers that word refusal messages.

use std::fmt;

/// Why a Docker API request was refused.
///
/// The message is what the tenant sees: the Docker client prints
/// `Error response from daemon: authorization denied by plugin magnum-authz: <message>`,
/// so every message names the API field and, where there is one, the CLI flag that was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    message: String,
}

impl Refusal {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message for dockerd (and so for the tenant's client).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// The common tail of refusal messages.
pub(crate) const NOT_ALLOWED: &str = "not allowed on a magnum-rs local cluster";

/// `"<what> not allowed on a magnum-rs local cluster (<option>)"`; `what` carries its verb
/// ("privileged containers are").
pub(crate) fn not_allowed(what: &str, option: &str) -> Refusal {
    Refusal::new(format!("{what} {NOT_ALLOWED} ({option})"))
}

/// A tenant-supplied value made safe for a message: quoted and escaped the way Rust's `Debug`
/// does (so no control character reaches dockerd's error text or our log) and cut short, since
/// a value can be as long as the 1 MiB body that carried it.
pub(crate) fn quoted(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_control_characters_and_shortens() {
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        let shown = quoted(&long);
        assert!(shown.ends_with('…'));
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), 64);
    }

    #[test]
    fn not_allowed_wording() {
        assert_eq!(
            not_allowed("privileged containers are", "HostConfig.Privileged").message(),
            "privileged containers are not allowed on a magnum-rs local cluster (HostConfig.Privileged)"
        );
    }
}
