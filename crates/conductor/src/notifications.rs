//! Audit notifications: CADF events `magnum.cluster.{create,update,delete}` in the
//! oslo.messaging notification envelope, as upstream emits them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use magnum_domain::cluster::{Cluster, HealthStatus};
use magnum_domain::operation::Initiator;
use serde_json::{json, Value};

/// The audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Update,
    Delete,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Pending,
    Success,
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Pending => "pending",
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
        }
    }
}

/// One audit event about one cluster.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub cluster: Cluster,
    pub initiator: Initiator,
}

impl AuditEvent {
    pub fn event_type(&self) -> String {
        format!("magnum.cluster.{}", self.action.as_str())
    }

    pub fn priority(&self) -> &'static str {
        match self.outcome {
            AuditOutcome::Failure => "ERROR",
            AuditOutcome::Pending | AuditOutcome::Success => "INFO",
        }
    }

    /// The CADF payload, with upstream's keys (including its `"docker_volume_size:"` typo,
    /// which consumers written against upstream read).
    pub fn payload(&self) -> Value {
        let cluster = &self.cluster;
        let now = chrono::Utc::now();
        let naive = |seconds: i64| {
            chrono::DateTime::from_timestamp(seconds, 0)
                .map(|at| at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        };
        json!({
            "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
            "eventType": "activity",
            "id": uuid::Uuid::new_v4().to_string(),
            "eventTime": now.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string(),
            "action": self.action.as_str(),
            "outcome": self.outcome.as_str(),
            "observer": {"id": uuid::Uuid::new_v4().to_string(), "typeURI": "service/magnum/cluster"},
            "initiator": {
                "id": uuid::Uuid::new_v4().to_string(),
                "typeURI": "service/security/account/user",
                "user_id": self.initiator.user_id,
                "project_id": self.initiator.project_id,
            },
            "target": {
                "id": cluster.uuid.to_string(),
                "typeURI": "service/magnum/cluster",
                "name": cluster.display_name(),
                "attachments": [{
                    "name": "cluster_data",
                    "typeURI": "service/magnum/cluster",
                    "content": {
                        "status": cluster.status.as_str(),
                        "status_reason": cluster.status_reason,
                        "project_id": cluster.project_id,
                        "created_at": naive(cluster.created_at.unix_seconds()),
                        "updated_at": cluster.updated_at.and_then(|at| naive(at.unix_seconds())),
                        "cluster_template_id": cluster.cluster_template_id.to_string(),
                        "keypair": cluster.keypair,
                        "docker_volume_size:": cluster.docker_volume_size,
                        "labels": Value::Object(cluster.labels.as_map().clone()),
                        "master_flavor_id": cluster.master_flavor_id,
                        "flavor_id": cluster.flavor_id,
                        "stack_id": cluster.stack_id,
                        "health_status": cluster.health_status.map(HealthStatus::as_str),
                        "create_timeout": cluster.create_timeout,
                        "api_address": cluster.api_address,
                        "discovery_url": cluster.discovery_url,
                        "node_addresses": cluster.node_addresses,
                        "master_addresses": cluster.master_addresses,
                        "node_count": cluster.node_count,
                        "master_count": cluster.master_count,
                    }
                }]
            }
        })
    }

    /// The oslo.messaging notification envelope around the payload.
    pub fn envelope(&self, host: &str) -> Value {
        json!({
            "message_id": uuid::Uuid::new_v4().to_string(),
            "publisher_id": format!("container-infra.{host}"),
            "event_type": self.event_type(),
            "priority": self.priority(),
            "payload": self.payload(),
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        })
    }
}

/// Where audit events go. Delivery failures are logged, never fatal to the operation.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, event: AuditEvent);

    /// Delivers what is still pending, before the process stops.
    async fn close(&self) {}
}

/// Drops events (notifications disabled).
pub struct NullNotifier;

#[async_trait::async_trait]
impl Notifier for NullNotifier {
    async fn notify(&self, _event: AuditEvent) {}
}

/// Appends one JSON envelope per line to a file. Wrap it in a [`QueuedNotifier`]: that
/// also keeps two events from interleaving their lines.
pub struct FileNotifier {
    path: PathBuf,
    host: String,
}

impl FileNotifier {
    pub fn new(path: PathBuf, host: String) -> Self {
        Self { path, host }
    }
}

#[async_trait::async_trait]
impl Notifier for FileNotifier {
    async fn notify(&self, event: AuditEvent) {
        let mut line = event.envelope(&self.host).to_string();
        line.push('\n');
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                // Audit events name users and projects: for the operator only.
                .mode(0o600)
                .open(&self.path)
                .await?;
            file.write_all(line.as_bytes()).await?;
            file.flush().await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "cannot record an audit notification");
        }
    }
}

/// Events waiting for a slow sink, at most; past that, new ones are dropped (and counted in
/// the log) rather than holding up the operations that raise them.
pub const NOTIFICATION_QUEUE: usize = 1024;

/// Hands events to a sink through a bounded queue, in order, on a task of its own: an
/// operation never waits for a broker or a disk.
pub struct QueuedNotifier {
    queue: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<AuditEvent>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
}

