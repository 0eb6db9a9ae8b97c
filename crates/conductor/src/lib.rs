//! The conductor: the only component that touches the world. Today it reports its liveness
//! (the `mservices` heartbeat); lifecycle operations run here as they arrive.

use std::time::Duration;

use magnum_domain::time::Timestamp;
use magnum_store::Store;
use tokio::sync::watch;

/// The binary name upstream reports for conductors.
pub const CONDUCTOR_BINARY: &str = "magnum-conductor";

pub struct Conductor {
    store: Store,
    host: String,
    heartbeat_interval: Duration,
}

impl Conductor {
    pub fn new(store: Store, host: String, heartbeat_interval: Duration) -> Self {
        Self {
            store,
            host,
            heartbeat_interval,
        }
    }

    /// Records the first heartbeat, so that the conductor is listed as soon as it starts.
    pub async fn register(&self) -> Result<(), magnum_store::StoreError> {
        self.store
            .record_service_heartbeat(&self.host, CONDUCTOR_BINARY, Timestamp::now())
            .await
    }

    /// Runs until `shutdown` turns true. A failed heartbeat is logged and retried at the next
    /// tick: a database outage makes the service look down, it does not stop it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(conductor.host = %self.host, "conductor started");
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.heartbeat_interval,
            self.heartbeat_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self
                        .store
                        .record_service_heartbeat(&self.host, CONDUCTOR_BINARY, Timestamp::now())
                        .await
                    {
                        tracing::warn!(conductor.host = %self.host, %error, "heartbeat failed");
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!(conductor.host = %self.host, "conductor stopped");
    }
}
