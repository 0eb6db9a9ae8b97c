//! Cluster events: what happened to a cluster, step by step, in words a user reads.
//!
//! Most events are not written by hand: [`describe_change`] reads them off the difference
//! between the aggregate as it was read and as a use case left it (a status that moved, a
//! count that changed, health that turned), so that every change through the one commit path
//! tells its story and none can forget to. Drivers and the conductor add the steps no stored
//! field shows (a node started, a CA rotated) as explicit events on the aggregate.

use uuid::Uuid;

use crate::aggregate::ClusterAggregate;
use crate::cluster::{Cluster, ClusterStatus, HealthStatus, NodeGroup};
use crate::time::Timestamp;

/// The longest message kept; longer ones are cut at a character boundary with an ellipsis.
pub const MAX_MESSAGE_CHARS: usize = 1_000;
/// The longest reason, nodegroup or node name kept.
pub const MAX_WORD_CHARS: usize = 64;
/// At most this many events are recorded by one change (a change that would say more keeps
/// the first ones and a last `EventsDropped` event saying how many were left out).
pub const MAX_EVENTS_PER_CHANGE: usize = 100;

/// Kubernetes' two event types: `Warning` for what needs someone's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Normal" => Some(EventType::Normal),
            "Warning" => Some(EventType::Warning),
            _ => None,
        }
    }
}

/// One step of a cluster's life, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    pub event_type: EventType,
    /// A stable CamelCase word (`NodeStarted`, `ScaledOut`, `OperationFailed`, …).
    pub reason: String,
    pub message: String,
    /// The nodegroup it concerns, by name.
    pub nodegroup: Option<String>,
    /// The node it concerns, by name.
    pub node: Option<String>,
}

impl ClusterEvent {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Self::new(EventType::Normal, reason, message.into())
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Self::new(EventType::Warning, reason, message.into())
    }

    fn new(event_type: EventType, reason: &str, message: String) -> Self {
        Self {
            event_type,
            reason: clean_reason(reason),
            message: bounded_text(&message, MAX_MESSAGE_CHARS),
            nodegroup: None,
            node: None,
        }
    }

    pub fn in_nodegroup(mut self, nodegroup: &str) -> Self {
        self.nodegroup = Some(bounded_text(nodegroup, MAX_WORD_CHARS));
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(bounded_text(node, MAX_WORD_CHARS));
        self
    }
}

/// A reason is a CamelCase word: anything else a driver sends is reduced to its letters and
/// digits (and to `Unknown` when none is left), so that clients can match on it.
fn clean_reason(reason: &str) -> String {
    let cleaned: String = reason
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_WORD_CHARS)
        .collect();
    if cleaned.is_empty() {
        "Unknown".to_owned()
    } else {
        cleaned
    }
}

/// At most `limit` characters, without NUL (which no engine stores alike).
pub fn bounded_text(text: &str, limit: usize) -> String {
    let text = text.replace('\0', "");
    if text.chars().count() <= limit {
        return text;
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What caused a change: the request (its `x-openstack-request-id`) or the operation the
/// conductor was running. Recorded with every event of the change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    pub request_id: Option<String>,
    pub operation: Option<Uuid>,
}

impl Cause {
    pub fn request(request_id: &str) -> Self {
        Self {
            request_id: Some(bounded_text(request_id, 255)),
            operation: None,
        }
    }

    pub fn operation(operation: Uuid) -> Self {
        Self {
            request_id: None,
            operation: Some(operation),
        }
    }

    /// Nothing in particular: the conductor's own observations (health, what a driver saw).
    pub fn none() -> Self {
        Self::default()
    }
}

/// The cluster as it was right after the change an event belongs to, so that a stream of
/// events is also a stream of the cluster's status, health and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub name: Option<String>,
    pub status: ClusterStatus,
    pub health_status: Option<HealthStatus>,
    pub node_count: i64,
    pub master_count: i64,
}

impl ClusterSnapshot {
    pub fn of(cluster: &Cluster) -> Self {
        Self {
            name: cluster.name.clone(),
            status: cluster.status,
            health_status: cluster.health_status,
            node_count: cluster.node_count,
            master_count: cluster.master_count,
        }
    }
}

/// An event as stored: `sequence` orders every event of every cluster in commit order (it is
/// the stream position clients resume from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub sequence: i64,
    pub uuid: Uuid,
    pub cluster_uuid: Uuid,
    pub project_id: String,
    pub user_id: String,
    pub created_at: Timestamp,
    pub event: ClusterEvent,
    pub cause: Cause,
    pub snapshot: ClusterSnapshot,
}

