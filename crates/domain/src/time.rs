use chrono::{DateTime, TimeZone, Utc};

/// A point in time, kept as whole seconds since the Unix epoch (UTC), as every backend can
/// store and compare it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp())
    }

    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The wire form upstream emits from a MySQL-backed deployment: `2026-11-23T09:18:53+00:00`.
    pub fn to_wire(self) -> String {
        let instant: DateTime<Utc> = Utc
            .timestamp_opt(self.0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        instant.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_has_whole_seconds_and_explicit_offset() {
        assert_eq!(
            Timestamp::from_unix_seconds(1_795_425_533).to_wire(),
            "2026-11-23T09:18:53+00:00"
        );
    }
}
