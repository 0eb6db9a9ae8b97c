//! Cluster events: recorded with the changes they describe, listed, paginated, isolated per
//! project, readable after a deletion, and streamed live (resumable, across API processes).

use std::time::{Duration, Instant};

use magnum_domain::cluster::HealthStatus;
use magnum_test_support::{engine_tests, Engine};
use serde_json::{json, Value};

use crate::support::{Caller, TestApp, ALICE, BOB};

fn reasons(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("an events list")
        .iter()
        .map(|event| event["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// `needles` appear in `haystack` in this order (others may come between).
fn in_order(haystack: &[String], needles: &[&str]) -> bool {
    let mut rest = haystack.iter();
    needles
        .iter()
        .all(|needle| rest.any(|reason| reason == needle))
}

async fn events_of(app: &TestApp, uuid: &str, caller: Caller) -> Value {
    let reply = app
        .get(&format!("/v1/clusters/{uuid}/events"), caller)
        .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.raw));
    reply.body
}

engine_tests!(a_clusters_life_is_told_in_events_that_outlive_it);
async fn a_clusters_life_is_told_in_events_that_outlive_it(engine: Engine) {
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let created = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": "c1", "node_count": 2})),
        )
        .await;
    assert_eq!(created.status, 202);
    let request_id = created.header("x-openstack-request-id").unwrap().to_owned();
    let uuid = created.body["uuid"].as_str().unwrap().to_owned();
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;

    let events = events_of(&app, &uuid, ALICE).await;
    let told = reasons(&events);
    assert!(
        in_order(
            &told,
            &[
                "CreateStarted",
                "NodeStarted",
                "NodeStarted",
                "NodeStarted",
                "CreateCompleted"
            ]
        ),
        "{engine:?}: {told:?}"
    );
    let first = &events["events"][0];
    assert_eq!(first["type"], "Normal");
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["cluster"]["status"], "CREATE_IN_PROGRESS");
    assert_eq!(first["cluster_uuid"], uuid.as_str());
    let operation = first["operation_uuid"]
        .as_str()
        .expect("the create's operation");
    let node_started = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["reason"] == "NodeStarted")
        .unwrap();
    // A driver's step carries the operation that made it, and what it concerns.
    assert_eq!(node_started["operation_uuid"], operation);
    assert!(node_started["nodegroup"].is_string() && node_started["node"].is_string());
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "CreateCompleted");
    assert_eq!(last["cluster"]["status"], "CREATE_COMPLETE");
    assert_eq!(last["cluster"]["node_count"], 2);
    let sequences: Vec<i64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]));

    // Scaling, health and deletion tell their part.
    let scaled = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{uuid}"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 3}])),
        )
        .await;
    assert_eq!(
        scaled.status,
        202,
        "{}",
        String::from_utf8_lossy(&scaled.raw)
    );
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let reason = json!({"api": "ok", "node-1.Ready": "False"});
    driver.report_health(
        uuid.parse().unwrap(),
        HealthStatus::Unhealthy,
        reason.as_object().unwrap().clone(),
    );
    app.wait_for_cluster(&uuid, ALICE, 5, |reply| {
        reply.body["health_status"] == "UNHEALTHY"
    })
    .await;
    let told = reasons(&events_of(&app, &uuid, ALICE).await);
    assert!(
        in_order(
            &told,
            &[
                "CreateCompleted",
                "ScaledOut",
                "UpdateStarted",
                "NodeStarted",
                "UpdateCompleted",
                "HealthChanged"
            ]
        ),
        "{engine:?}: {told:?}"
    );
    let health = events_of(&app, &uuid, ALICE).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["reason"] == "HealthChanged")
        .unwrap()
        .clone();
    assert_eq!(health["type"], "Warning");
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("node-1.Ready: False"),
        "{health}"
    );

    // Another project sees nothing of it, by name, by uuid or in its own project's events.
    let foreign = app.get(&format!("/v1/clusters/{uuid}/events"), BOB).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(
        foreign.detail(),
        format!("Cluster {uuid} could not be found.")
    );
    assert_eq!(app.get("/v1/clusters/c1/events", BOB).await.status, 404);
    let bobs = app.get("/v1/events", BOB).await;
    assert_eq!(bobs.status, 200);
    assert_eq!(bobs.body["events"], json!([]));
    let alices = app.get("/v1/events", ALICE).await;
    assert!(
        alices.body["events"].as_array().unwrap().len() >= told.len(),
        "{}",
        alices.body
    );

    // Pages follow each other without overlap, and the reverse order is the reverse.
    let all = events_of(&app, &uuid, ALICE).await["events"].clone();
    let mut paged = Vec::new();
    let mut next = Some(format!("/v1/clusters/{uuid}/events?limit=2"));
    while let Some(path) = next.take() {
        let page = app.get(&path, ALICE).await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.raw));
        paged.extend(page.body["events"].as_array().unwrap().iter().cloned());
        next = page.body["next"]
            .as_str()
            .map(|link| link.trim_start_matches(&app.base_url).to_owned());
        assert!(paged.len() <= all.as_array().unwrap().len() + 2);
    }
    assert_eq!(Value::Array(paged), all);
    let reversed = app
        .get(&format!("/v1/clusters/{uuid}/events?sort_dir=desc"), ALICE)
        .await;
    let mut expected = all.as_array().unwrap().clone();
    expected.reverse();
    assert_eq!(reversed.body["events"], Value::Array(expected));

    // Bad arguments are refused in Magnum's envelope, nothing stored changes.
    for (query, status, detail) in [
        ("limit=0", 400, "Limit must be positive"),
        ("watch=maybe", 400, ""),
        (
            "sort_dir=up",
            400,
            "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'",
        ),
        ("color=red", 400, ""),
        (
            "marker=8d3c6a9e-0000-4000-8000-000000000000",
            404,
            "The event 8d3c6a9e-0000-4000-8000-000000000000 could not be found.",
        ),
    ] {
        let reply = app
            .get(&format!("/v1/clusters/{uuid}/events?{query}"), ALICE)
            .await;
        assert_eq!(
            reply.status,
            status,
            "{query}: {}",
            String::from_utf8_lossy(&reply.raw)
        );
        assert!(reply.body["errors"][0]["detail"].is_string(), "{query}");
        if !detail.is_empty() {
            assert_eq!(reply.detail(), detail, "{query}");
        }
    }
    let posted = app
        .post(&format!("/v1/clusters/{uuid}/events"), ALICE, json!({}))
        .await;
    assert_eq!(posted.status, 405);
    assert_eq!(events_of(&app, &uuid, ALICE).await["events"], all);

    // Deleted: still readable by uuid, ending with the deletion; not by name.
    let deleted = app.delete(&format!("/v1/clusters/{uuid}"), ALICE).await;
    assert_eq!(deleted.status, 204);
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    let after = events_of(&app, &uuid, ALICE).await;
    let told = reasons(&after);
    assert!(
        in_order(&told, &["HealthChanged", "DeleteStarted", "Deleted"]),
        "{engine:?}: {told:?}"
    );
    assert_eq!(told.last().map(String::as_str), Some("Deleted"));
    assert_eq!(
        after["events"].as_array().unwrap().last().unwrap()["cluster"]["status"],
        "DELETE_COMPLETE"
    );
    assert_eq!(app.get("/v1/clusters/c1/events", ALICE).await.status, 404);
    assert_eq!(
        app.get(&format!("/v1/clusters/{uuid}/events"), BOB)
            .await
            .status,
        404
    );
    app.stop().await;
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) id: Option<i64>,
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// A stream being read: frames are parsed as their bytes arrive.
pub(crate) struct Stream {
    response: reqwest::Response,
    buffer: String,
}

