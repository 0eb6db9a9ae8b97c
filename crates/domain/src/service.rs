use crate::time::Timestamp;

/// A running magnum process that reports its liveness (today: conductors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagnumService {
    pub id: i64,
    pub host: String,
    pub binary: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    pub report_count: i64,
    pub last_seen_up: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
}

impl MagnumService {
    /// Upstream's rule: up iff the last heartbeat (else the last update, else creation) is no
    /// older than `down_after_seconds` and the service is not forced down.
    pub fn is_up(&self, now: Timestamp, down_after_seconds: i64) -> bool {
        if self.forced_down {
            return false;
        }
        let last = self
            .last_seen_up
            .or(self.updated_at)
            .unwrap_or(self.created_at);
        now.unix_seconds() - last.unix_seconds() <= down_after_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_until_the_heartbeat_is_too_old() {
        let service = MagnumService {
            id: 1,
            host: "h".to_owned(),
            binary: "magnum-conductor".to_owned(),
            disabled: false,
            disabled_reason: None,
            forced_down: false,
            report_count: 3,
            last_seen_up: Some(Timestamp::from_unix_seconds(1000)),
            created_at: Timestamp::from_unix_seconds(10),
            updated_at: None,
        };
        assert!(service.is_up(Timestamp::from_unix_seconds(1180), 180));
        assert!(!service.is_up(Timestamp::from_unix_seconds(1181), 180));
        let forced = MagnumService {
            forced_down: true,
            ..service
        };
        assert!(!forced.is_up(Timestamp::from_unix_seconds(1000), 180));
    }
}
