//! Keystone v3 as magnum-rs needs it: the service logs in with its own credentials, asks
//! `GET /v3/auth/tokens` what a caller's token is worth, and remembers the answer for a
//! bounded time that never outlives the token. Nothing here knows about HTTP requests to
//! magnum-rs itself; `magnum-api` turns a [`ValidatedToken`] into an identity.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

mod user;

pub use user::{PasswordLogin, UserProject, UserToken, MAX_LISTED_PROJECTS, MAX_LOGIN_FIELD};

/// How magnum-rs proves itself to Keystone.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ServiceCredentials {
    ApplicationCredential {
        application_credential_id: String,
        application_credential_secret: String,
    },
    Password {
        username: String,
        password: String,
        #[serde(default = "default_domain")]
        user_domain_name: String,
        project_name: String,
        #[serde(default = "default_domain")]
        project_domain_name: String,
    },
}

fn default_domain() -> String {
    "Default".to_owned()
}

impl std::fmt::Debug for ServiceCredentials {
    /// Secrets stay out of logs and panics.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApplicationCredential {
                application_credential_id,
                ..
            } => write!(
                formatter,
                "ApplicationCredential({application_credential_id})"
            ),
            Self::Password {
                username,
                project_name,
                ..
            } => write!(formatter, "Password({username} in {project_name})"),
        }
    }
}

impl ServiceCredentials {
    fn login_body(&self) -> Value {
        match self {
            Self::ApplicationCredential {
                application_credential_id,
                application_credential_secret,
            } => json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": application_credential_id,
                    "secret": application_credential_secret,
                },
            }}}),
            Self::Password {
                username,
                password,
                user_domain_name,
                project_name,
                project_domain_name,
            } => json!({"auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": username,
                        "domain": {"name": user_domain_name},
                        "password": password,
                    }},
                },
                "scope": {"project": {
                    "name": project_name,
                    "domain": {"name": project_domain_name},
                }},
            }}),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeystoneSettings {
    /// The identity v3 endpoint, e.g. `http://keystone:5000/v3`.
    pub auth_url: String,
    pub credentials: ServiceCredentials,
    /// How long a validated token is trusted without asking Keystone again.
    pub cache_for: Duration,
    /// Most tokens remembered at once; the ones closest to expiry go first.
    pub max_cached_tokens: usize,
    pub timeout: Duration,
    /// PEM certificates trusted for an `https` Keystone, besides the system's.
    pub ca_certificates_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    pub user_id: String,
    /// `None` for unscoped, domain- and system-scoped tokens.
    pub project_id: Option<String>,
    pub project_domain_id: Option<String>,
    /// Role names as Keystone lists them, implied roles included.
    pub roles: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoneError {
    /// Keystone does not know the token, or it expired, was revoked, or its project, user
    /// or role assignment is gone.
    #[error("the token is not valid")]
    InvalidToken,
    /// Keystone cannot be asked (unreachable, failing, or refusing the service's own
    /// credentials); no answer about the token can be given.
    #[error("Keystone is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Setup(String),
    /// Keystone refused what the caller's own token asked for (a 403 or 400 of Keystone's),
    /// with Keystone's message.
    #[error("{0}")]
    Refused(String),
}

/// An application credential Keystone created in a user's name: the secret is shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct DelegatedCredential {
    pub id: String,
    pub secret: String,
    pub user_id: String,
}

impl std::fmt::Debug for DelegatedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedCredential")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// The longest application credential name Keystone takes.
const MAX_CREDENTIAL_NAME: usize = 255;

#[derive(Debug, Clone)]
struct ServiceToken {
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    /// `None`: Keystone said the token is not valid, which it can never become again.
    validated: Option<ValidatedToken>,
    trusted_until: DateTime<Utc>,
    /// What this entry holds in memory, as [`entry_bytes`] counts it.
    bytes: usize,
}

/// The cache's key: the SHA-256 of the token, so that an entry costs the same whatever the
/// length of the token a client sent.
type TokenDigest = [u8; 32];

