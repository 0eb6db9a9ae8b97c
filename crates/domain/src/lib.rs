//! Magnum's domain: the records the service keeps, the rules they obey and the policy that
//! decides who may touch them. Nothing in this crate does IO.

pub mod aggregate;
pub mod automation;
pub mod cluster;
pub mod cluster_template;
pub mod event;
pub mod identity;
pub mod labels;
pub mod names;
pub mod nodegroup;
pub mod operation;
pub mod policy;
pub mod pyliteral;
pub mod quota;
pub mod service;
pub mod time;
pub mod yaml;

pub use identity::Identity;

/// Whether a NUL character is anywhere in a JSON value, keys included. PostgreSQL cannot
/// store one in text, and no attribute has a use for it: every decoded string is checked.
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(object) => object
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        _ => false,
    }
}

/// oslo's `is_uuid_like`: 32 hex digits, with or without dashes and braces, any case.
pub fn is_uuid_like(value: &str) -> bool {
    parse_uuid_like(value).is_some()
}

/// The canonical (lower-case, hyphenated) form of a UUID-like string.
pub fn parse_uuid_like(value: &str) -> Option<uuid::Uuid> {
    let trimmed = value.trim_start_matches("urn:").trim_start_matches("uuid:");
    let trimmed = trimmed.trim_start_matches('{').trim_end_matches('}');
    let hex: String = trimmed.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    uuid::Uuid::parse_str(&hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_like_accepts_oslo_forms() {
        assert!(is_uuid_like("2849d522-2a68-452d-b223-8209940a1cd2"));
        assert!(is_uuid_like("2849D5222A68452DB2238209940A1CD2"));
        assert!(is_uuid_like("{2849d522-2a68-452d-b223-8209940a1cd2}"));
        assert!(!is_uuid_like("k8s-ct"));
        assert!(!is_uuid_like("2849d522-2a68-452d-b223-8209940a1cd2.json"));
        assert!(!is_uuid_like(""));
    }
}