/// How long stopping waits for queued events to reach their sink.
pub const NOTIFICATION_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

impl QueuedNotifier {
    /// Starts the task that feeds `sink`; it ends after the queue is closed and emptied.
    pub fn spawn(sink: Arc<dyn Notifier>) -> Self {
        let (queue, mut events) = tokio::sync::mpsc::channel(NOTIFICATION_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                sink.notify(event).await;
            }
        });
        Self {
            queue: std::sync::Mutex::new(Some(queue)),
            task: tokio::sync::Mutex::new(Some(task)),
            dropped: AtomicU64::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Notifier for QueuedNotifier {
    async fn notify(&self, event: AuditEvent) {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(queue) = queue else {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped, "audit notifications are closed; event dropped");
            return;
        };
        let why = match queue.try_send(event) {
            Ok(()) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => (
                event.event_type(),
                "the audit notification queue is full; event dropped",
            ),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(event)) => (
                event.event_type(),
                "audit notifications are closed; event dropped",
            ),
        };
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(event = %why.0, dropped, "{}", why.1);
    }

    async fn close(&self) {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = self.task.lock().await.take() {
            if tokio::time::timeout(NOTIFICATION_DRAIN, task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "audit events still queued after {NOTIFICATION_DRAIN:?} were not delivered"
                );
            }
        }
    }
}

/// Publishes to RabbitMQ as oslo.messaging's notifier does: `{"oslo.version": "2.0",
/// "oslo.message": "<envelope>"}` on the topic exchange, routing key
/// `<topic>.<priority>` (`notifications.info`, `notifications.error`).
pub struct RabbitNotifier {
    address: crate::amqp::AmqpAddress,
    exchange: String,
    topic: String,
    host: String,
    connection: tokio::sync::Mutex<Option<crate::amqp::AmqpConnection>>,
}

impl RabbitNotifier {
    pub fn new(
        transport_url: &str,
        exchange: String,
        topic: String,
        host: String,
    ) -> Result<Self, crate::amqp::AmqpError> {
        Ok(Self {
            address: crate::amqp::AmqpAddress::parse(transport_url)?,
            exchange,
            topic,
            host,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    fn routing_keys(&self) -> [String; 2] {
        [
            format!("{}.info", self.topic),
            format!("{}.error", self.topic),
        ]
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<(), crate::amqp::AmqpError> {
        let mut connection = self.connection.lock().await;
        if connection.is_none() {
            let mut fresh = crate::amqp::AmqpConnection::connect(&self.address).await?;
            let keys = self.routing_keys();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            fresh.declare_topic(&self.exchange, &keys).await?;
            *connection = Some(fresh);
        }
        let result = match connection.as_mut() {
            Some(open) => open.publish(&self.exchange, routing_key, body).await,
            None => Ok(()),
        };
        if result.is_err() {
            *connection = None;
        }
        result
    }
}

#[async_trait::async_trait]
impl Notifier for RabbitNotifier {
    async fn notify(&self, event: AuditEvent) {
        let envelope = event.envelope(&self.host).to_string();
        let body = json!({"oslo.version": "2.0", "oslo.message": envelope}).to_string();
        let routing_key = format!("{}.{}", self.topic, event.priority().to_ascii_lowercase());
        // One retry on a fresh connection: a broker restart should not lose the event.
        for attempt in 0..2 {
            match self.publish(&routing_key, body.as_bytes()).await {
                Ok(()) => return,
                Err(error) if attempt == 1 => {
                    tracing::warn!(%error, event = %event.event_type(), "cannot publish an audit notification");
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn event() -> AuditEvent {
        AuditEvent {
            action: AuditAction::Create,
            outcome: AuditOutcome::Pending,
            cluster: crate::test_records::cluster(),
            initiator: Initiator::default(),
        }
    }

    /// A sink that takes no event until it is let go, then counts them.
    struct Stuck {
        go: tokio::sync::Semaphore,
        received: AtomicU64,
    }

    #[async_trait::async_trait]
    impl Notifier for Stuck {
        async fn notify(&self, _event: AuditEvent) {
            let _permit = self.go.acquire().await;
            self.received.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_stuck_sink_never_holds_up_the_caller_and_the_queue_is_bounded() {
        let sink = Arc::new(Stuck {
            go: tokio::sync::Semaphore::new(0),
            received: AtomicU64::new(0),
        });
        let queued = QueuedNotifier::spawn(sink.clone());
        let sent = NOTIFICATION_QUEUE + 100;
        // Without the queue the first call would wait for the sink forever.
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            for _ in 0..sent {
                queued.notify(event()).await;
            }
        })
        .await
        .expect("notify returns while the sink is stuck");
        let dropped = queued.dropped.load(Ordering::SeqCst);
        assert!(
            (99..=100).contains(&dropped),
            "{dropped} dropped of {sent}: one may be in the sink's hands"
        );
        sink.go.add_permits(sent);
        queued.close().await;
        let expected = u64::try_from(sent).unwrap() - dropped;
        for _ in 0..600 {
            if sink.received.load(Ordering::SeqCst) == expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            sink.received.load(Ordering::SeqCst),
            expected,
            "closing delivers every queued event"
        );
    }
}