fn token_digest(token: &str) -> TokenDigest {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// What one cache entry holds: its key and record in the table, and the strings a validated
/// token carries (ids and role names, which come from Keystone, not from the client).
fn entry_bytes(validated: Option<&ValidatedToken>) -> usize {
    let strings = validated.map_or(0, |validated| {
        validated.user_id.capacity()
            + validated.project_id.as_ref().map_or(0, String::capacity)
            + validated
                .project_domain_id
                .as_ref()
                .map_or(0, String::capacity)
            + validated.roles.capacity() * std::mem::size_of::<String>()
            + validated.roles.iter().map(String::capacity).sum::<usize>()
    });
    std::mem::size_of::<TokenDigest>() + std::mem::size_of::<CachedToken>() + strings
}

/// Remembered answers, bounded in entries and in bytes (the sum of [`entry_bytes`]).
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<TokenDigest, CachedToken>,
    bytes: usize,
}

impl TokenCache {
    fn remove(&mut self, key: &TokenDigest) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.bytes;
        }
    }

    fn remove_expired(&mut self, now: DateTime<Utc>) {
        let mut freed = 0;
        self.entries.retain(|_, entry| {
            let keep = entry.trusted_until > now;
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Drops the entry that matters least: refusals first, so a stream of made-up tokens
    /// cannot push out good ones, then the one closest to expiry.
    fn remove_least_useful(&mut self) {
        let least_useful = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| (entry.validated.is_some(), entry.trusted_until))
            .map(|(key, _)| *key);
        if let Some(key) = least_useful {
            self.remove(&key);
        }
    }
}

/// A Keystone v3 endpoint seen through the service's own login.
pub struct Keystone {
    http: reqwest::Client,
    auth_url: String,
    credentials: ServiceCredentials,
    cache_for: chrono::Duration,
    max_cached_tokens: usize,
    /// [`MAX_CACHED_BYTES`], lowered by tests.
    max_cached_bytes: usize,
    /// Held across a login so that concurrent requests share one.
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: std::sync::Mutex<TokenCache>,
    /// Validation latency and cache hits, for magnumd's `/metrics`.
    metrics: magnum_metrics::KeystoneMetrics,
}

/// A service token this close to its expiry is replaced before use.
const SERVICE_TOKEN_MARGIN_SECONDS: i64 = 60;

/// A token longer than this is worthless: refused without asking Keystone, and not
/// remembered, so that made-up giant tokens cost neither a round trip nor memory. Keystone's
/// own tokens (fernet, JWS) are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most memory the token cache holds, counted per entry by [`entry_bytes`] (its key, record
/// and the strings of a validated token); besides `max_cached_tokens`, whichever is reached
/// first. The hash table's spare slots come on top (at most one empty slot per entry).
pub const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;

impl Keystone {
    pub fn new(settings: KeystoneSettings) -> Result<Self, KeystoneError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout);
        if let Some(pem) = &settings.ca_certificates_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
                KeystoneError::Setup(format!("the Keystone CA file is not PEM: {error}"))
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| KeystoneError::Setup(format!("HTTP client: {error}")))?;
        let cache_for = chrono::Duration::from_std(settings.cache_for)
            .map_err(|_| KeystoneError::Setup("the token cache time is too long".to_owned()))?;
        Ok(Self {
            http,
            auth_url: settings.auth_url.trim_end_matches('/').to_owned(),
            credentials: settings.credentials,
            cache_for,
            max_cached_tokens: settings.max_cached_tokens,
            max_cached_bytes: MAX_CACHED_BYTES,
            service_token: tokio::sync::Mutex::new(None),
            cache: std::sync::Mutex::new(TokenCache::default()),
            metrics: magnum_metrics::KeystoneMetrics::default(),
        })
    }

    /// Records validations and cache lookups into `metrics` (magnumd's registry).
    pub fn with_metrics(mut self, metrics: magnum_metrics::KeystoneMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn auth_url(&self) -> &str {
        &self.auth_url
    }

    /// What `token` is worth: from the cache while it is trusted there, from Keystone otherwise.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, KeystoneError> {
        // Keystone answers a token it cannot parse with 404, but a header value it cannot
        // even carry would fail the request itself; either way the token is worthless, and
        // refusing it costs less than remembering the refusal.
        if token.len() > MAX_TOKEN_BYTES || reqwest::header::HeaderValue::from_str(token).is_err() {
            return Err(KeystoneError::InvalidToken);
        }
        let key = token_digest(token);
        let now = Utc::now();
        if let Some(cached) = self.cached(&key, now) {
            self.metrics.cache_lookup(true);
            return cached.ok_or(KeystoneError::InvalidToken);
        }
        self.metrics.cache_lookup(false);
        let asked = std::time::Instant::now();
        let answer = self.validate_with_keystone(token).await;
        let outcome = match &answer {
            Ok(_) => "valid",
            Err(KeystoneError::InvalidToken) => "invalid",
            Err(_) => "unavailable",
        };
        self.metrics.validated(outcome, asked.elapsed());
        // Refusals are remembered too, so that a client repeating a bad token does not make
        // every one of its requests a round trip to Keystone.
        let validated = match answer {
            Ok(validated) if validated.expires_at > Utc::now() => validated,
            Ok(_) | Err(KeystoneError::InvalidToken) => {
                self.remember(key, None, now + self.cache_for);
                return Err(KeystoneError::InvalidToken);
            }
            Err(other) => return Err(other),
        };
        let trusted_until = (Utc::now() + self.cache_for).min(validated.expires_at);
        self.remember(key, Some(&validated), trusted_until);
        Ok(validated)
    }

    /// Whether Keystone knows the project (for quotas, which name projects by id).
    pub async fn project_exists(&self, project_id: &str) -> Result<bool, KeystoneError> {
        let path = format!("/projects/{}", percent_encode_segment(project_id));
        let response = self.as_service(|service_token| {
            self.http
                .get(format!("{}{path}", self.auth_url))
                .header("X-Auth-Token", service_token)
        });
        let (status, _) = response.await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            other => Err(KeystoneError::Unavailable(format!(
                "GET {path} answered HTTP {other}"
            ))),
        }
    }

    /// Creates an application credential in the name of the user of `user_token` (Keystone
    /// lets only the user do that), restricted (it cannot make more credentials or trusts),
    /// with the token's roles on its project.
    pub async fn create_application_credential(
        &self,
        user_token: &str,
        user_id: &str,
        roles: &[String],
        name: &str,
        description: &str,
    ) -> Result<DelegatedCredential, KeystoneError> {
        let path = format!(
            "/users/{}/application_credentials",
            percent_encode_segment(user_id)
        );
        let name: String = name.chars().take(MAX_CREDENTIAL_NAME).collect();
        let response = self
            .http
            .post(format!("{}{path}", self.auth_url))
            .header("X-Auth-Token", user_token)
            .header("Accept", "application/json")
            .json(&{
                let mut credential = json!({
                    "name": name,
                    "description": description,
                    "unrestricted": false,
                });
                // None named: all of the token's roles on its project.
                if !roles.is_empty() {
                    credential["roles"] = roles.iter().map(|role| json!({"name": role})).collect();
                }
                json!({"application_credential": credential})
            })
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            201 => {
                let credential = &body["application_credential"];
                match (credential["id"].as_str(), credential["secret"].as_str()) {
                    (Some(id), Some(secret)) => Ok(DelegatedCredential {
                        id: id.to_owned(),
                        secret: secret.to_owned(),
                        user_id: user_id.to_owned(),
                    }),
                    _ => Err(KeystoneError::Unavailable(format!(
                        "POST {path} answered without an id and secret"
                    ))),
                }
            }
            401 => Err(KeystoneError::InvalidToken),
            // A role the caller lacks (drivers.capi.credential_roles) is a 400 of Keystone's.
            400 | 403 => Err(KeystoneError::Refused(format!(
                "Keystone refused to create an application credential for the cluster (HTTP {status}): {}",
                body["error"]["message"].as_str().unwrap_or("no reason given")
            ))),
            // A role name Keystone does not know (404), a name clash (409): ours to fix.
            404 | 409 => Err(KeystoneError::Setup(format!(
                "Keystone refused to create an application credential (HTTP {status}): {}",
                body["error"]["message"].as_str().unwrap_or("no reason given")
            ))),
            other => Err(KeystoneError::Unavailable(format!(
                "POST {path} answered HTTP {other}"
            ))),
        }
    }

    /// Deletes an application credential of the user of `user_token` with that token (a
    /// user may delete their own). One that is gone already is fine.
    pub async fn delete_own_application_credential(
        &self,
        user_token: &str,
        user_id: &str,
        id: &str,
    ) -> Result<(), KeystoneError> {
        let path = application_credential_path(user_id, id);
        let response = self
            .http
            .delete(format!("{}{path}", self.auth_url))
            .header("X-Auth-Token", user_token)
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        match response.status().as_u16() {
            204 | 404 => Ok(()),
            other => Err(KeystoneError::Unavailable(format!(
                "DELETE {path} with the user's token answered HTTP {other}"
            ))),
        }
    }

    /// Deletes an application credential of `user_id` with magnum-rs's own login (which needs
    /// the admin role for another user's credential). One that is gone already is fine.
    pub async fn delete_application_credential(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<(), KeystoneError> {
        let path = application_credential_path(user_id, id);
        let (status, _) = self
            .as_service(|service_token| {
                self.http
                    .delete(format!("{}{path}", self.auth_url))
                    .header("X-Auth-Token", service_token)
            })
            .await?;
        match status {
            204 | 404 => Ok(()),
            other => Err(KeystoneError::Unavailable(format!(
                "DELETE {path} answered HTTP {other}"
            ))),
        }
    }

    /// Logs in now, so that wrong service credentials show at start-up rather than at the
    /// first request.
    pub async fn check_service_login(&self) -> Result<(), KeystoneError> {
        self.service_token(true).await.map(|_| ())
    }

    /// Tokens remembered right now (for tests and metrics).
    /// How long a validation is trusted: a token revoked now is refused everywhere after it.
    pub fn cache_for(&self) -> std::time::Duration {
        self.cache_for.to_std().unwrap_or_default()
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.lock().expect("token cache lock").entries.len()
    }

    /// Bytes the remembered tokens hold right now, as bounded by [`MAX_CACHED_BYTES`].
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().expect("token cache lock").bytes
    }

    fn cached(&self, key: &TokenDigest, now: DateTime<Utc>) -> Option<Option<ValidatedToken>> {
        let mut cache = self.cache.lock().expect("token cache lock");
        match cache.entries.get(key) {
            Some(entry) if entry.trusted_until > now => Some(entry.validated.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(
        &self,
        key: TokenDigest,
        validated: Option<&ValidatedToken>,
        trusted_until: DateTime<Utc>,
    ) {
        if self.max_cached_tokens == 0 || self.cache_for <= chrono::Duration::zero() {
            return;
        }
        let validated = validated.cloned();
        let bytes = entry_bytes(validated.as_ref());
        if bytes > self.max_cached_bytes {
            return;
        }
        let now = Utc::now();
        let mut cache = self.cache.lock().expect("token cache lock");
        // Replaced, not added to: a concurrent validation of the same token got here first.
        cache.remove(&key);
        let full = |cache: &TokenCache| {
            cache.entries.len() >= self.max_cached_tokens
                || cache.bytes + bytes > self.max_cached_bytes
        };
        if full(&cache) {
            cache.remove_expired(now);
        }
        while full(&cache) && !cache.entries.is_empty() {
            cache.remove_least_useful();
        }
        cache.bytes += bytes;
        cache.entries.insert(
            key,
            CachedToken {
                validated,
                trusted_until,
                bytes,
            },
        );
    }

    async fn validate_with_keystone(&self, token: &str) -> Result<ValidatedToken, KeystoneError> {
        let url = format!("{}/auth/tokens?nocatalog", self.auth_url);
        let (status, body) = self
            .as_service(|service_token| {
                self.http
                    .get(&url)
                    .header("X-Auth-Token", service_token)
                    .header("X-Subject-Token", token)
            })
            .await?;
        match status {
            200 => parse_validation(&body),
            404 => Err(KeystoneError::InvalidToken),
            other => Err(KeystoneError::Unavailable(format!(
                "token validation answered HTTP {other}"
            ))),
        }
    }

    /// Sends a request carrying the service token; when Keystone no longer accepts that
    /// token (401), logs in again once and repeats.
    async fn as_service(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(u16, Value), KeystoneError> {
        let mut fresh_login = false;
        loop {
            let service_token = self.service_token(fresh_login).await?;
            let response = request(&service_token)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|error| unreachable(&self.auth_url, &error))?;
            let status = response.status().as_u16();
            if status == 401 && !fresh_login {
                fresh_login = true;
                continue;
            }
            if status == 401 || status == 403 {
                return Err(KeystoneError::Unavailable(format!(
                    "Keystone refuses magnum-rs's service token (HTTP {status}): the service user needs the admin or service role"
                )));
            }
            let body = if status == 200 {
                response
                    .json::<Value>()
                    .await
                    .map_err(|error| unreachable(&self.auth_url, &error))?
            } else {
                Value::Null
            };
            return Ok((status, body));
        }
    }

    async fn service_token(&self, force_login: bool) -> Result<String, KeystoneError> {
        let mut current = self.service_token.lock().await;
        if let Some(token) = current.as_ref() {
            let still_good = token.expires_at
                > Utc::now() + chrono::Duration::seconds(SERVICE_TOKEN_MARGIN_SECONDS);
            if still_good && !force_login {
                return Ok(token.token.clone());
            }
        }
        let login = self.login().await?;
        let token = login.token.clone();
        *current = Some(login);
        Ok(token)
    }

    async fn login(&self) -> Result<ServiceToken, KeystoneError> {
        let response = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.auth_url))
            .json(&self.credentials.login_body())
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        let status = response.status().as_u16();
        if status != 201 && status != 200 {
            return Err(KeystoneError::Unavailable(format!(
                "Keystone refuses magnum-rs's own login ({:?}, HTTP {status})",
                self.credentials
            )));
        }
        let (token, body) = self.issued_token(response).await?;
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .and_then(parse_time)
            .ok_or_else(|| {
                KeystoneError::Unavailable("Keystone's login answer has no expires_at".into())
            })?;
        Ok(ServiceToken { token, expires_at })
    }
}

