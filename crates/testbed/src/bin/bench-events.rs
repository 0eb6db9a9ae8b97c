//! `bench-events`: holds many event streams on one API process while clusters are created
//! through another, and prints how long each create took to reach every stream.
//!
//! Environment: STREAM_URL and API_URL (`http://host:port`), STREAMS (1000), CREATES (50),
//! PROJECT (p-bench). Used by `scripts/bench-events`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let stream_url = setting("STREAM_URL", "http://127.0.0.1:9511");
    let api_url = setting("API_URL", "http://127.0.0.1:9511");
    let streams: usize = setting("STREAMS", "1000").parse().expect("STREAMS");
    let creates: usize = setting("CREATES", "50").parse().expect("CREATES");
    let project = setting("PROJECT", "p-bench");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let opened = Arc::new(AtomicUsize::new(0));
    let (seen, mut receipts) = mpsc::unbounded_channel::<(String, Instant)>();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..streams {
        let (client, url, project) = (client.clone(), stream_url.clone(), project.clone());
        let (opened, seen, gate) = (opened.clone(), seen.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate");
            let mut response = client
                .get(format!("{url}/v1/events?watch=true"))
                .header("Accept", "text/event-stream")
                .header("X-Project-Id", &project)
                .header("X-User-Id", "u-bench")
                .header("X-Roles", "member,reader")
                .send()
                .await
                .expect("a stream opens");
            assert_eq!(response.status(), 200, "stream refused");
            // The gate only paces the opening: the stream stays.
            drop(permit);
            let mut buffer = String::new();
            let mut counted = false;
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if !counted && buffer.contains(": stream open") {
                    counted = true;
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: "))
                    else {
                        continue;
                    };
                    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    if data["reason"] == "CreateStarted" {
                        if let Some(name) = data["cluster"]["name"].as_str() {
                            let _ = seen.send((name.to_owned(), Instant::now()));
                        }
                    }
                }
            }
        }));
        tokio::task::yield_now().await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened.load(Ordering::SeqCst) < streams {
        assert!(
            Instant::now() < deadline,
            "only {} streams opened",
            opened.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "streams_opened {streams} in {} ms",
        started.elapsed().as_millis()
    );
    println!("ready");
    // Give the caller a moment to read the process's memory with every stream open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::new();
    let mut missing = 0usize;
    let run = std::process::id();
    for index in 0..creates {
        let name = format!("bench-{run}-{index}");
        let sent = Instant::now();
        let reply = client
            .post(format!("{api_url}/v1/clusters"))
            .header("Content-Type", "application/json")
            .header("OpenStack-API-Version", "container-infra latest")
            .header("X-Project-Id", &project)
            .header("X-User-Id", "u-bench")
            .header("X-Roles", "member,reader")
            .body(format!(
                r#"{{"cluster_template_id": "bench", "name": "{name}", "labels": {{"test_step_ms": "1"}}}}"#
            ))
            .send()
            .await
            .expect("the create is sent");
        assert_eq!(reply.status(), 202, "{:?}", reply.text().await);
        let mut arrivals: Vec<Instant> = Vec::new();
        let wait_until = Instant::now() + Duration::from_secs(10);
        let mut count = 0;
        while count < streams {
            let left = wait_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, receipts.recv()).await {
                Ok(Some((seen_name, at))) if seen_name == name => {
                    arrivals.push(at);
                    count += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        missing += streams - count;
        latencies.extend(
            arrivals
                .iter()
                .map(|at| at.duration_since(sent).as_secs_f64() * 1000.0),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    println!(
        "create_to_stream_ms samples {} missing {} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        latencies.len(),
        missing,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    for task in tasks {
        task.abort();
    }
}
