//! Live cluster events as Server-Sent Events.
//!
//! One pump per API process follows the events table with an indexed poll (`sequence > ?`,
//! every `poll_interval`) and broadcasts what it finds; every stream subscribes to that
//! broadcast and filters it. Sequences grow in commit order (see `magnum_store::events`), so
//! the poll sees what any process committed, in order, without a gap; a stream that resumes
//! (`Last-Event-ID`) or falls behind (its share of the broadcast overflowed: a slow
//! consumer) reads what it missed from the database and goes on from the broadcast, skipping
//! what it already sent. Writers never wait for streams: the broadcast drops for laggards,
//! and laggards catch up from the table. Where retention dropped events a catch-up should
//! have sent, the stream says so (`gap`) and goes on with the events kept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use magnum_domain::event::StoredEvent;
use magnum_store::{EventScope, Store};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::auth::{AuthFailure, Authenticator};
use crate::error::ApiError;

/// How streams behave, and their bounds.
#[derive(Debug, Clone)]
pub struct EventStreamSettings {
    /// Streams this process serves at once.
    pub max_streams: usize,
    /// Streams one project holds at once in this process.
    pub max_streams_per_project: usize,
    /// How often the pump looks for events other processes wrote.
    pub poll_interval: Duration,
    /// A stream ends (with an `end` event; the client reconnects with `Last-Event-ID`) after
    /// this long, so that no connection is held forever.
    pub max_duration: Duration,
    /// A comment line at least this often, so that idle connections stay open through proxies
    /// and a gone client is noticed.
    pub keepalive: Duration,
    /// How often a stream's token is checked again (Keystone's cache answers most).
    pub recheck_token: Duration,
}

impl Default for EventStreamSettings {
    fn default() -> Self {
        Self {
            max_streams: 512,
            max_streams_per_project: 256,
            poll_interval: Duration::from_millis(200),
            max_duration: Duration::from_secs(3_600),
            keepalive: Duration::from_secs(15),
            recheck_token: Duration::from_secs(30),
        }
    }
}

/// Events the broadcast holds for streams that have not taken them yet.
const BROADCAST_CAPACITY: usize = 4_096;
/// Events one catch-up read takes.
const CATCH_UP_BATCH: i64 = 500;
/// Frames queued for one client's connection.
const FRAMES_PER_STREAM: usize = 64;
/// How long a new stream waits for the pump's first look at the table (503 after).
const PUMP_START_WAIT: Duration = Duration::from_secs(5);

/// The process's event pump and its streams.
pub struct EventHub {
    store: Store,
    settings: EventStreamSettings,
    sender: broadcast::Sender<Arc<StoredEvent>>,
    pump_started: std::sync::Once,
    streams: AtomicUsize,
    per_project: Mutex<HashMap<String, usize>>,
    /// The sequence the pump started from, once it has looked: streams start after it.
    pump_position: watch::Sender<Option<i64>>,
    /// Turned true when the server stops: every stream ends with `server_stopping`.
    stopping: watch::Sender<bool>,
    metrics: magnum_metrics::EventStreamMetrics,
}

impl EventHub {
    pub fn new(
        store: Store,
        settings: EventStreamSettings,
        metrics: magnum_metrics::EventStreamMetrics,
    ) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(Self {
            store,
            settings,
            metrics,
            sender,
            pump_started: std::sync::Once::new(),
            streams: AtomicUsize::new(0),
            per_project: Mutex::new(HashMap::new()),
            pump_position: watch::channel(None).0,
            stopping: watch::channel(false).0,
        })
    }

    /// Ends every stream (`server_stopping`) and refuses new ones: the server is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Streams open in this process.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    fn start_pump(self: &Arc<Self>) {
        self.pump_started.call_once(|| {
            let hub = Arc::downgrade(self);
            tokio::spawn(pump(hub));
        });
    }

    /// Claims a stream slot for `project`, or says why there is none (503).
    fn claim(self: &Arc<Self>, project: &str) -> Result<StreamSlot, ApiError> {
        let mut per_project = self
            .per_project
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = per_project.get(project).copied().unwrap_or(0);
        if held >= self.settings.max_streams_per_project {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "The project already holds {held} event streams on this server, its limit. \
                     Close one and retry."
                ),
            ));
        }
        if self.streams.load(Ordering::Relaxed) >= self.settings.max_streams {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "This server serves as many event streams as it can. Retry later.",
            ));
        }
        per_project.insert(project.to_owned(), held + 1);
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.metrics.opened();
        Ok(StreamSlot {
            hub: self.clone(),
            project: project.to_owned(),
        })
    }
}