impl Keystone {
    /// A login's answer: the token Keystone issued (`X-Subject-Token`) and the body.
    async fn issued_token(
        &self,
        response: reqwest::Response,
    ) -> Result<(String, Value), KeystoneError> {
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                KeystoneError::Unavailable("Keystone's login answer has no X-Subject-Token".into())
            })?;
        let body: Value = response
            .json()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        Ok((token, body))
    }
}

/// `/users/<user>/application_credentials/<id>`, each segment encoded.
fn application_credential_path(user_id: &str, id: &str) -> String {
    format!(
        "/users/{}/application_credentials/{}",
        percent_encode_segment(user_id),
        percent_encode_segment(id)
    )
}

fn unreachable(auth_url: &str, error: &reqwest::Error) -> KeystoneError {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    KeystoneError::Unavailable(format!("{auth_url}: {cause}"))
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn parse_validation(body: &Value) -> Result<ValidatedToken, KeystoneError> {
    let token = &body["token"];
    let malformed = |what: &str| {
        KeystoneError::Unavailable(format!("Keystone's token validation has no {what}"))
    };
    let user_id = token["user"]["id"]
        .as_str()
        .ok_or_else(|| malformed("user id"))?
        .to_owned();
    let expires_at = token["expires_at"]
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| malformed("expires_at"))?;
    let roles = token["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|role| role["name"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(ValidatedToken {
        user_id,
        project_id: token["project"]["id"].as_str().map(str::to_owned),
        project_domain_id: token["project"]["domain"]["id"].as_str().map(str::to_owned),
        roles,
        expires_at,
    })
}

/// Project ids are hex in practice; anything else is escaped rather than trusted in a path.
fn percent_encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
