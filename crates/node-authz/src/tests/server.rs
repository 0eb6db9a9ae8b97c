//! `serve` on a real unix socket, spoken to as dockerd's plugin client does.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::protocol::authz_request;
use super::temporary_socket_path;
use crate::{serve, ServeLimits, PLUGIN_CONTENT_TYPE};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A running server on a fresh socket; the socket file is removed on drop (the serving
/// thread stays blocked in accept until the test process ends).
struct TestServer {
    path: PathBuf,
}

impl TestServer {
    fn start(name: &str, limits: ServeLimits) -> Self {
        let path = temporary_socket_path(name);
        let listener = UnixListener::bind(&path).unwrap();
        thread::spawn(move || serve(listener, limits));
        Self { path }
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// A POST as Go's http.Client sends it (Content-Length, keep-alive).
    fn post(&mut self, path: &str, body: &[u8]) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: %2Frun%2Fdocker%2Fplugins%2Fmagnum-authz.sock\r\n\
             User-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
             Accept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n",
            body.len()
        );
        // One write: a server that answers early and closes must not meet a half-sent request.
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.send(&request);
    }

    fn read_response(&mut self) -> Response {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end_matches("\r\n");
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(": ").unwrap();
            headers.push((name.to_owned(), value.to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "Content-Length")
            .map(|(_, value)| value.parse().unwrap())
            .unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Response {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closed the connection (read sees end of stream).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

#[test]
fn speaks_the_plugin_protocol_with_keep_alive() {
    let server = TestServer::start("protocol", ServeLimits::default());
    let mut client = server.connect();

    client.post("/Plugin.Activate", b"");
    let activate = client.read_response();
    assert_eq!(activate.status, 200);
    assert_eq!(activate.header("Content-Type"), Some(PLUGIN_CONTENT_TYPE));
    assert_eq!(activate.json(), json!({"Implements": ["authz"]}));

    // Same connection: an allowed and a refused request.
    client.post(
        "/AuthZPlugin.AuthZReq",
        &authz_request("GET", "/v1.41/info", None),
    );
    assert_eq!(client.read_response().json(), json!({"Allow": true}));

    let privileged = r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#;
    client.post(
        "/AuthZPlugin.AuthZReq",
        &authz_request("POST", "/v1.41/containers/create", Some(privileged)),
    );
    let refused = client.read_response();
    assert_eq!(refused.status, 200);
    assert_eq!(refused.json()["Allow"], json!(false));
    assert!(refused.json()["Msg"]
        .as_str()
        .unwrap()
        .contains("HostConfig.Privileged"));

    client.post(
        "/AuthZPlugin.AuthZRes",
        br#"{"RequestMethod":"GET","RequestUri":"/info"}"#,
    );
    assert_eq!(client.read_response().json(), json!({"Allow": true}));

    client.post("/NetworkDriver.CreateNetwork", b"{}");
    assert_eq!(client.read_response().status, 404);
}

#[test]
fn pipelined_and_chunked_requests_are_answered_in_order() {
    let server = TestServer::start("pipelined", ServeLimits::default());
    let mut client = server.connect();
    let allowed = authz_request("GET", "/v1.41/info", None);
    let refused = authz_request("POST", "/v1.41/services/create", None);
    let mut both = Vec::new();
    for body in [&allowed, &refused] {
        both.extend_from_slice(
            format!(
                "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        both.extend_from_slice(body);
    }
    client.send(&both);
    assert_eq!(client.read_response().json()["Allow"], json!(true));
    assert_eq!(client.read_response().json()["Allow"], json!(false));

    let (first, second) = refused.split_at(10);
    let mut chunked =
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [first, second] {
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    client.send(&chunked);
    let answer = client.read_response().json();
    assert_eq!(answer["Allow"], json!(false));
    assert!(answer["Msg"]
        .as_str()
        .unwrap()
        .contains("could not be inspected"));
}

#[test]
fn malformed_requests_get_400_and_the_connection_is_closed() {
    let server = TestServer::start("malformed", ServeLimits::default());
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /AuthZPlugin.AuthZReq HTTP/2.0\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\n folded: header\r\n\r\n",
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST  /AuthZPlugin.AuthZReq HTTP/1.1\r\n\r\n",
    ] {
        let mut client = server.connect();
        client.send(request);
        let response = client.read_response();
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(response.header("Connection"), Some("close"));
        assert!(client.is_closed(), "{:?}", String::from_utf8_lossy(request));
    }

    let mut client = server.connect();
    client.send(b"GET /Plugin.Activate HTTP/1.1\r\n\r\n");
    assert_eq!(client.read_response().status, 405);
}

#[test]
fn oversized_requests_are_never_allowed() {
    let limits = ServeLimits {
        max_head_bytes: 1024,
        max_body_bytes: 4096,
        ..ServeLimits::default()
    };
    let server = TestServer::start("oversized", limits);

    let huge_body = authz_request("GET", &format!("/v1.41/info?x={}", "a".repeat(8192)), None);
    let mut client = server.connect();
    client.post("/AuthZPlugin.AuthZReq", &huge_body);
    assert_eq!(client.read_response().status, 413);

    let mut client = server.connect();
    let mut chunked =
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"800\r\n");
        chunked.extend_from_slice(&[b' '; 0x800]);
        chunked.extend_from_slice(b"\r\n");
    }
    client.send(&chunked);
    assert_eq!(client.read_response().status, 413);

    let mut client = server.connect();
    client.send(
        format!(
            "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nX-Long: {}\r\n\r\n",
            "a".repeat(2048)
        )
        .as_bytes(),
    );
    assert_eq!(client.read_response().status, 413);
}

#[test]
fn connections_beyond_the_limit_wait_for_a_slot() {
    let limits = ServeLimits {
        max_connections: 1,
        ..ServeLimits::default()
    };
    let server = TestServer::start("slots", limits);
    let activate = b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

    let mut first = server.connect();
    first.send(activate);
    assert_eq!(first.read_response().status, 200);

    let mut second = server.connect();
    second.send(activate);
    second
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waiting = second.reader.read(&mut byte).unwrap_err();
    assert!(
        matches!(waiting.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waiting}"
    );

    drop(first);
    second
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(second.read_response().status, 200);
}