/// The events a change tells: read off the difference between the aggregate as read
/// (`before`) and as decided (`after`): nodegroups added, scaled, deleted or failed, then the
/// explicit events the use case added, then the cluster's new status and health.
pub fn describe_change(before: &ClusterAggregate, after: &ClusterAggregate) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    for nodegroup in &after.nodegroups {
        match before
            .nodegroups
            .iter()
            .find(|old| old.uuid == nodegroup.uuid)
        {
            None => events.push(
                ClusterEvent::normal(
                    "NodegroupAdded",
                    format!(
                        "Nodegroup {} ({}) added with {}.",
                        nodegroup.name,
                        nodegroup.role,
                        nodes(nodegroup.node_count)
                    ),
                )
                .in_nodegroup(&nodegroup.name),
            ),
            Some(old) => describe_nodegroup(old, nodegroup, &mut events),
        }
    }
    for old in &before.nodegroups {
        if !after.nodegroups.iter().any(|now| now.uuid == old.uuid) {
            events.push(
                ClusterEvent::normal(
                    "NodegroupDeleted",
                    format!("Nodegroup {} deleted.", old.name),
                )
                .in_nodegroup(&old.name),
            );
        }
    }
    // The steps a change took come before the status it ended in; when there are too many,
    // steps are dropped, never the status or health they led to.
    events.extend(after.events.iter().cloned());
    let mut outcome = Vec::new();
    describe_status(&before.cluster, &after.cluster, &mut outcome);
    describe_health(&before.cluster, &after.cluster, &mut outcome);
    let mut events = bound(events, MAX_EVENTS_PER_CHANGE - outcome.len());
    events.extend(outcome);
    events
}

/// The events of a new cluster: its create started, with the nodegroups it starts with.
pub fn describe_creation(nodegroups: &[NodeGroup]) -> Vec<ClusterEvent> {
    let groups: Vec<String> = nodegroups
        .iter()
        .map(|nodegroup| format!("{} ({})", nodegroup.name, nodes(nodegroup.node_count)))
        .collect();
    vec![ClusterEvent::normal(
        "CreateStarted",
        format!("Creating the cluster: {}.", groups.join(", ")),
    )]
}

/// At most `limit` events: past it, the first `limit - 1` and one saying how many were left out.
fn bound(mut events: Vec<ClusterEvent>, limit: usize) -> Vec<ClusterEvent> {
    if events.len() > limit {
        let dropped = events.len() - (limit - 1);
        events.truncate(limit - 1);
        events.push(ClusterEvent::warning(
            "EventsDropped",
            format!("{dropped} more events of this change were not recorded."),
        ));
    }
    events
}

fn nodes(count: i64) -> String {
    if count == 1 {
        "1 node".to_owned()
    } else {
        format!("{count} nodes")
    }
}

fn describe_nodegroup(old: &NodeGroup, new: &NodeGroup, events: &mut Vec<ClusterEvent>) {
    if new.node_count != old.node_count {
        let reason = if new.node_count > old.node_count {
            "ScaledOut"
        } else {
            "ScaledIn"
        };
        events.push(
            ClusterEvent::normal(
                reason,
                format!(
                    "Nodegroup {}: {} → {}.",
                    new.name,
                    nodes(old.node_count),
                    nodes(new.node_count)
                ),
            )
            .in_nodegroup(&new.name),
        );
    }
    if new.status != old.status {
        let event = match new.status {
            ClusterStatus::DeleteInProgress => Some(ClusterEvent::normal(
                "NodegroupDeleting",
                format!("Deleting nodegroup {}.", new.name),
            )),
            status if status.is_failed() => Some(ClusterEvent::warning(
                "NodegroupFailed",
                format!(
                    "Nodegroup {} is {}: {}",
                    new.name,
                    status.as_str(),
                    new.status_reason.as_deref().unwrap_or("no reason given")
                ),
            )),
            _ => None,
        };
        if let Some(event) = event {
            events.push(event.in_nodegroup(&new.name));
        }
    }
}

