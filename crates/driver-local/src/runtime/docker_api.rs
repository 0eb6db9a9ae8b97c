//! Reads of a node's Docker API over its unix socket, for the monitor's looks at a swarm
//! (nodes, services, tasks) and the wait for a drained node's tasks: JSON answers without a
//! `docker` process per read (a CLI run costs tens of milliseconds of CPU; a look every few
//! seconds per cluster would add up). Only GETs: changes go through the CLI, as before.
//!
//! Bounds: [`READ_TIMEOUT`] per read (connect, send, answer), [`MAX_ANSWER_BYTES`] per
//! answer. HTTP/1.0 without keep-alive: dockerd (Go) answers it unchunked and closes.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The API version every node's dockerd (20.10 and later) speaks.
const API_VERSION: &str = "v1.41";
/// How long one read may take.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a swarm's tasks with their history: about 2 KiB each).
pub(crate) const MAX_ANSWER_BYTES: usize = 16 << 20;

/// `GET /v1.41{path}` on the dockerd listening on `socket`; its JSON answer.
pub(crate) async fn get(socket: &Path, path: &str) -> Result<Value, String> {
    let read = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|error| format!("cannot reach {}: {error}", socket.display()))?;
        let request = format!("GET /{API_VERSION}{path} HTTP/1.0\r\nHost: docker\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("cannot ask {}: {error}", socket.display()))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(u64::try_from(MAX_ANSWER_BYTES).unwrap_or(u64::MAX) + 1)
            .read_to_end(&mut answer)
            .await
            .map_err(|error| format!("cannot read {}'s answer: {error}", socket.display()))?;
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "{path}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        parse_answer(path, &answer)
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{path}: no answer within {} s",
                READ_TIMEOUT.as_secs()
            ))
        })
}

/// The JSON body of a 200 answer (a chunked one is put together first).
fn parse_answer(path: &str, answer: &[u8]) -> Result<Value, String> {
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("{path}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let body = &answer[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_default();
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| format!("{path}: a broken chunked answer"))?
    } else {
        body.to_vec()
    };
    if status != "200" {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("{path}: {status} {}", text.trim()));
    }
    serde_json::from_slice(&body).map_err(|error| format!("{path}: not JSON: {error}"))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut joined = Vec::new();
    loop {
        let end = body.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(joined);
        }
        joined.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_plain_or_chunked_and_failures_say_why() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"ID\":\"a\"}]";
        assert_eq!(
            parse_answer("/nodes", plain).unwrap(),
            serde_json::json!([{"ID": "a"}])
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"ID\r\n6\r\n\":\"a\"}\r\n1\r\n]\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer("/nodes", chunked).unwrap(),
            serde_json::json!([{"ID": "a"}])
        );
        let refused = b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"message\":\"This node is not a swarm manager.\"}";
        assert_eq!(
            parse_answer("/nodes", refused).unwrap_err(),
            "/nodes: 503 {\"message\":\"This node is not a swarm manager.\"}"
        );
        assert!(parse_answer("/nodes", b"garbage").is_err());
        assert!(parse_answer(
            "/nodes",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort"
        )
        .is_err());
    }

    /// A real unix socket serving a canned answer: the request is what dockerd expects.
    #[tokio::test]
    async fn a_read_asks_the_versioned_path_and_gets_the_json() {
        let scratch = tempfile::tempdir().unwrap();
        let socket = scratch.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let served = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let read = connection.read(&mut request).await.unwrap();
            connection
                .write_all(b"HTTP/1.0 200 OK\r\n\r\n{\"Swarm\":{}}")
                .await
                .unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        let answer = get(&socket, "/info").await.unwrap();
        assert_eq!(answer, serde_json::json!({"Swarm": {}}));
        let request = served.await.unwrap();
        assert!(
            request.starts_with("GET /v1.41/info HTTP/1.0\r\n"),
            "{request}"
        );
        let missing = get(&scratch.path().join("none.sock"), "/info").await;
        assert!(missing.unwrap_err().starts_with("cannot reach"));
    }
}