/// A stream's share of the bounds; given back when the stream ends.
struct StreamSlot {
    hub: Arc<EventHub>,
    project: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.hub.streams.fetch_sub(1, Ordering::Relaxed);
        self.hub.metrics.closed();
        let mut per_project = self
            .hub
            .per_project
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = per_project.get_mut(&self.project) {
            *held -= 1;
            if *held == 0 {
                per_project.remove(&self.project);
            }
        }
    }
}

/// Follows the events table and broadcasts what it finds, in sequence order, while the hub
/// lives.
async fn pump(hub: std::sync::Weak<EventHub>) {
    let mut position = None;
    let mut failures = 0u32;
    loop {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let interval = hub.settings.poll_interval;
        let read = match position {
            None => hub.store.latest_event_sequence().await.map(|newest| {
                position = Some(newest);
                hub.pump_position.send_replace(Some(newest));
                Vec::new()
            }),
            Some(after) => {
                hub.store
                    .events_after(&EventScope::All, Some(after), CATCH_UP_BATCH)
                    .await
            }
        };
        let full = match read {
            Ok(events) => {
                failures = 0;
                let full = events.len() as i64 == CATCH_UP_BATCH;
                for event in events {
                    position = Some(event.sequence);
                    // No receiver is not an error: nobody watches right now.
                    let _ = hub.sender.send(Arc::new(event));
                }
                full
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "cannot read new cluster events");
                }
                false
            }
        };
        drop(hub);
        if !full {
            tokio::time::sleep(interval).await;
        }
    }
}

/// What a stream follows.
pub struct StreamRequest {
    pub scope: EventScope,
    /// Where to resume (`Last-Event-ID`); `None`: from now.
    pub resume_after: Option<i64>,
    /// The caller's project (for the per-project bound).
    pub project: String,
    /// The headers that authenticated the request: the token is checked again with them.
    pub auth_headers: HeaderMap,
    pub request_id: String,
    /// End the stream with the cluster's deletion: after its `Deleted` event, or at once
    /// when that was before where the stream starts.
    pub ends_with_cluster: bool,
}

