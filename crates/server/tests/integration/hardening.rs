//! Clients that misbehave on purpose: idle or slow connections, too many of them, oversized
//! heads, half-closed sockets, forged proxy headers, and web pages that try to use a noauth
//! magnumd on the visitor's machine (DNS rebinding, cross-origin requests).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{engines, TestApp, ALICE};

fn address(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Everything the server sends until it closes the connection, within `seconds`; `None` if
/// it is still open then.
async fn read_until_closed(stream: &mut TcpStream, seconds: u64) -> Option<String> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(seconds),
        stream.read_to_end(&mut received),
    )
    .await;
    outcome
        .ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

async fn spawn(adjust: impl FnOnce(&mut magnumd::Config)) -> TestApp {
    TestApp::spawn_with(engines()[0], magnumd::Role::All, adjust).await
}

#[tokio::test]
async fn idle_and_slow_clients_are_disconnected() {
    let app = spawn(|config| {
        config.api.header_timeout = 1;
        config.api.body_timeout = 1;
    })
    .await;
    // Connected, silent.
    let mut idle = TcpStream::connect(address(&app)).await.unwrap();
    // Half a request line and headers.
    let mut partial = TcpStream::connect(address(&app)).await.unwrap();
    partial
        .write_all(b"GET /v1/clustertemplates HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_until_closed(&mut idle, 5).await.as_deref(), Some(""));
    assert!(read_until_closed(&mut partial, 5).await.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A body that never arrives: 408 in Magnum's envelope, with a request id.
    let mut slow = TcpStream::connect(address(&app)).await.unwrap();
    slow.write_all(
        b"POST /v1/clustertemplates HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          OpenStack-API-Version: container-infra latest\r\nContent-Length: 100\r\n\r\n{\"name\"",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut slow, 5).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-openstack-request-id"),
        "{answer}"
    );
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn connections_are_capped_and_heads_bounded() {
    let app = spawn(|config| {
        config.api.max_connections = 2;
        config.api.header_timeout = 2;
        config.api.max_header_bytes = 8192;
    })
    .await;
    let _first = TcpStream::connect(address(&app)).await.unwrap();
    let _second = TcpStream::connect(address(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third waits until one of the idle two is let go (header timeout).
    let mut third = TcpStream::connect(address(&app)).await.unwrap();
    let started = Instant::now();
    third
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut third, 10).await.unwrap_or_default();
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(1500),
        "served before a slot was free: {waited:?}"
    );

    // Heads over the bound: 431, not memory.
    let mut large = TcpStream::connect(address(&app)).await.unwrap();
    let header = format!(
        "GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    large.write_all(header.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut large, 10).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_enveloped(&answer, 431, "The request's header fields are too large.");
    app.stop().await;
}

/// An answer hyper makes below the router, in Magnum's envelope with a request id.
fn assert_enveloped(answer: &str, status: u16, detail: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-openstack-request-id: req-"), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    let document: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(document["errors"][0]["status"], status, "{answer}");
    assert_eq!(document["errors"][0]["detail"], detail, "{answer}");
    assert_eq!(
        head.split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|length| length.parse::<usize>().ok()),
        Some(body.len()),
        "{answer}"
    );
}

#[tokio::test]
async fn answers_below_the_router_come_in_magnums_envelope() {
    let app = spawn(|_| {}).await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
        b"GET /v1 HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let answer = read_until_closed(&mut stream, 10).await.unwrap_or_default();
        let shown = String::from_utf8_lossy(garbage);
        assert!(answer.starts_with("HTTP/1.1 4"), "{shown}: {answer}");
        // Whoever answered (hyper below the router, or the router for a path it could
        // read), the answer carries a request id and Magnum's envelope.
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("x-openstack-request-id: req-"),
            "{shown}: {answer}"
        );
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert!(body.contains("\"errors\": [{"), "{shown}: {answer}");
    }
    // The router still answers well-formed requests as before on the same server.
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, 5).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A head hyper cannot parse at all: its 400 in the envelope.
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut stream, 10).await.unwrap_or_default();
    assert_enveloped(&answer, 400, "The request could not be read as HTTP/1.1.");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_half_closes_gets_its_answer() {
    let app = spawn(|_| {}).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_closed(&mut stream, 5).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("OK"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn stopping_waits_for_unfinished_requests_only_the_grace_period() {
    let app = spawn(|config| {
        config.api.header_timeout = 600;
        config.api.body_timeout = 600;
        config.api.shutdown_grace = 1;
    })
    .await;
    // Requests in the middle of their body: a graceful stop waits for them, up to the grace.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream
            .write_all(
                b"POST /v1/clustertemplates HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
            )
            .await
            .unwrap();
        idle.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn proxy_headers_are_ignored_unless_configured() {
    let app = spawn(|_| {}).await;
    let created = app
        .post(
            "/v1/clustertemplates",
            ALICE,
            json!({"coe": "swarm-mode", "image_id": "local-node"}),
        )
        .await;
    let uuid = created.body["uuid"].as_str().unwrap().to_owned();
    let forged = app
        .send(
            "GET",
            &format!("/v1/clustertemplates/{uuid}"),
            Some(ALICE),
            &[
                ("X-Forwarded-Prefix", "/phish"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(
        forged.body["links"][0]["href"],
        format!("{}/v1/clustertemplates/{uuid}", app.base_url)
    );
    app.stop().await;
}

#[tokio::test]
async fn web_pages_cannot_drive_a_noauth_magnumd() {
    let app = spawn(|_| {}).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/clustertemplates", app.base_url);
    let body = r#"{"coe": "swarm-mode", "image_id": "local-node", "name": "csrf"}"#;
    // DNS rebinding: a name the page controls, pointed at 127.0.0.1.
    let rebound = client
        .get(&url)
        .header("Host", "attacker.example:9511")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let detail: serde_json::Value = rebound.json().await.unwrap();
    assert!(
        detail["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("attacker.example"),
        "{detail}"
    );
    // A cross-origin request.
    let cross = client
        .post(&url)
        .header("Origin", "http://attacker.example")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // "Simple" requests a page can send without a preflight: text/plain (refused as upstream
    // does), a form (read as unknown arguments) or no type at all (refused in noauth mode).
    for (content_type, status) in [
        (Some("text/plain"), 415),
        (Some("application/x-www-form-urlencoded"), 400),
        (None, 415),
    ] {
        let mut request = client.post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), status, "{content_type:?}");
    }
    // Nothing was created (as the noauth default identity, whom the requests above used);
    // a same-origin JSON request works.
    let listed = client.get(&url).send().await.unwrap();
    let listed: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(listed["clustertemplates"], json!([]), "{listed}");
    let same = client
        .post(&url)
        .header("Origin", app.base_url.as_str())
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn create_timeouts_are_bounded() {
    let app = spawn(|_| {}).await;
    app.create_template(ALICE, json!({"name": "bounded"})).await;
    for minutes in [json!(10_081), json!(9_223_372_036_854_775_807i64)] {
        let reply = app
            .send_at(
                "latest",
                "POST",
                "/v1/clusters",
                ALICE,
                Some(json!({"cluster_template_id": "bounded", "create_timeout": minutes})),
            )
            .await;
        assert_eq!(reply.status, 400, "{minutes}");
        assert!(
            reply
                .detail()
                .contains("Value should be lower or equal to 10080"),
            "{}",
            reply.detail()
        );
    }
    let listed = app.get("/v1/clusters", ALICE).await;
    assert_eq!(listed.body["clusters"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    let app = spawn(|config| {
        config.api.max_connections = 1;
        config.api.header_timeout = 1;
    })
    .await;
    // A small receive window and a flood of pipelined requests whose answers are never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let greedy = socket
        .connect(address(&app).parse().unwrap())
        .await
        .unwrap();
    let (_reader, mut writer) = greedy.into_split();
    let flood = tokio::spawn(async move {
        let request = b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(1000);
        for _ in 0..500 {
            if writer.write_all(&request).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The only slot is freed once the server gives up writing to it.
    let started = Instant::now();
    let mut other = TcpStream::connect(address(&app)).await.unwrap();
    other
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut other, 20).await.unwrap_or_default();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?} after {:?}",
        started.elapsed()
    );
    flood.abort();
    app.stop().await;
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let app = spawn(|config| {
        config.api.max_connections_per_client = 2;
    })
    .await;
    let first = TcpStream::connect(address(&app)).await.unwrap();
    let _second = TcpStream::connect(address(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(address(&app)).await.unwrap();
    let _ = third
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third, 5).await;
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "the third connection is closed unanswered"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(address(&app)).await.unwrap();
    fourth
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut fourth, 5).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}
