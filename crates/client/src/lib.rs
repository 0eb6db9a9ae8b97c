//! A client of the Magnum v1 API: where it is (`--endpoint`/`MAGNUM_URL` for a noauth
//! server, or Keystone's catalog from the `OS_*` variables), who calls (noauth headers or a
//! Keystone token), and one method per request shape `openstack coe` sends.

use std::time::Duration;

use serde_json::{json, Value};

mod login;

pub use login::{clouds_yaml_search_path, DomainRef, KeystoneLogin, Method, Scope};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; `message` is its `errors[0].detail`.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0}")]
    Setup(String),
}

/// How requests identify their caller.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A noauth server: identity headers, when given.
    NoAuth {
        project_id: Option<String>,
        user_id: Option<String>,
        roles: Option<String>,
    },
    /// A Keystone token.
    Token(String),
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:9511/v1`
    pub endpoint: String,
    credentials: Credentials,
    microversion: String,
}

fn first_error(status: u16, body: &str) -> ClientError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message = parsed["errors"][0]["detail"]
        .as_str()
        .filter(|detail| !detail.is_empty())
        .or_else(|| {
            parsed["errors"][0]["title"]
                .as_str()
                .filter(|title| !title.is_empty())
        })
        .or_else(|| parsed["error"]["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if body.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                body.trim().to_owned()
            }
        });
    ClientError::Api { status, message }
}

impl Client {
    pub fn new(endpoint: &str, credentials: Credentials) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let endpoint = if endpoint.ends_with("/v1") {
            endpoint
        } else {
            format!("{endpoint}/v1")
        };
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client can be built"),
            endpoint,
            credentials,
            microversion: "latest".to_owned(),
        }
    }

    /// Logs in to Keystone and takes the `container-infra` endpoint of the token's catalog
    /// (the login's interface, and its region when it names one).
    pub async fn from_keystone(login: &KeystoneLogin) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(path) = &login.cacert {
            let pem = std::fs::read(path).map_err(|error| {
                ClientError::Setup(format!("cacert {}: {error}", path.display()))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                ClientError::Setup(format!("cacert {}: {error}", path.display()))
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| ClientError::Setup(format!("HTTP client: {error}")))?;
        let base = login.auth_url.trim_end_matches('/');
        let url = format!(
            "{}/v3/auth/tokens",
            base.strip_suffix("/v3").unwrap_or(base)
        );
        let response = http
            .post(&url)
            .json(&login.request_body())
            .send()
            .await
            .map_err(|_| ClientError::Unreachable(url.clone()))?;
        let status = response.status().as_u16();
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let Some(token) = token else {
            return Err(first_error(status, &text));
        };
        let document: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let endpoint = document["token"]["catalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|service| service["type"] == "container-infra")
            .flat_map(|service| service["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|endpoint| {
                endpoint["interface"] == login.interface.as_str()
                    && login.region.as_deref().is_none_or(|region| {
                        endpoint["region_id"] == region || endpoint["region"] == region
                    })
            })
            .and_then(|endpoint| endpoint["url"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                ClientError::Setup("Keystone's catalog has no container-infra endpoint".to_owned())
            })?;
        let mut client = Self::new(&endpoint, Credentials::Token(token));
        client.http = http;
        Ok(client)
    }

    pub fn with_microversion(mut self, microversion: &str) -> Self {
        self.microversion = microversion.to_owned();
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.endpoint))
            .header(
                "OpenStack-API-Version",
                format!("container-infra {}", self.microversion),
            )
            .header("Accept", "application/json");
        match &self.credentials {
            Credentials::Token(token) => request = request.header("X-Auth-Token", token),
            Credentials::NoAuth {
                project_id,
                user_id,
                roles,
            } => {
                for (name, value) in [
                    ("X-Project-Id", project_id),
                    ("X-User-Id", user_id),
                    ("X-Roles", roles),
                ] {
                    if let Some(value) = value {
                        request = request.header(name, value);
                    }
                }
            }
        }
        request
    }

    /// Sends and returns the JSON body (Null when empty); server errors as `ClientError::Api`.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Setup(format!("bad method {method}")))?;
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|_| ClientError::Unreachable(self.endpoint.clone()))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status >= 400 {
            return Err(first_error(status, &text));
        }
        if text.trim().is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text)
                .map_err(|_| ClientError::Setup(format!("the server answered non-JSON: {text}")))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send("GET", path, None).await
    }

    /// Every item of a paginated collection, following `next`.
    pub async fn list_all(&self, path: &str, key: &str) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(current) = next.take() {
            let page = self.get(&current).await?;
            items.extend(page[key].as_array().cloned().unwrap_or_default());
            if let Some(link) = page["next"].as_str() {
                // `next` is absolute; keep the part after /v1.
                next = link.find("/v1/").map(|index| link[index + 3..].to_owned());
            }
        }
        Ok(items)
    }

    /// Opens a Server-Sent Events stream (`…?watch=true` of the events API), resuming after
    /// `last_event_id`. `Ok(None)` when the server gives no stream (upstream Magnum has none;
    /// a magnum-rs at its stream limit answers 503): the caller falls back to polling. Only
    /// 401 and 403 are errors.
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<Option<EventStream>, ClientError> {
        let mut request = self
            .request(reqwest::Method::GET, path)
            .header("Accept", "text/event-stream")
            // A stream lasts as long as the server keeps it (at most a day); silence is
            // caught by the keep-alive wait in `EventStream::next`.
            .timeout(Duration::from_secs(90_000));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|_| ClientError::Unreachable(self.endpoint.clone()))?;
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if status == 200 && is_stream {
            return Ok(Some(EventStream {
                response,
                buffer: String::new(),
            }));
        }
        // Refused credentials are the caller's to know; anything else (a server without
        // streams, one at its stream limit, a proxy in the way) is a reason to poll instead.
        if status == 401 || status == 403 {
            let text = response.text().await.unwrap_or_default();
            return Err(first_error(status, &text));
        }
        Ok(None)
    }

    pub async fn cluster(&self, ident: &str) -> Result<Value, ClientError> {
        self.get(&format!("/clusters/{ident}")).await
    }

    pub async fn template(&self, ident: &str) -> Result<Value, ClientError> {
        self.get(&format!("/clustertemplates/{ident}")).await
    }

    pub async fn sign(&self, cluster: &str, csr: &str) -> Result<Value, ClientError> {
        self.send(
            "POST",
            "/certificates",
            Some(json!({"cluster_uuid": cluster, "csr": csr})),
        )
        .await
    }
}

/// One Server-Sent Event: `cluster_event` (data: an event document), `gap` (data: events
/// retention dropped before the stream could send them) or `end` (data: why the server
/// ended the stream, and the id to resume from).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub id: Option<i64>,
    pub kind: String,
    pub data: Value,
}

/// An open event stream.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// Longer than this without a byte (the server sends a keep-alive every 15 s by default):
/// the connection is taken as lost.
const STREAM_SILENCE: Duration = Duration::from_secs(90);
/// The longest event block kept while it arrives.
const MAX_EVENT_BYTES: usize = 1 << 20;

impl EventStream {
    /// The next event; `Ok(None)` when the stream ended or went silent.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = StreamEvent {
                    id: None,
                    kind: "message".to_owned(),
                    data: Value::Null,
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        event.id = id.trim().parse().ok();
                    } else if let Some(kind) = line.strip_prefix("event:") {
                        event.kind = kind.trim().to_owned();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        event.data = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                        has_data = true;
                    }
                }
                if has_data {
                    return Ok(Some(event));
                }
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(ClientError::Setup(
                    "the server sent an event larger than 1 MiB".to_owned(),
                ));
            }
            match tokio::time::timeout(STREAM_SILENCE, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Ok(None),
            }
        }
    }
}