/// Starts a stream: `text/event-stream`, one `cluster_event` per event, `end` with a reason
/// when the server ends it.
pub async fn stream(
    hub: &Arc<EventHub>,
    authenticator: Arc<dyn Authenticator>,
    request: StreamRequest,
) -> Result<Response<Body>, ApiError> {
    if *hub.stopping.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is stopping. Retry later.",
        ));
    }
    let slot = hub.claim(&request.project)?;
    hub.start_pump();
    // Subscribed before anything is read, so that nothing broadcast from now on is missed;
    // what was broadcast before is in the table for the first catch-up. The pump must have
    // taken its starting point first: it broadcasts only what follows it, and an event
    // committed between this stream's catch-up and a later start of the pump would be in
    // neither.
    let receiver = hub.sender.subscribe();
    let mut pump_position = hub.pump_position.subscribe();
    let started = tokio::time::timeout(PUMP_START_WAIT, async {
        pump_position.wait_for(Option::is_some).await.is_ok()
    })
    .await;
    if started != Ok(true) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Events cannot be read right now. Retry later.",
        ));
    }
    let start = match request.resume_after {
        Some(after) => after,
        // Past whatever retention dropped too (the newest events can be a deleted cluster's,
        // pruned): a new stream has missed nothing, and its ids resume past the marks.
        None => hub
            .store
            .latest_event_sequence()
            .await?
            .max(hub.store.events_pruned_through(&request.scope).await?),
    };
    let (frames, body) = mpsc::channel(FRAMES_PER_STREAM);
    let request_id = request.request_id.clone();
    tokio::spawn(follow(
        hub.clone(),
        authenticator,
        request,
        receiver,
        start,
        frames,
        slot,
    ));
    let mut response = Response::new(Body::from_stream(FrameStream(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(crate::context::REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

struct FrameStream(mpsc::Receiver<Bytes>);

impl futures_core::Stream for FrameStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(context).map(|frame| frame.map(Ok))
    }
}

/// Why a stream ended: sent as the `end` event's `reason`.
enum End {
    ClientGone,
    Ended(&'static str, String),
}

async fn follow(
    hub: Arc<EventHub>,
    authenticator: Arc<dyn Authenticator>,
    request: StreamRequest,
    mut receiver: broadcast::Receiver<Arc<StoredEvent>>,
    start: i64,
    frames: mpsc::Sender<Bytes>,
    _slot: StreamSlot,
) {
    let settings = hub.settings.clone();
    let started = Instant::now();
    let mut sent_up_to = start;
    // A first comment: the client knows at once that the stream is open.
    if frames
        .send(Bytes::from_static(b": stream open\nretry: 2000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let end = 'stream: {
        if let Err(end) = catch_up(&hub, &request, &mut sent_up_to, &frames).await {
            break 'stream end;
        }
        // A stream of a cluster deleted before it started (or resumed after the deletion)
        // would otherwise wait for a `Deleted` that was sent, or never will be, again.
        if request.ends_with_cluster {
            match newest_is_deleted(&hub, &request.scope).await {
                Err(end) => break 'stream end,
                Ok(false) => {}
                Ok(true) => {
                    // Committed after the catch-up read, it is sent first (which ends it).
                    if let Err(end) = catch_up(&hub, &request, &mut sent_up_to, &frames).await {
                        break 'stream end;
                    }
                    break 'stream cluster_deleted();
                }
            }
        }
        let mut keepalive = tokio::time::interval(settings.keepalive);
        keepalive.reset();
        let mut recheck = tokio::time::interval(settings.recheck_token);
        recheck.reset();
        let deadline = tokio::time::sleep(settings.max_duration);
        tokio::pin!(deadline);
        let mut stopping = hub.stopping.subscribe();
        loop {
            if *stopping.borrow_and_update() {
                break 'stream End::Ended(
                    "server_stopping",
                    "The server is stopping; reconnect with Last-Event-ID.".to_owned(),
                );
            }
            tokio::select! {
                _ = stopping.changed() => continue,
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if event.sequence <= sent_up_to || !in_scope(&event, &request.scope) {
                            continue;
                        }
                        sent_up_to = event.sequence;
                        if let Err(end) = send_event(&frames, &event, &request).await {
                            break 'stream end;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        hub.metrics.lagged();
                        tracing::debug!(
                            request.id = %request.request_id,
                            skipped,
                            "an event stream fell behind the broadcast; it reads what it missed from the table"
                        );
                        if let Err(end) = catch_up(&hub, &request, &mut sent_up_to, &frames).await {
                            break 'stream end;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        break 'stream End::Ended("server_stopping", "The server is stopping; reconnect with Last-Event-ID.".to_owned());
                    }
                },
                () = frames.closed() => break 'stream End::ClientGone,
                _ = keepalive.tick() => {
                    if frames.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        break 'stream End::ClientGone;
                    }
                }
                _ = recheck.tick() => {
                    if let Err(AuthFailure::Unauthenticated { .. }) =
                        authenticator.authenticate(&request.auth_headers).await
                    {
                        break 'stream End::Ended(
                            "token_expired",
                            "The token expired or was revoked; authenticate again and reconnect with Last-Event-ID.".to_owned(),
                        );
                    }
                }
                () = &mut deadline => {
                    break 'stream End::Ended(
                        "max_duration",
                        format!(
                            "Streams last at most {} s; reconnect with Last-Event-ID.",
                            settings.max_duration.as_secs()
                        ),
                    );
                }
            }
        }
    };
    if let End::Ended(reason, message) = end {
        tracing::debug!(request.id = %request.request_id, started = ?started.elapsed(), reason, "event stream ended");
        let data = json!({"reason": reason, "message": message, "last_event_id": sent_up_to});
        // With the id a reconnecting client (EventSource included) resumes where this ended.
        let frame = format!("id: {sent_up_to}\nevent: end\ndata: {data}\n\n");
        let _ = frames.send(Bytes::from(frame)).await;
    }
}

