//! A small HTTP/1.1 server for the plugin's unix socket.
//!
//! dockerd's plugin client (pkg/plugins/client.go) POSTs a JSON document with a
//! Content-Length over a keep-alive connection and reads a JSON answer; any status other than
//! 200 makes the API request fail. Everything here is bounded (connections, head and body
//! sizes, idle time), a malformed request is answered 400 and the connection closed, and no
//! error path can produce an `Allow`.

use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::log_limit::{
    LogDecision, RefusalLogLimiter, REFUSAL_LINES_PER_WINDOW, REFUSAL_LOG_WINDOW,
};
use crate::protocol::{plugin_call, PluginReply, PLUGIN_CONTENT_TYPE};

/// Bounds for [`serve`].
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections served at once; further ones wait in the socket backlog for a free slot.
    pub max_connections: usize,
    /// Request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Request body (Content-Length or chunked), in bytes. dockerd forwards API bodies only
    /// under 1 MiB, base64-encoded inside the AuthZReq document.
    pub max_body_bytes: usize,
    /// How long a read or write may wait before the connection is dropped.
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_head_bytes: 64 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves the plugin protocol on `listener`, one thread per connection, at most
/// `limits.max_connections` at once. Refusals are logged to stderr, one line each, at most 20
/// per 10 s per process (then one line counts those not logged).
///
/// Runs until accepting fails for good (the listener is unusable); transient accept errors
/// (out of file descriptors, aborted connections) are logged and retried.
pub fn serve(listener: UnixListener, limits: ServeLimits) -> io::Result<Infallible> {
    let socket_label: Arc<str> = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(|path| path.display().to_string()))
        .unwrap_or_else(|| "unnamed socket".to_owned())
        .into();
    let limits = Arc::new(limits);
    let slots = ConnectionSlots::new(limits.max_connections.max(1));
    loop {
        // Take a slot before accepting, so excess connections wait in the backlog instead of
        // each getting a thread.
        let slot = slots.acquire();
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if is_fatal_accept_error(&error) => return Err(error),
            Err(error) => {
                log_line(&socket_label, &format!("accept failed, retrying: {error}"));
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let limits = Arc::clone(&limits);
        let label = Arc::clone(&socket_label);
        let spawned = thread::Builder::new()
            .name("authz-connection".to_owned())
            .spawn(move || {
                // Released when the thread ends, by return or by panic.
                let _slot = slot;
                serve_connection(stream, &limits, &label);
            });
        if let Err(error) = spawned {
            // The closure, its stream and its slot were dropped: the connection is closed.
            log_line(
                &socket_label,
                &format!("cannot start a connection thread: {error}"),
            );
        }
    }
}

/// EBADF, EINVAL (not listening), ENOTSOCK, EOPNOTSUPP: retrying cannot help.
fn is_fatal_accept_error(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::InvalidInput
        || matches!(error.raw_os_error(), Some(9 | 22 | 88 | 95))
}

/// Writes one line to stderr. Never panics (eprintln! would on a closed stderr).
pub(crate) fn log_line(socket_label: &str, message: &str) {
    let _ = writeln!(
        io::stderr().lock(),
        "magnum-node-authz: {socket_label}: {message}"
    );
}

/// The refusal lines of the whole process: every socket served shares the bound, since they all
/// write to the same stderr.
static REFUSAL_LOG: Mutex<RefusalLogLimiter> = Mutex::new(RefusalLogLimiter::new(
    REFUSAL_LINES_PER_WINDOW,
    REFUSAL_LOG_WINDOW,
));

/// Logs one refusal line (a request refused, or a plugin call that failed, which dockerd
/// refuses), unless this window's lines are used up. Tenants choose how often this happens.
fn log_refusal_line(socket_label: &str, message: &str) {
    // A poisoned lock only means a thread panicked while holding it; the counts are intact.
    let mut limiter = REFUSAL_LOG.lock().unwrap_or_else(PoisonError::into_inner);
    // Written while holding the lock, so a summary comes before the lines that follow it.
    if let LogDecision::Write { not_logged_before } = limiter.decide(Instant::now()) {
        if not_logged_before > 0 {
            log_line(socket_label, &limiter.not_logged_line(not_logged_before));
        }
        log_line(socket_label, message);
    }
}

/// A counting semaphore for connection threads.
struct ConnectionSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot(Arc<ConnectionSlots>);