/// A request for an event stream, as `caller`.
fn stream_request(base_url: &str, path: &str, caller: Caller) -> reqwest::RequestBuilder {
    crate::support::test_client()
        .get(format!("{base_url}{path}"))
        .header("Accept", "text/event-stream")
        .header("X-Project-Id", caller.project_id)
        .header("X-User-Id", caller.user_id)
        .header("X-Roles", caller.roles)
}

impl Stream {
    /// A stream some other request opened.
    pub(crate) fn from_response(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    pub(crate) async fn open(
        base_url: &str,
        path: &str,
        caller: Caller,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut request = stream_request(base_url, path, caller);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` when `timeout` passes or the stream ends.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: "message".to_owned(),
                    data: Value::Null,
                };
                let mut is_event = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        frame.id = id.parse().ok();
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame.event = event.to_owned();
                        is_event = true;
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        frame.data = serde_json::from_str(data).expect("JSON data");
                        is_event = true;
                    }
                }
                if is_event {
                    return Some(frame);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next cluster events until `done` holds for one of them.
    pub(crate) async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Frame) -> bool,
    ) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            let Some(frame) = self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            else {
                break;
            };
            let finished = done(&frame);
            frames.push(frame);
            if finished {
                return frames;
            }
        }
        panic!("the stream did not deliver what was waited for; got {frames:?}");
    }
}

engine_tests!(a_stream_follows_another_api_process_and_resumes_without_loss);
async fn a_stream_follows_another_api_process_and_resumes_without_loss(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    let (peer, peer_app) = app.start_peer_api().await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    // Bob's stream on the peer must see none of Alice's events.
    let mut bobs = Stream::open(&peer_app.base_url, "/v1/events?watch=true", BOB, None).await;
    let mut alices = Stream::open(&peer_app.base_url, "/v1/events?watch=true", ALICE, None).await;

    // Created through the first process, seen on the peer's stream.
    let started = Instant::now();
    let created = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": "s1", "node_count": 1, "labels": {"test_step_ms": "50"}})),
        )
        .await;
    assert_eq!(created.status, 202);
    let uuid = created.body["uuid"].as_str().unwrap().to_owned();
    let first = alices
        .until(Duration::from_secs(10), |frame| {
            frame.event == "cluster_event"
        })
        .await
        .remove(0);
    let seen_after = started.elapsed();
    assert_eq!(first.data["reason"], "CreateStarted");
    assert_eq!(first.data["cluster_uuid"], uuid.as_str());
    assert_eq!(first.id, first.data["sequence"].as_i64());
    assert!(
        seen_after < Duration::from_secs(5),
        "the peer's stream showed the create after {seen_after:?}"
    );

    // Read up to the first node, then the client goes away in the middle of the create.
    let mut received = vec![first];
    received.extend(
        alices
            .until(Duration::from_secs(10), |frame| {
                frame.data["reason"] == "NodeStarted"
            })
            .await,
    );
    drop(alices);
    let last_id = received.last().unwrap().id.unwrap();
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let scaled = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{uuid}"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 2}])),
        )
        .await;
    assert_eq!(scaled.status, 202);
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;

    // Reconnected where it left off: exactly what it missed, then live again.
    let mut resumed = Stream::open(
        &peer_app.base_url,
        "/v1/events?watch=true",
        ALICE,
        Some(last_id),
    )
    .await;
    received.extend(
        resumed
            .until(Duration::from_secs(10), |frame| {
                frame.data["reason"] == "UpdateCompleted"
            })
            .await,
    );
    let listed = app
        .get(&format!("/v1/clusters/{uuid}/events"), ALICE)
        .await
        .body;
    let listed_ids: Vec<i64> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["sequence"].as_i64().unwrap())
        .collect();
    let streamed_ids: Vec<i64> = received.iter().map(|frame| frame.id.unwrap()).collect();
    assert_eq!(streamed_ids, listed_ids, "{engine:?}");

    // A cluster's own stream ends after its deletion, with a reason.
    let mut own = Stream::open(
        &peer_app.base_url,
        &format!("/v1/clusters/{uuid}/events?watch=true"),
        ALICE,
        None,
    )
    .await;
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    let tail = own
        .until(Duration::from_secs(20), |frame| frame.event == "end")
        .await
        .into_iter()
        .map(|frame| (frame.event, frame.data))
        .collect::<Vec<_>>();
    let (_, end) = tail.last().unwrap();
    assert_eq!(end["reason"], "cluster_deleted");
    assert!(
        tail.iter()
            .any(|(kind, data)| kind == "cluster_event" && data["reason"] == "Deleted"),
        "{tail:?}"
    );
    assert!(
        own.next(Duration::from_secs(2)).await.is_none(),
        "the stream is closed"
    );

    // Bob saw nothing of it.
    assert!(bobs.next(Duration::from_millis(300)).await.is_none());

    // Refusals: a foreign cluster, a bad resume point.
    let foreign = stream_request(
        &peer_app.base_url,
        &format!("/v1/clusters/{uuid}/events?watch=true"),
        BOB,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(foreign.status(), 404);
    let bad_resume = app
        .send(
            "GET",
            "/v1/events?watch=true",
            Some(ALICE),
            &[
                ("Accept", "text/event-stream"),
                ("Last-Event-ID", "yesterday"),
            ],
            None,
        )
        .await;
    assert_eq!(bad_resume.status, 400);
    assert_eq!(
        bad_resume.detail(),
        "Last-Event-ID must be the id of an event this stream sent."
    );
    // A stopping server ends its streams at once, saying so, with where to resume.
    let mut last = Stream::open(&peer_app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let stopping = tokio::spawn(peer.stop());
    let ended = last
        .until(Duration::from_secs(10), |frame| frame.event == "end")
        .await;
    let end = ended.last().unwrap();
    assert_eq!(end.data["reason"], "server_stopping");
    assert_eq!(end.id, end.data["last_event_id"].as_i64());
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the peer stops without waiting out its grace")
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn streams_are_bounded_per_project() {
    let engine = magnum_test_support::engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.events.max_streams_per_project = 2;
        config.events.keepalive = 1;
    })
    .await;
    let _one = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let _two = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let third = app
        .send(
            "GET",
            "/v1/events?watch=true",
            Some(ALICE),
            &[("Accept", "text/event-stream")],
            None,
        )
        .await;
    assert_eq!(third.status, 503);
    assert!(
        third.detail().contains("holds 2 event streams"),
        "{}",
        third.detail()
    );
    // Another project is not held up by Alice's.
    let _bobs = Stream::open(&app.base_url, "/v1/events?watch=true", BOB, None).await;
    // A stream given back frees its place.
    drop(_one);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let retry = stream_request(&app.base_url, "/v1/events?watch=true", ALICE)
            .send()
            .await
            .unwrap();
        if retry.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// Creates a cluster of template `t` as Alice; returns its uuid.
async fn create_cluster(app: &TestApp, name: &str, labels: Value) -> String {
    let created = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": name, "node_count": 1, "labels": labels})),
        )
        .await;
    assert_eq!(
        created.status,
        202,
        "{}",
        String::from_utf8_lossy(&created.raw)
    );
    created.body["uuid"].as_str().unwrap().to_owned()
}

/// Every event the listing at `path` shows (as Alice), oldest first, page after page.
async fn listed(app: &TestApp, path: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut next = Some(format!("{path}?limit=1000"));
    while let Some(path) = next.take() {
        let page = app.get(&path, ALICE).await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.raw));
        events.extend(page.body["events"].as_array().unwrap().iter().cloned());
        next = page.body["next"]
            .as_str()
            .map(|link| link.trim_start_matches(&app.base_url).to_owned());
    }
    events
}

fn sequences(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["sequence"].as_i64().unwrap())
        .collect()
}

/// The ids of the `cluster_event` frames among `frames`.
fn streamed_ids(frames: &[Frame]) -> Vec<i64> {
    frames
        .iter()
        .filter(|frame| frame.event == "cluster_event")
        .map(|frame| frame.id.expect("a cluster event has an id"))
        .collect()
}

/// The test's own connection to the service's database, to write and prune events as the
/// conductor does.
async fn store_of(app: &TestApp) -> magnum_store::Store {
    magnum_store::Store::connect(&app.database_url, 2)
        .await
        .expect("the database opens")
}

/// `count` driver steps of about 1 KB each, appended to the cluster in changes of 100 (the
/// most one change tells), as a chatty driver would; returns how long the writes took.
async fn append_steps(store: &magnum_store::Store, cluster: &str, count: usize) -> Duration {
    use magnum_domain::event::{Cause, ClusterEvent};
    let cluster = cluster.parse().unwrap();
    let padding = "x".repeat(900);
    let started = Instant::now();
    for first in (0..count).step_by(100) {
        let events: Vec<ClusterEvent> = (first..count.min(first + 100))
            .map(|index| ClusterEvent::normal("NodeStarted", format!("step {index} {padding}")))
            .collect();
        store
            .append_events(cluster, &events, &Cause::none())
            .await
            .expect("the events are written");
    }
    started.elapsed()
}

engine_tests!(a_deleted_clusters_stream_ends_at_once);
async fn a_deleted_clusters_stream_ends_at_once(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, "d1", json!({})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    let events = listed(&app, &format!("/v1/clusters/{uuid}/events")).await;
    let deleted = events.last().unwrap();
    assert_eq!(deleted["reason"], "Deleted", "{engine:?}");
    let deleted_id = deleted["sequence"].as_i64().unwrap();
    let before_deleted = events[events.len() - 2]["sequence"].as_i64().unwrap();
    let path = format!("/v1/clusters/{uuid}/events?watch=true");

    // Opened after the deletion (allowed while its events are kept), and resumed at or after
    // its `Deleted`: the stream ends at once instead of waiting out events.max_stream_duration.
    for resume in [None, Some(deleted_id)] {
        let mut stream = Stream::open(&app.base_url, &path, ALICE, resume).await;
        let frames = stream
            .until(Duration::from_secs(10), |frame| frame.event == "end")
            .await;
        assert_eq!(frames.len(), 1, "{engine:?} {resume:?}: {frames:?}");
        let end = &frames[0];
        assert_eq!(
            end.data["reason"], "cluster_deleted",
            "{engine:?} {resume:?}"
        );
        assert_eq!(end.id, end.data["last_event_id"].as_i64());
        // Where to resume: after the deletion, so that nothing is sent again.
        let end_id = end.id.unwrap();
        match resume {
            Some(resumed) => assert_eq!(end_id, resumed),
            None => assert!(end_id >= deleted_id, "{end_id} < {deleted_id}"),
        }
        assert!(
            stream.next(Duration::from_secs(5)).await.is_none(),
            "{engine:?} {resume:?}: the stream is closed"
        );
    }
    // Resumed before it: the `Deleted`, then the end.
    let mut stream = Stream::open(&app.base_url, &path, ALICE, Some(before_deleted)).await;
    let frames = stream
        .until(Duration::from_secs(10), |frame| frame.event == "end")
        .await;
    assert_eq!(streamed_ids(&frames), vec![deleted_id], "{engine:?}");
    let end = frames.last().unwrap();
    assert_eq!(end.data["reason"], "cluster_deleted");
    assert_eq!(end.id, Some(deleted_id));
    app.stop().await;
}

/// Frames a stream's connection can hold while its client does not read are far fewer than
/// this: socket buffers (a few MB on loopback while the reader does not read: the kernel
/// grows a receive buffer only as it is read), hyper's buffers, and the stream's 64 queued
/// frames. With the broadcast's 4,096 events (`BROADCAST_CAPACITY` in
/// crates/api/src/events.rs) on top, 16,000 events of about 1.5 KB (24 MB) written while the
/// client does not read make its stream lag: what it gets after that comes from the
/// `Lagged` catch-up, read from the table (the server logs it at debug level).
const LAGGING_EVENTS: usize = 16_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lags_catches_up_and_never_holds_writers() {
    let engine = magnum_test_support::engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        // The stream is left unread while the events are written: the write-stall bound
        // (api.header_timeout) must not close it meanwhile; and every event is kept, so
        // that the listing has all the stream should send.
        config.api.header_timeout = 600;
        config.events.max_per_cluster = 100_000;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, "lag", json!({})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let events_path = format!("/v1/clusters/{uuid}/events");
    let before = sequences(&listed(&app, &events_path).await);
    let resume_from = *before.last().unwrap();
    let mut stream = Stream::open(
        &app.base_url,
        &format!("{events_path}?watch=true"),
        ALICE,
        Some(resume_from),
    )
    .await;

    // Written while the stream is not read at all: the writers never wait for it. The bound
    // is generous (a loaded 2-core machine writes these in seconds); the point is that the
    // writes end at all.
    let store = store_of(&app).await;
    let writing = tokio::time::timeout(
        Duration::from_secs(120),
        append_steps(&store, &uuid, LAGGING_EVENTS),
    )
    .await
    .expect("the writes never wait for an unread stream");
    assert!(
        writing < Duration::from_secs(60),
        "{LAGGING_EVENTS} events took {writing:?} to write"
    );

    // Read now: every event once, in the table's order, none missing.
    let last_step = format!("step {} ", LAGGING_EVENTS - 1);
    let frames = stream
        .until(Duration::from_secs(180), |frame| {
            frame.data["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(&last_step))
        })
        .await;
    let expected: Vec<i64> = sequences(&listed(&app, &events_path).await)
        .into_iter()
        .filter(|sequence| *sequence > resume_from)
        .collect();
    assert_eq!(expected.len(), LAGGING_EVENTS);
    let streamed = streamed_ids(&frames);
    assert_eq!(streamed.len(), expected.len(), "no loss, no duplicate");
    assert_eq!(streamed, expected);
    assert!(
        frames.iter().all(|frame| frame.event == "cluster_event"),
        "nothing was pruned, so no gap is told"
    );
    // The stream did fall behind: what it sent after that came from the table.
    let exposition = app.get("/metrics", ALICE).await;
    let text = String::from_utf8_lossy(&exposition.raw);
    let lags: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("magnum_event_stream_lags_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lag counter in\n{text}"));
    assert!(lags >= 1, "the stream never lagged: {text}");
    store.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_its_stream() {
    let engine = magnum_test_support::engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.events.max_streams_per_project = 1;
        // The write-stall bound: an answer left unread this long closes its connection.
        config.api.header_timeout = 3;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, "stall", json!({})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    // Never read: the response is held, not one byte of its body taken.
    let stalled = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let refused = stream_request(&app.base_url, "/v1/events?watch=true", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503, "the project's one stream is held");
    // More than its connection can buffer (however large the host lets socket buffers
    // grow: events are written until it is): the server's writes stall, which closes the
    // connection and gives the slot back, so a new stream is accepted.
    let store = store_of(&app).await;
    let stalled_at = Instant::now();
    let deadline = stalled_at + Duration::from_secs(120);
    let mut written = 0;
    loop {
        if written < 60_000 {
            append_steps(&store, &uuid, 2_000).await;
            written += 2_000;
        }
        let retry = stream_request(&app.base_url, "/v1/events?watch=true", ALICE)
            .send()
            .await
            .unwrap();
        if retry.status() == 200 {
            break;
        }
        assert_eq!(retry.status(), 503);
        assert!(
            Instant::now() < deadline,
            "the unread stream still holds its slot after {:?} and {written} events",
            stalled_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stalled);
    store.close().await;
    app.stop().await;
}

engine_tests!(a_stream_is_told_of_events_pruned_before_it_could_send_them);
async fn a_stream_is_told_of_events_pruned_before_it_could_send_them(engine: Engine) {
    use magnum_domain::time::Timestamp;
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, "p1", json!({})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let events_path = format!("/v1/clusters/{uuid}/events");
    // A client saw the cluster's first event, then went away.
    let seen = sequences(&listed(&app, &events_path).await)[0];
    let store = store_of(&app).await;
    append_steps(&store, &uuid, 30).await;
    let before = sequences(&listed(&app, &events_path).await);
    // Retention keeps the newest ten of the cluster.
    let retention = magnum_store::EventRetention {
        max_per_cluster: 10,
        max_age: 30 * 86_400,
        keep_after_delete: 86_400,
    };
    let removed = store
        .prune_events(retention, 0, Timestamp::now())
        .await
        .unwrap();
    let kept = sequences(&listed(&app, &events_path).await);
    assert_eq!(kept.len(), 10, "{engine:?}");
    assert_eq!(removed as usize, before.len() - 10);
    let last_dropped = before[before.len() - 11];
    assert!(seen < last_dropped);

    // Resumed from before what was dropped, on the cluster's stream and the project's: told
    // first, with how far events are gone (where to resume from: nothing kept is below it),
    // then every event kept.
    for path in [
        format!("{events_path}?watch=true"),
        "/v1/events?watch=true".to_owned(),
    ] {
        let mut stream = Stream::open(&app.base_url, &path, ALICE, Some(seen)).await;
        let frames = stream
            .until(Duration::from_secs(10), |frame| {
                frame.id == kept.last().copied()
            })
            .await;
        let gap = &frames[0];
        assert_eq!(gap.event, "gap", "{engine:?} {path}: {frames:?}");
        assert_eq!(
            gap.id,
            Some(last_dropped),
            "{engine:?} {path}: resumed past the gap"
        );
        assert_eq!(gap.data["reason"], "events_pruned");
        assert_eq!(
            gap.data["last_event_id"], seen,
            "the last id the stream sent"
        );
        assert_eq!(gap.data["pruned_through"], last_dropped);
        assert!(gap.data["message"].as_str().unwrap().contains("retention"));
        assert_eq!(streamed_ids(&frames[1..]), kept, "{engine:?} {path}");
        assert_eq!(frames.len(), kept.len() + 1);
    }

    // Resumed from what was dropped last, or later: nothing was missed, nothing is told.
    let mut stream = Stream::open(
        &app.base_url,
        &format!("{events_path}?watch=true"),
        ALICE,
        Some(last_dropped),
    )
    .await;
    let first = stream.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.event, "cluster_event", "{engine:?}: {first:?}");
    assert_eq!(first.id, Some(kept[0]));
    let mut stream = Stream::open(
        &app.base_url,
        "/v1/events?watch=true",
        ALICE,
        kept.last().copied(),
    )
    .await;
    append_steps(&store, &uuid, 1).await;
    let first = stream.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.event, "cluster_event", "{engine:?}: {first:?}");
    assert!(first.id > kept.last().copied());

    // The project's newest events go with their deleted cluster: a new stream (no
    // Last-Event-ID) missed nothing and is told nothing, and its end resumes past the marks.
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    let resumed_from = *kept.last().unwrap();
    let mark = *sequences(&listed(&app, "/v1/events").await).last().unwrap();
    assert!(resumed_from < mark, "{engine:?}: the deletion told events");
    let everything_deleted = magnum_store::EventRetention {
        keep_after_delete: 0,
        ..retention
    };
    store
        .prune_events(
            everything_deleted,
            0,
            Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 1),
        )
        .await
        .unwrap();
    assert!(listed(&app, "/v1/events").await.is_empty(), "{engine:?}");
    let mut fresh = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    // The project's stream resumed from below the deleted cluster's mark, no event kept above
    // it: told once, with the mark as its id. Resumed from that id, it is not told again.
    let mut resumed = Stream::open(
        &app.base_url,
        "/v1/events?watch=true",
        ALICE,
        Some(resumed_from),
    )
    .await;
    let gap = resumed.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(gap.event, "gap", "{engine:?}: {gap:?}");
    assert_eq!(gap.id, Some(mark), "{engine:?}: {gap:?}");
    assert_eq!(gap.data["last_event_id"], resumed_from);
    assert_eq!(gap.data["pruned_through"], mark);
    let mut reconnected = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, gap.id).await;
    let next = create_cluster(&app, "p2", json!({})).await;
    for stream in [&mut fresh, &mut resumed, &mut reconnected] {
        // The next frame of each is the new cluster's first event, no gap before it.
        let first = stream.next(Duration::from_secs(10)).await.unwrap();
        assert_eq!(first.event, "cluster_event", "{engine:?}: {first:?}");
        assert_eq!(first.data["cluster_uuid"], next.as_str());
        assert!(first.id > Some(mark), "{engine:?}: {first:?}");
    }
    store.close().await;
    app.stop().await;
}

engine_tests!(a_stream_ends_after_its_max_duration);
async fn a_stream_ends_after_its_max_duration(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.events.max_stream_duration = 2;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, "m1", json!({"test_step_ms": "200"})).await;
    // From the start of the project's events: the catch-up sends at least the create's first
    // event before the stream's time starts to run.
    let opened = Instant::now();
    let mut stream = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, Some(0)).await;
    let frames = stream
        .until(Duration::from_secs(30), |frame| frame.event == "end")
        .await;
    assert!(opened.elapsed() >= Duration::from_secs(2));
    let end = frames.last().unwrap();
    assert_eq!(end.data["reason"], "max_duration", "{engine:?}: {end:?}");
    let mut received = streamed_ids(&frames);
    assert!(!received.is_empty());
    // Where to resume: the last event sent.
    assert_eq!(end.id, received.last().copied(), "{engine:?}");
    assert_eq!(end.id, end.data["last_event_id"].as_i64());
    assert!(
        stream.next(Duration::from_secs(5)).await.is_none(),
        "the stream is closed"
    );

    // The cluster changes before the client comes back.
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let scaled = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{uuid}"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 2}])),
        )
        .await;
    assert_eq!(scaled.status, 202);
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;

    // Resumed from each end's id (the stream may end again meanwhile) up to the change's end.
    let mut resume = end.id;
    loop {
        let mut stream = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, resume).await;
        let frames = stream
            .until(Duration::from_secs(30), |frame| {
                frame.event == "end" || frame.data["reason"] == "UpdateCompleted"
            })
            .await;
        let ids = streamed_ids(&frames);
        received.extend(&ids);
        let last = frames.last().unwrap();
        if last.event == "cluster_event" {
            break;
        }
        assert_eq!(last.data["reason"], "max_duration");
        assert_eq!(last.id, ids.last().copied().or(resume));
        resume = last.id;
    }
    let listed = sequences(&listed(&app, "/v1/events").await);
    assert_eq!(received, listed, "{engine:?}: nothing lost or sent twice");
    app.stop().await;
}

engine_tests!(a_failed_create_is_told_as_a_warning_with_its_operation);
async fn a_failed_create_is_told_as_a_warning_with_its_operation(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let mut stream = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let uuid = create_cluster(&app, "f1", json!({"test_fail_on": "create"})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_FAILED").await;

    let events = listed(&app, &format!("/v1/clusters/{uuid}/events")).await;
    let started = events
        .iter()
        .find(|event| event["reason"] == "CreateStarted")
        .expect("the create's start");
    let operation = started["operation_uuid"]
        .as_str()
        .expect("the create's operation");
    let failed = events
        .iter()
        .find(|event| event["reason"] == "OperationFailed")
        .unwrap_or_else(|| panic!("{engine:?}: no OperationFailed in {events:?}"));
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["operation_uuid"], operation);
    assert_eq!(failed["cluster"]["status"], "CREATE_FAILED");
    assert_eq!(failed["cluster_uuid"], uuid.as_str());
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("The scripted driver was told to fail on create."),
        "{failed}"
    );
    // The stream sends the same event, as the list shows it.
    let streamed = stream
        .until(Duration::from_secs(10), |frame| {
            frame.data["reason"] == "OperationFailed"
        })
        .await;
    let from_stream = streamed.last().unwrap();
    assert_eq!(from_stream.event, "cluster_event");
    assert_eq!(from_stream.id, failed["sequence"].as_i64());
    assert_eq!(&from_stream.data, failed, "{engine:?}");
    app.stop().await;
}

engine_tests!(a_stream_resumes_on_a_new_server_after_server_stopping);
async fn a_stream_resumes_on_a_new_server_after_server_stopping(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let (first, first_app) = app.start_peer_api().await;
    let mut stream = Stream::open(&first_app.base_url, "/v1/events?watch=true", ALICE, None).await;
    let uuid = create_cluster(&app, "r1", json!({"test_step_ms": "50"})).await;
    let mut received = streamed_ids(
        &stream
            .until(Duration::from_secs(10), |frame| {
                frame.data["reason"] == "CreateStarted"
            })
            .await,
    );

    // The server that holds the stream stops while the create goes on.
    let stopping = tokio::spawn(first.stop());
    let tail = stream
        .until(Duration::from_secs(10), |frame| frame.event == "end")
        .await;
    let end = tail.last().unwrap();
    assert_eq!(end.data["reason"], "server_stopping", "{engine:?}");
    received.extend(streamed_ids(&tail));
    assert_eq!(end.id, received.last().copied());
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops")
        .unwrap();

    // Changes while no server holds the client's stream.
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let scaled = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{uuid}"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 2}])),
        )
        .await;
    assert_eq!(scaled.status, 202);
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;

    // A new server on the same database, resumed with the end's id.
    let (second, second_app) = app.start_peer_api().await;
    let mut resumed =
        Stream::open(&second_app.base_url, "/v1/events?watch=true", ALICE, end.id).await;
    received.extend(streamed_ids(
        &resumed
            .until(Duration::from_secs(10), |frame| {
                frame.data["reason"] == "UpdateCompleted"
            })
            .await,
    ));
    let listed = sequences(&listed(&app, "/v1/events").await);
    assert_eq!(received, listed, "{engine:?}: nothing lost or sent twice");
    drop(resumed);
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn streams_are_bounded_per_process() {
    let engine = magnum_test_support::engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.events.max_streams = 1;
    })
    .await;
    let _held = Stream::open(&app.base_url, "/v1/events?watch=true", ALICE, None).await;
    // Another project: the process-wide bound, in Magnum's envelope.
    let refused = app
        .send(
            "GET",
            "/v1/events?watch=true",
            Some(BOB),
            &[("Accept", "text/event-stream")],
            None,
        )
        .await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("x-openstack-request-id").is_some());
    assert!(refused
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
    assert_eq!(
        refused.body,
        json!({"errors": [{
            "request_id": "",
            "code": "server",
            "status": 503,
            "title": "This server serves as many event streams as it can",
            "detail": "This server serves as many event streams as it can. Retry later.",
            "links": [],
        }]})
    );
    app.stop().await;
}