fn unavailable(error: &magnum_store::StoreError) -> End {
    tracing::warn!(%error, "an event stream cannot read the events table");
    End::Ended(
        "unavailable",
        "Events cannot be read right now; reconnect with Last-Event-ID.".to_owned(),
    )
}

fn cluster_deleted() -> End {
    End::Ended(
        "cluster_deleted",
        "The cluster was deleted; its events stay readable for a while.".to_owned(),
    )
}

/// Whether the newest event of a cluster's `scope` is its `Deleted` (a purged cluster gets
/// no event after it).
async fn newest_is_deleted(hub: &EventHub, scope: &EventScope) -> Result<bool, End> {
    let newest = hub
        .store
        .events_before(scope, None, 1)
        .await
        .map_err(|error| unavailable(&error))?;
    Ok(newest
        .first()
        .is_some_and(|event| event.event.reason == DELETED))
}

/// The reason of a purged cluster's last event.
const DELETED: &str = "Deleted";

/// Sends what the table holds after `sent_up_to` in the stream's scope. Where retention
/// dropped events the stream should have sent (a client resuming from further back than the
/// table keeps, or one so slow that pruning overtook it), a `gap` event says so once: sent
/// where every event kept up to the highest mark of the scope has been sent, with that mark
/// as its id, it moves the stream's position (and the client's `Last-Event-ID`) past what is
/// gone, so that neither a later catch-up nor a reconnection tells it again.
async fn catch_up(
    hub: &EventHub,
    request: &StreamRequest,
    sent_up_to: &mut i64,
    frames: &mpsc::Sender<Bytes>,
) -> Result<(), End> {
    loop {
        let events = hub
            .store
            .events_after(&request.scope, Some(*sent_up_to), CATCH_UP_BATCH)
            .await
            .map_err(|error| unavailable(&error))?;
        // Looked for after the read: pruning marks how far it goes before it deletes, so
        // whatever the read missed for it is marked by now.
        let pruned_through = hub
            .store
            .events_pruned_through(&request.scope)
            .await
            .map_err(|error| unavailable(&error))?;
        let complete = (events.len() as i64) < CATCH_UP_BATCH;
        let (through_mark, past_mark) =
            events.split_at(events.partition_point(|event| event.sequence <= pruned_through));
        for event in through_mark {
            *sent_up_to = event.sequence;
            send_event(frames, event, request).await?;
        }
        let mut settled = true;
        if pruned_through > *sent_up_to {
            // Sequences grow in commit order and a mark is a pruned event's sequence: once
            // a read has found an event past the mark, no kept event below it can appear any
            // more. A complete read that found none may have missed events committed after
            // it, below the mark; a read after the mark was looked up finds them.
            let every_kept_sent = !past_mark.is_empty()
                || (complete
                    && nothing_kept_through(hub, request, *sent_up_to, pruned_through).await?);
            if every_kept_sent {
                hub.metrics.gap();
                send_gap(frames, *sent_up_to, pruned_through).await?;
                *sent_up_to = pruned_through;
            } else {
                settled = false;
            }
        }
        for event in past_mark {
            *sent_up_to = event.sequence;
            send_event(frames, event, request).await?;
        }
        if complete && settled {
            return Ok(());
        }
    }
}

