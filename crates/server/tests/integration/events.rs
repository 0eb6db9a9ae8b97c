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
