//! Just enough AMQP 0-9-1 to publish notifications the way oslo.messaging does (a topic
//! exchange, a queue per topic bound to it, one message per event) and to read them back:
//! PLAIN login, one channel, no confirms. A full client library would be most of the
//! dependency tree of this service.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const CHANNEL: u16 = 1;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("invalid AMQP URL {0:?}: expected amqp://USER:PASSWORD@HOST:PORT/VHOST")]
    Url(String),
    #[error("AMQP connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the AMQP broker closed the {scope}: {code} {text}")]
    Closed {
        scope: &'static str,
        code: u16,
        text: String,
    },
    #[error("unexpected AMQP frame: {0}")]
    Protocol(String),
    #[error("the AMQP broker did not answer in time")]
    Timeout,
}

/// Where to connect, from `amqp://user:password@host:port/vhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpAddress {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl AmqpAddress {
    pub fn parse(url: &str) -> Result<Self, AmqpError> {
        let bad = || AmqpError::Url(redacted(url));
        let parsed = url::Url::parse(url).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "amqp" | "rabbit") {
            return Err(bad());
        }
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(bad)?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| bad())
        };
        let (user, password) = if parsed.username().is_empty() && parsed.password().is_none() {
            ("guest".to_owned(), "guest".to_owned())
        } else {
            (
                decode(parsed.username())?,
                decode(parsed.password().unwrap_or_default())?,
            )
        };
        let vhost = match parsed.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            other => decode(other)?,
        };
        Ok(Self {
            host: host.to_owned(),
            port: parsed.port().unwrap_or(5672),
            user,
            password,
            vhost,
        })
    }
}

/// `url` with its password replaced, fit for messages and logs.
pub fn redacted(url: &str) -> String {
    magnum_store::redact_url(url)
}

fn short_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let length = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(length);
    out.extend_from_slice(&bytes[..usize::from(length)]);
}

fn long_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn empty_table(out: &mut Vec<u8>) {
    out.extend_from_slice(&0u32.to_be_bytes());
}

fn method(class: u16, id: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + arguments.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(arguments);
    payload
}

struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn method_ids(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }
}

/// One connection with one open channel.
pub struct AmqpConnection {
    stream: TcpStream,
    frame_max: u32,
}

impl AmqpConnection {
    pub async fn connect(address: &AmqpAddress) -> Result<Self, AmqpError> {
        let stream = tokio::time::timeout(
            TIMEOUT,
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| AmqpError::Timeout)??;
        let mut connection = Self {
            stream,
            frame_max: 131_072,
        };
        connection.stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        connection.expect(10, 10).await?;
        let mut start_ok = Vec::new();
        empty_table(&mut start_ok);
        short_string(&mut start_ok, "PLAIN");
        let response = format!("\0{}\0{}", address.user, address.password);
        long_string(&mut start_ok, response.as_bytes());
        short_string(&mut start_ok, "en_US");
        connection.send_method(0, 10, 11, &start_ok).await?;
        let tune = connection.expect(10, 30).await?;
        if tune.payload.len() >= 10 {
            let frame_max = u32::from_be_bytes([
                tune.payload[6],
                tune.payload[7],
                tune.payload[8],
                tune.payload[9],
            ]);
            if frame_max > 0 {
                connection.frame_max = frame_max;
            }
        }
        let mut tune_ok = Vec::new();
        tune_ok.extend_from_slice(&1u16.to_be_bytes());
        tune_ok.extend_from_slice(&connection.frame_max.to_be_bytes());
        tune_ok.extend_from_slice(&0u16.to_be_bytes());
        connection.send_method(0, 10, 31, &tune_ok).await?;
        let mut open = Vec::new();
        short_string(&mut open, &address.vhost);
        short_string(&mut open, "");
        open.push(0);
        connection.send_method(0, 10, 40, &open).await?;
        connection.expect(10, 41).await?;
        let mut channel_open = Vec::new();
        short_string(&mut channel_open, "");
        connection
            .send_method(CHANNEL, 20, 10, &channel_open)
            .await?;
        connection.expect(20, 11).await?;
        Ok(connection)
    }