/// Whether the table holds no event of the stream's scope after `after` up to `through`.
async fn nothing_kept_through(
    hub: &EventHub,
    request: &StreamRequest,
    after: i64,
    through: i64,
) -> Result<bool, End> {
    let next = hub
        .store
        .events_after(&request.scope, Some(after), 1)
        .await
        .map_err(|error| unavailable(&error))?;
    Ok(next.first().is_none_or(|event| event.sequence > through))
}

async fn send_event(
    frames: &mpsc::Sender<Bytes>,
    event: &StoredEvent,
    request: &StreamRequest,
) -> Result<(), End> {
    let frame = format!(
        "id: {}\nevent: cluster_event\ndata: {}\n\n",
        event.sequence,
        // One line: the encoder escapes every control character.
        String::from_utf8_lossy(&magnum_types::encode(&event_document(event)))
    );
    frames
        .send(Bytes::from(frame))
        .await
        .map_err(|_| End::ClientGone)?;
    if request.ends_with_cluster && event.event.reason == DELETED {
        return Err(cluster_deleted());
    }
    Ok(())
}

/// Tells the client that events it should have had were dropped by retention (it resumed,
/// or fell behind, further back than the table keeps): it reads the current state again,
/// and the stream goes on with the events kept. Its id is `pruned_through`: every event kept
/// up to there was sent before it, so that is where to resume.
async fn send_gap(
    frames: &mpsc::Sender<Bytes>,
    last_sent: i64,
    pruned_through: i64,
) -> Result<(), End> {
    let data = json!({
        "reason": "events_pruned",
        "message": format!(
            "Events up to {pruned_through} were dropped by retention before this stream could \
             send them; every event kept up to there was sent. Read the current state again \
             to fill the gap; the stream goes on after {pruned_through}."
        ),
        "last_event_id": last_sent,
        "pruned_through": pruned_through,
    });
    frames
        .send(Bytes::from(format!(
            "id: {pruned_through}\nevent: gap\ndata: {data}\n\n"
        )))
        .await
        .map_err(|_| End::ClientGone)
}

fn in_scope(event: &StoredEvent, scope: &EventScope) -> bool {
    match scope {
        EventScope::Cluster(uuid) => event.cluster_uuid == *uuid,
        EventScope::Project(project) => event.project_id == *project,
        EventScope::All => true,
    }
}

/// An event as the API shows it, in lists and streams alike.
pub fn event_document(event: &StoredEvent) -> Value {
    let snapshot = &event.snapshot;
    let mut cluster = Map::new();
    cluster.insert("uuid".into(), json!(event.cluster_uuid.to_string()));
    cluster.insert("name".into(), json!(snapshot.name));
    cluster.insert("status".into(), json!(snapshot.status.as_str()));
    cluster.insert(
        "health_status".into(),
        json!(snapshot.health_status.map(|status| status.as_str())),
    );
    cluster.insert("node_count".into(), json!(snapshot.node_count));
    cluster.insert("master_count".into(), json!(snapshot.master_count));
    let mut document = Map::new();
    document.insert("uuid".into(), json!(event.uuid.to_string()));
    document.insert("sequence".into(), json!(event.sequence));
    document.insert("created_at".into(), json!(event.created_at.to_wire()));
    document.insert("type".into(), json!(event.event.event_type.as_str()));
    document.insert("reason".into(), json!(event.event.reason));
    document.insert("message".into(), json!(event.event.message));
    document.insert("nodegroup".into(), json!(event.event.nodegroup));
    document.insert("node".into(), json!(event.event.node));
    document.insert(
        "operation_uuid".into(),
        json!(event.cause.operation.map(|uuid| uuid.to_string())),
    );
    document.insert("request_id".into(), json!(event.cause.request_id));
    document.insert("cluster_uuid".into(), json!(event.cluster_uuid.to_string()));
    document.insert("project_id".into(), json!(event.project_id));
    document.insert("cluster".into(), Value::Object(cluster));
    Value::Object(document)
}