impl ConnectionSlots {
    fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(count),
            freed: Condvar::new(),
        })
    }

    fn acquire(self: &Arc<Self>) -> Slot {
        // A poisoned lock only means a thread panicked while holding it; the count is intact.
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(Arc::clone(self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// Why no request could be read.
enum ReadFailure {
    /// The peer closed the connection between requests, or a read timed out or failed.
    Gone,
    /// Not HTTP we accept: answer 400 and close.
    Malformed(&'static str),
    /// Head or body over the limits: answer 413 and close.
    TooLarge(&'static str),
}

struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
    close_after: bool,
}

fn serve_connection(stream: UnixStream, limits: &ServeLimits, socket_label: &str) {
    if stream.set_read_timeout(Some(limits.idle_timeout)).is_err()
        || stream.set_write_timeout(Some(limits.idle_timeout)).is_err()
    {
        return;
    }
    let mut connection = Connection {
        stream,
        buffer: Vec::new(),
        consumed: 0,
    };
    loop {
        let request = match connection.read_request(limits) {
            Ok(request) => request,
            Err(ReadFailure::Gone) => return,
            Err(ReadFailure::Malformed(reason)) => {
                let _ = connection.respond(400, &error_body(reason), true);
                return;
            }
            Err(ReadFailure::TooLarge(reason)) => {
                let _ = connection.respond(413, &error_body(reason), true);
                return;
            }
        };
        let (status, body) = answer(&request, socket_label);
        if connection
            .respond(status, &body, request.close_after)
            .is_err()
            || request.close_after
        {
            return;
        }
    }
}

/// Runs the plugin call, isolated from panics: a bug answers 500 (dockerd then fails the API
/// request) rather than taking anything else down.
fn answer(request: &Request, socket_label: &str) -> (u16, Vec<u8>) {
    if request.method != "POST" {
        return (405, error_body("plugin calls are POST requests"));
    }
    match catch_unwind(AssertUnwindSafe(|| {
        plugin_call(&request.target, &request.body)
    })) {
        Ok(PluginReply {
            status,
            body,
            refusal_log,
        }) => {
            if let Some(line) = refusal_log {
                log_refusal_line(socket_label, &format!("refused {line}"));
            }
            (status, body)
        }
        Err(_) => {
            log_refusal_line(socket_label, "internal error while answering a plugin call");
            (500, error_body("internal error in magnum-node-authz"))
        }
    }
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Err": message })).unwrap_or_default()
}

struct Connection {
    stream: UnixStream,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already taken by earlier parts of the request.
    consumed: usize,
}

impl Connection {
    fn read_request(&mut self, limits: &ServeLimits) -> Result<Request, ReadFailure> {
        // Keep bytes the peer already sent for the next (pipelined) request.
        self.buffer.drain(..self.consumed);
        self.consumed = 0;

        let head = self.read_head(limits.max_head_bytes)?;
        let head = parse_head(&head, limits.max_body_bytes)?;
        let body = match head.body_length {
            BodyLength::None => Vec::new(),
            BodyLength::Exact(length) => self.take(length)?,
            BodyLength::Chunked => self.read_chunked(limits)?,
        };
        Ok(Request {
            method: head.method,
            target: head.target,
            body,
            close_after: head.close_after,
        })
    }

    fn buffered(&self) -> &[u8] {
        &self.buffer[self.consumed..]
    }

    /// Reads more bytes from the peer; `Gone` on end of stream, timeout or error.
    fn fill(&mut self) -> Result<(), ReadFailure> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadFailure::Gone),
                Ok(count) => {
                    self.buffer.extend_from_slice(&chunk[..count]);
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadFailure::Gone),
            }
        }
    }

    fn read_head(&mut self, max_head_bytes: usize) -> Result<Vec<u8>, ReadFailure> {
        loop {
            if let Some(end) = find(self.buffered(), b"\r\n\r\n") {
                if end + 4 > max_head_bytes {
                    return Err(ReadFailure::TooLarge("request head too large"));
                }
                let head = self.buffered()[..end].to_vec();
                self.consumed += end + 4;
                return Ok(head);
            }
            if self.buffered().len() > max_head_bytes {
                return Err(ReadFailure::TooLarge("request head too large"));
            }
            let had_bytes = !self.buffered().is_empty();
            match self.fill() {
                Ok(()) => {}
                Err(ReadFailure::Gone) if had_bytes => {
                    return Err(ReadFailure::Malformed("connection closed inside a request"));
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Takes exactly `length` bytes.
    fn take(&mut self, length: usize) -> Result<Vec<u8>, ReadFailure> {
        while self.buffered().len() < length {
            self.fill()?;
        }
        let bytes = self.buffered()[..length].to_vec();
        self.consumed += length;
        Ok(bytes)
    }

    /// Takes one CRLF-terminated line (without the CRLF) of at most `max` bytes.
    fn take_line(&mut self, max: usize) -> Result<Vec<u8>, ReadFailure> {
        loop {
            if let Some(end) = find(self.buffered(), b"\r\n") {
                if end > max {
                    return Err(ReadFailure::Malformed("chunked encoding line too long"));
                }
                let line = self.buffered()[..end].to_vec();
                self.consumed += end + 2;
                return Ok(line);
            }
            if self.buffered().len() > max {
                return Err(ReadFailure::Malformed("chunked encoding line too long"));
            }
            self.fill()?;
        }
    }

    fn read_chunked(&mut self, limits: &ServeLimits) -> Result<Vec<u8>, ReadFailure> {
        const MAX_CHUNK_LINE: usize = 1024;
        let mut body = Vec::new();
        loop {
            let line = self.take_line(MAX_CHUNK_LINE)?;
            let size = parse_chunk_size(&line).ok_or(ReadFailure::Malformed("bad chunk size"))?;
            if size == 0 {
                break;
            }
            if size > limits.max_body_bytes.saturating_sub(body.len()) {
                return Err(ReadFailure::TooLarge("request body too large"));
            }
            body.extend_from_slice(&self.take(size)?);
            if self.take(2)? != b"\r\n" {
                return Err(ReadFailure::Malformed("chunk not followed by CRLF"));
            }
        }
        // Trailer fields, ignored, up to the empty line; bounded like a head.
        let mut trailer_bytes = 0usize;
        loop {
            let line = self.take_line(limits.max_head_bytes)?;
            if line.is_empty() {
                return Ok(body);
            }
            trailer_bytes += line.len() + 2;
            if trailer_bytes > limits.max_head_bytes {
                return Err(ReadFailure::TooLarge("request trailers too large"));
            }
        }
    }

    fn respond(&mut self, status: u16, body: &[u8], close: bool) -> io::Result<()> {
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            _ => "Internal Server Error",
        };
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {PLUGIN_CONTENT_TYPE}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if close {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.stream.flush()
    }
}

enum BodyLength {
    None,
    Exact(usize),
    Chunked,
}

struct Head {
    method: String,
    target: String,
    body_length: BodyLength,
    close_after: bool,
}

fn parse_head(head: &[u8], max_body_bytes: usize) -> Result<Head, ReadFailure> {
    let malformed = ReadFailure::Malformed;
    let text = std::str::from_utf8(head).map_err(|_| malformed("request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(malformed("bad method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(malformed("bad request target"));
    }
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(malformed("unsupported HTTP version")),
    };

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(malformed("bad header line"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            // Also rejects obsolete line folding (a line starting with whitespace).
            return Err(malformed("bad header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(malformed("bad header value"));
        }
        if name.eq_ignore_ascii_case("Content-Length") {
            if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("bad Content-Length"));
            }
            let length: usize = value.parse().map_err(|_| malformed("bad Content-Length"))?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            if length > max_body_bytes {
                return Err(ReadFailure::TooLarge("request body too large"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            if chunked || !value.eq_ignore_ascii_case("chunked") {
                return Err(malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("Connection") {
            for option in value.split(',').map(str::trim) {
                connection_close |= option.eq_ignore_ascii_case("close");
                connection_keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let body_length = match (content_length, chunked) {
        (Some(_), true) => return Err(malformed("both Content-Length and Transfer-Encoding")),
        (Some(length), false) => BodyLength::Exact(length),
        (None, true) => BodyLength::Chunked,
        (None, false) => BodyLength::None,
    };
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        body_length,
        close_after: connection_close || (http_1_0 && !connection_keep_alive),
    })
}

/// A chunk-size line: hex digits, optionally followed by `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let digits = text.split(';').next()?.trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
}

/// RFC 9110 token characters.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_connection_thread_gives_its_slot_back() {
        let slots = ConnectionSlots::new(1);
        let slot = slots.acquire();
        let outcome = thread::spawn(move || {
            let _slot = slot;
            panic!("a bug while serving one connection");
        })
        .join();
        assert!(outcome.is_err());
        assert_eq!(*slots.free.lock().unwrap(), 1);
    }

    #[test]
    fn chunk_sizes_are_strict_hex() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0;name=value"), Some(0));
        for line in [
            &b""[..],
            b"+1",
            b"-1",
            b"0x10",
            b"g",
            b"1 2",
            b"ffffffffffffffff",
        ] {
            assert_eq!(
                parse_chunk_size(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