fn describe_status(old: &Cluster, new: &Cluster, events: &mut Vec<ClusterEvent>) {
    if new.status == old.status {
        return;
    }
    let reason_text = new.status_reason.clone();
    let (event_type, reason, fallback) = match new.status {
        ClusterStatus::CreateInProgress => (EventType::Normal, "CreateStarted", "Creating."),
        ClusterStatus::CreateComplete => (EventType::Normal, "CreateCompleted", "Created."),
        ClusterStatus::UpdateInProgress => (EventType::Normal, "UpdateStarted", "Updating."),
        ClusterStatus::UpdateComplete => (EventType::Normal, "UpdateCompleted", "Updated."),
        ClusterStatus::RollbackInProgress => {
            (EventType::Warning, "RollbackStarted", "Rolling back.")
        }
        ClusterStatus::RollbackComplete => (EventType::Normal, "RollbackCompleted", "Rolled back."),
        ClusterStatus::DeleteInProgress => (EventType::Normal, "DeleteStarted", "Deleting."),
        ClusterStatus::DeleteComplete => (EventType::Normal, "Deleted", "Deleted."),
        status if status.is_failed() => (EventType::Warning, "OperationFailed", status.as_str()),
        _ => (EventType::Normal, "StatusChanged", new.status.as_str()),
    };
    let message = match reason_text {
        Some(text) if !text.is_empty() => format!("{}: {text}", new.status.as_str()),
        _ => format!("{}: {fallback}", new.status.as_str()),
    };
    events.push(ClusterEvent::new(event_type, reason, message));
}

fn describe_health(old: &Cluster, new: &Cluster, events: &mut Vec<ClusterEvent>) {
    if new.health_status == old.health_status {
        describe_node_health(old, new, events);
        return;
    }
    let Some(status) = new.health_status else {
        return;
    };
    let event_type = if status == HealthStatus::Healthy {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let mut message = format!("Health is {}", status.as_str());
    let details: Vec<String> = new
        .health_status_reason
        .iter()
        .filter(|(_, value)| {
            value
                .as_str()
                .is_some_and(|text| text != "True" && text != "ok")
        })
        .map(|(key, value)| format!("{key}: {}", value.as_str().unwrap_or_default()))
        .collect();
    if details.is_empty() {
        message.push('.');
    } else {
        message.push_str(&format!(" ({}).", details.join("; ")));
    }
    events.push(ClusterEvent::new(event_type, "HealthChanged", message));
}

/// The per-node readiness a health report holds (`<node>.Ready` keys, as drivers and
/// upstream's health monitor write them), when the overall health did not change (a change
/// of it is told by `HealthChanged`, with the nodes that are not Ready): a node that starts
/// or stops reporting Ready, or reports another value, gets a `NodeHealthChanged` event, so
/// that a follower of the stream (the dashboard's node list) learns of it without polling.
fn describe_node_health(old: &Cluster, new: &Cluster, events: &mut Vec<ClusterEvent>) {
    if old.health_status_reason == new.health_status_reason {
        return;
    }
    let readiness = |cluster: &Cluster| -> Vec<(String, String)> {
        cluster
            .health_status_reason
            .iter()
            .filter_map(|(key, value)| {
                let node = key.strip_suffix(".Ready")?;
                let shown = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                Some((node.to_owned(), shown))
            })
            .collect()
    };
    let (before, after) = (readiness(old), readiness(new));
    for (node, value) in &after {
        let previous = before.iter().find(|(name, _)| name == node);
        if previous.map(|(_, old_value)| old_value) == Some(value) {
            continue;
        }
        let event = if value == "True" {
            ClusterEvent::normal("NodeHealthChanged", format!("Node {node} reports Ready."))
        } else {
            ClusterEvent::warning(
                "NodeHealthChanged",
                format!("Node {node} reports Ready: {value}."),
            )
        };
        events.push(event.on_node(node));
    }
    for (node, _) in &before {
        if !after.iter().any(|(name, _)| name == node) {
            events.push(
                ClusterEvent::normal(
                    "NodeHealthChanged",
                    format!("Node {node} no longer reports its health."),
                )
                .on_node(node),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_camel_case_words_and_texts_are_bounded() {
        let event = ClusterEvent::normal("Node Started!\n", "x".repeat(5_000)).on_node("a\0b");
        assert_eq!(event.reason, "NodeStarted");
        assert_eq!(event.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(event.message.ends_with('…'));
        assert_eq!(event.node.as_deref(), Some("ab"));
        assert_eq!(ClusterEvent::warning("!!", "m").reason, "Unknown");
    }

    #[test]
    fn too_many_events_of_one_change_end_with_a_count() {
        let events = bound(
            (0..250)
                .map(|index| ClusterEvent::normal("NodeStarted", format!("node {index}")))
                .collect(),
            MAX_EVENTS_PER_CHANGE,
        );
        assert_eq!(events.len(), MAX_EVENTS_PER_CHANGE);
        let last = events.last().expect("a last event");
        assert_eq!(last.reason, "EventsDropped");
        assert_eq!(
            last.message,
            "151 more events of this change were not recorded."
        );
    }
}