    /// A non-durable topic exchange and, for each routing key, a queue of that name bound
    /// to it: what oslo.messaging's notifier declares.
    pub async fn declare_topic(
        &mut self,
        exchange: &str,
        routing_keys: &[&str],
    ) -> Result<(), AmqpError> {
        let mut declare = Vec::new();
        declare.extend_from_slice(&0u16.to_be_bytes());
        short_string(&mut declare, exchange);
        short_string(&mut declare, "topic");
        declare.push(0);
        empty_table(&mut declare);
        self.send_method(CHANNEL, 40, 10, &declare).await?;
        self.expect(40, 11).await?;
        for key in routing_keys {
            let mut queue = Vec::new();
            queue.extend_from_slice(&0u16.to_be_bytes());
            short_string(&mut queue, key);
            queue.push(0);
            empty_table(&mut queue);
            self.send_method(CHANNEL, 50, 10, &queue).await?;
            self.expect(50, 11).await?;
            let mut bind = Vec::new();
            bind.extend_from_slice(&0u16.to_be_bytes());
            short_string(&mut bind, key);
            short_string(&mut bind, exchange);
            short_string(&mut bind, key);
            bind.push(0);
            empty_table(&mut bind);
            self.send_method(CHANNEL, 50, 20, &bind).await?;
            self.expect(50, 21).await?;
        }
        Ok(())
    }

    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), AmqpError> {
        let mut publish = Vec::new();
        publish.extend_from_slice(&0u16.to_be_bytes());
        short_string(&mut publish, exchange);
        short_string(&mut publish, routing_key);
        publish.push(0);
        let mut frames = Vec::new();
        frames.extend(frame(FRAME_METHOD, CHANNEL, &method(60, 40, &publish)));
        let mut header = Vec::new();
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        // content-type and content-encoding
        header.extend_from_slice(&0xC000u16.to_be_bytes());
        short_string(&mut header, "application/json");
        short_string(&mut header, "utf-8");
        frames.extend(frame(FRAME_HEADER, CHANNEL, &header));
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1024);
        for part in body.chunks(chunk) {
            frames.extend(frame(FRAME_BODY, CHANNEL, part));
        }
        self.stream.write_all(&frames).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Removes a queue and an exchange (test clean-up).
    pub async fn delete_topic(&mut self, exchange: &str, queues: &[&str]) -> Result<(), AmqpError> {
        for queue in queues {
            let mut delete = Vec::new();
            delete.extend_from_slice(&0u16.to_be_bytes());
            short_string(&mut delete, queue);
            delete.push(0);
            self.send_method(CHANNEL, 50, 40, &delete).await?;
            self.expect(50, 41).await?;
        }
        let mut delete = Vec::new();
        delete.extend_from_slice(&0u16.to_be_bytes());
        short_string(&mut delete, exchange);
        delete.push(0);
        self.send_method(CHANNEL, 40, 20, &delete).await?;
        self.expect(40, 21).await?;
        Ok(())
    }

    /// Takes one message off `queue`, if there is one (for tests and diagnostics).
    pub async fn get(&mut self, queue: &str) -> Result<Option<Vec<u8>>, AmqpError> {
        let mut get = Vec::new();
        get.extend_from_slice(&0u16.to_be_bytes());
        short_string(&mut get, queue);
        get.push(1);
        self.send_method(CHANNEL, 60, 70, &get).await?;
        loop {
            let reply = self.read_frame().await?;
            match reply.method_ids() {
                Some((60, 72)) => return Ok(None),
                Some((60, 71)) => break,
                _ => self.check_close(&reply)?,
            }
        }
        let header = self.read_frame().await?;
        if header.kind != FRAME_HEADER || header.payload.len() < 12 {
            return Err(AmqpError::Protocol("expected a content header".to_owned()));
        }
        let size = u64::from_be_bytes(header.payload[4..12].try_into().unwrap_or_default());
        let mut body = Vec::new();
        while (body.len() as u64) < size {
            let part = self.read_frame().await?;
            if part.kind != FRAME_BODY {
                return Err(AmqpError::Protocol("expected a content body".to_owned()));
            }
            body.extend_from_slice(&part.payload);
        }
        Ok(Some(body))
    }

    async fn send_method(
        &mut self,
        channel: u16,
        class: u16,
        id: u16,
        arguments: &[u8],
    ) -> Result<(), AmqpError> {
        self.stream
            .write_all(&frame(FRAME_METHOD, channel, &method(class, id, arguments)))
            .await?;
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Frame, AmqpError> {
        loop {
            let mut head = [0u8; 7];
            tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut head))
                .await
                .map_err(|_| AmqpError::Timeout)??;
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut payload))
                .await
                .map_err(|_| AmqpError::Timeout)??;
            if payload.pop() != Some(FRAME_END) {
                return Err(AmqpError::Protocol("bad frame end".to_owned()));
            }
            if head[0] == FRAME_HEARTBEAT {
                continue;
            }
            return Ok(Frame {
                kind: head[0],
                payload,
            });
        }
    }

    fn check_close(&self, frame: &Frame) -> Result<(), AmqpError> {
        let scope = match frame.method_ids() {
            Some((10, 50)) => "connection",
            Some((20, 40)) => "channel",
            other => return Err(AmqpError::Protocol(format!("{other:?}"))),
        };
        let payload = &frame.payload;
        let code = payload
            .get(4..6)
            .map_or(0, |bytes| u16::from_be_bytes([bytes[0], bytes[1]]));
        let length = payload.get(6).copied().unwrap_or(0) as usize;
        let text = payload
            .get(7..7 + length)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default();
        Err(AmqpError::Closed { scope, code, text })
    }

    async fn expect(&mut self, class: u16, id: u16) -> Result<Frame, AmqpError> {
        let frame = self.read_frame().await?;
        if frame.method_ids() == Some((class, id)) {
            Ok(frame)
        } else {
            self.check_close(&frame)?;
            unreachable!("check_close returns an error for every other frame")
        }
    }
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_credentials_host_and_vhost() {
        assert_eq!(
            AmqpAddress::parse("amqp://magnum:secret@10.0.0.5:5673/%2F").unwrap(),
            AmqpAddress {
                host: "10.0.0.5".to_owned(),
                port: 5673,
                user: "magnum".to_owned(),
                password: "secret".to_owned(),
                vhost: "/".to_owned(),
            }
        );
        let defaults = AmqpAddress::parse("rabbit://localhost/").unwrap();
        assert_eq!(
            (
                defaults.port,
                defaults.user.as_str(),
                defaults.vhost.as_str()
            ),
            (5672, "guest", "/")
        );
        assert_eq!(
            AmqpAddress::parse("amqp://h/openstack").unwrap().vhost,
            "openstack"
        );
        assert!(AmqpAddress::parse("http://h").is_err());
        assert!(AmqpAddress::parse("amqp://u:p@:1/").is_err());
    }

    #[test]
    fn frames_carry_type_channel_size_and_end_marker() {
        let bytes = frame(FRAME_METHOD, 1, &method(20, 10, &[0]));
        assert_eq!(bytes, [1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE]);
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn bad_urls_are_reported_without_their_password() {
        let error = AmqpAddress::parse("amqp://magnum:s3cret@broker:notaport/").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("amqp://***@broker:notaport/"), "{text}");
        assert_eq!(redacted("amqp://broker/"), "amqp://broker/");
        assert_eq!(
            redacted("amqp://user:p@ss@broker"),
            "amqp://user:***@broker"
        );
    }

    #[test]
    fn addresses_decode_their_parts_and_default_as_oslo_does() {
        let address = AmqpAddress::parse("rabbit://us%40er:p%2Fss@broker:5673/%2Fprod").unwrap();
        assert_eq!(
            (address.user.as_str(), address.password.as_str()),
            ("us@er", "p/ss")
        );
        assert_eq!((address.host.as_str(), address.port), ("broker", 5673));
        assert_eq!(address.vhost, "/prod");
        let plain = AmqpAddress::parse("amqp://broker").unwrap();
        assert_eq!(
            (
                plain.user.as_str(),
                plain.password.as_str(),
                plain.port,
                plain.vhost.as_str()
            ),
            ("guest", "guest", 5672, "/")
        );
        for bad in [
            "http://broker/",
            "amqp://",
            "broker:5672",
            "amqp://u:p@:5672/",
        ] {
            assert!(AmqpAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
