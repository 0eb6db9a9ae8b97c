//! Dashboard sessions with Keystone: the login form's password is exchanged for a Keystone
//! token server-side, and the token travels sealed (AES-256-GCM under the dashboard's key)
//! in an HttpOnly, SameSite=Strict cookie. Nothing is kept in memory: any API process with
//! the same key reads the cookie, a restart logs nobody out, and logout revokes the token
//! in Keystone and records the session as ended in the database, which every API process
//! follows (within [`ENDED_SESSIONS_POLL`]), so that a copied cookie is refused everywhere
//! although a process's token cache would still honour its token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, Utc};
use magnum_certs::KeySealer;
use magnum_keystone::{Keystone, KeystoneError, UserToken};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The cookie's name.
pub const COOKIE_NAME: &str = "magnum_session";

/// The header every state-changing request of a cookie session carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What authenticates the sealed data to this purpose (not a cluster key, not elsewhere).
const SEAL_CONTEXT: &str = "magnum-rs dashboard session v1";

/// Browsers keep cookies up to 4096 bytes; a sealed session longer than this (a token far
/// larger than Keystone's) is refused at login rather than silently dropped by the browser.
pub const MAX_COOKIE_BYTES: usize = 4000;

/// Logins and project switches in flight at once in this process; more are told to retry
/// (each holds a Keystone round trip, and a password spray should not hold them all).
pub const MAX_CONCURRENT_LOGINS: usize = 16;

/// What the cookie holds, sealed.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionData {
    #[serde(rename = "t")]
    pub token: String,
    #[serde(rename = "c")]
    pub csrf: String,
    #[serde(rename = "u")]
    pub user_name: String,
    #[serde(rename = "p")]
    pub project_name: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The token the login issued, which every token of the session's project switches
    /// descends from: revoking it at logout revokes them all (Keystone revokes a token's
    /// whole audit chain), so no earlier cookie of the session outlives the logout.
    #[serde(rename = "r")]
    pub login_token: String,
}

impl SessionData {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires, 0).unwrap_or_default()
    }
}

/// Sessions of the Keystone deployment.
pub struct Sessions {
    pub keystone: Arc<Keystone>,
    sealer: KeySealer,
    pub logins: tokio::sync::Semaphore,
    /// Sessions ended by a logout (anywhere), by their login token's digest, with when their
    /// tokens expire anyway.
    ended: Mutex<HashMap<[u8; 32], i64>>,
}

/// How often an API process reads the sessions other processes ended.
pub const ENDED_SESSIONS_POLL: Duration = Duration::from_secs(1);
/// How far back each read looks again (for a logout whose commit came after a read that
/// already covered its time).
const ENDED_SESSIONS_OVERLAP_SECONDS: i64 = 30;

/// The SHA-256 of a session's login token: what names the session once ended.
pub fn login_digest(login_token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, login_token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

/// What a request's cookie says.
pub enum CookieAuth {
    /// No session cookie (or an explicit `X-Auth-Token`, which always wins).
    Absent,
    /// A session whose token stands in for `X-Auth-Token`.
    Token(String),
    /// A cookie session asking to change something without proof that the dashboard sent
    /// it: refused (403).
    Refused(&'static str),
}

impl Sessions {
    pub fn new(keystone: Arc<Keystone>, sealer: KeySealer) -> Self {
        Self {
            keystone,
            sealer,
            logins: tokio::sync::Semaphore::new(MAX_CONCURRENT_LOGINS),
            ended: Mutex::new(HashMap::new()),
        }
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.ended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends `session` in this process at once, and in every process that reads `store`.
    pub async fn record_end(
        &self,
        store: &magnum_store::Store,
        session: &SessionData,
    ) -> Result<(), magnum_store::StoreError> {
        let digest = login_digest(&session.login_token);
        self.ended().insert(digest, session.expires);
        store
            .record_ended_session(&magnum_store::EndedSession {
                login_digest: hex(&digest),
                expires_at: magnum_domain::time::Timestamp::from_unix_seconds(session.expires),
            })
            .await
    }

    /// After Keystone revoked the session's tokens: its record is needed only until every
    /// process's token cache has let go of them (and a minute more).
    pub async fn revoked(
        &self,
        store: &magnum_store::Store,
        session: &SessionData,
    ) -> Result<(), magnum_store::StoreError> {
        let until = chrono::Utc::now().timestamp()
            + i64::try_from(self.keystone.cache_for().as_secs()).unwrap_or(i64::MAX / 2)
            + 60;
        store
            .shorten_ended_session(
                &hex(&login_digest(&session.login_token)),
                magnum_domain::time::Timestamp::from_unix_seconds(until.min(session.expires)),
            )
            .await
    }

    /// Takes in sessions other processes ended; forgets those whose tokens expired.
    pub(crate) fn learn_ended(&self, ended: &[magnum_store::EndedSession], now: i64) {
        let mut known = self.ended();
        known.retain(|_, expires| *expires > now);
        for session in ended {
            if let Some(digest) = from_hex(&session.login_digest) {
                known.insert(digest, session.expires_at.unix_seconds());
            }
        }
    }

    /// A new session for a token Keystone just issued; `login_token`: the token of the
    /// login it descends from (a project switch), `None` for a login.
    pub fn start(&self, token: &UserToken, login_token: Option<&str>) -> SessionData {
        let mut csrf = [0u8; 24];
        SystemRandom::new()
            .fill(&mut csrf)
            .expect("the system random number generator works");
        SessionData {
            token: token.token.clone(),
            csrf: csrf.iter().map(|byte| format!("{byte:02x}")).collect(),
            user_name: token.user_name.clone(),
            project_name: token.project_name.clone(),
            expires: token.expires_at.timestamp(),
            login_token: login_token.unwrap_or(&token.token).to_owned(),
        }
    }

    pub fn seal(&self, session: &SessionData) -> Option<String> {
        let json = serde_json::to_vec(session).ok()?;
        let sealed = self.sealer.seal(&json, SEAL_CONTEXT);
        (sealed.len() <= MAX_COOKIE_BYTES).then_some(sealed)
    }

    /// The session of a request's cookie, ended by a logout or not; `None` without one, or
    /// when it was not sealed with this key, or has expired. (A logout opens the cookie so:
    /// one retried after a failure does everything again.)
    pub fn open(&self, headers: &HeaderMap) -> Option<SessionData> {
        let sealed = cookie_value(headers, COOKIE_NAME)?;
        let json = self.sealer.open(&sealed, SEAL_CONTEXT).ok()?;
        let session: SessionData = serde_json::from_slice(&json).ok()?;
        (session.expires_at() > Utc::now()).then_some(session)
    }

    /// The session of a request's cookie, unless a logout ended it (see [`Sessions::open`]).
    pub fn read(&self, headers: &HeaderMap) -> Option<SessionData> {
        self.open(headers)
            .filter(|session| !self.is_ended(&login_digest(&session.login_token)))
    }

    /// Whether a logout (in any process that shares the database) ended the session.
    pub fn is_ended(&self, login: &[u8; 32]) -> bool {
        self.ended().contains_key(login)
    }

    /// The login digest of the cookie session whose token authenticates `headers` (its
    /// `X-Auth-Token` is the session's), when there is one.
    pub fn cookie_login(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        let session = self.read(headers)?;
        let token = headers.get("x-auth-token")?.to_str().ok()?;
        (token == session.token).then(|| login_digest(&session.login_token))
    }

    /// How a request to the API authenticates through the cookie.
    pub fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        trust_proxy_headers: bool,
    ) -> CookieAuth {
        if headers.contains_key("x-auth-token") {
            return CookieAuth::Absent;
        }
        let Some(session) = self.read(headers) else {
            return CookieAuth::Absent;
        };
        if !is_safe(method) {
            if let Err(reason) = check_csrf(&session, headers, trust_proxy_headers) {
                return CookieAuth::Refused(reason);
            }
        }
        CookieAuth::Token(session.token)
    }
}

/// Methods that change nothing, which a cookie session may send without the CSRF header.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A state-changing request of a cookie session must carry the session's CSRF token in a
/// header (which no other site can read or set) and, when the browser says where it comes
/// from, come from this origin.
pub fn check_csrf(
    session: &SessionData,
    headers: &HeaderMap,
    trust_proxy_headers: bool,
) -> Result<(), &'static str> {
    let sent = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !constant_time_equal(sent, session.csrf.as_bytes()) {
        return Err("A dashboard session's request needs its X-CSRF-Token header.");
    }
    if !same_origin(headers, trust_proxy_headers) {
        return Err("A dashboard session's request must come from the dashboard's own origin.");
    }
    Ok(())
}

/// `Origin`, when sent, names the host the request went to: `Host`, or a trusted proxy's
/// `X-Forwarded-Host`, as for the links the API answers with. The scheme is not compared: a
/// proxy that ends TLS makes an `https` page's request an `http` one here.
pub fn same_origin(headers: &HeaderMap, trust_proxy_headers: bool) -> bool {
    let Some(origin) = headers.get("origin").and_then(|value| value.to_str().ok()) else {
        return true;
    };
    let base = crate::context::base_url(headers, trust_proxy_headers);
    let host = base
        .split_once("://")
        .map(|(_, host)| host)
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value, from any of the `Cookie` headers; `None` also when the name comes
/// twice, which is what a neighbouring site setting its own cookie of that name for a
/// parent domain or a longer path would look like: neither is taken.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned());
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// `Set-Cookie` for a session (or, with `None`, one that removes it).
pub fn set_cookie(
    sealed: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    path: &str,
    secure: bool,
) -> HeaderValue {
    let max_age = match (sealed, expires_at) {
        (Some(_), Some(expires_at)) => (expires_at - Utc::now()).num_seconds().max(0),
        _ => 0,
    };
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE_NAME}={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        sealed.unwrap_or_default()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// How a failure of Keystone's is told to the browser, in Magnum's envelope.
pub fn login_failure(error: KeystoneError) -> crate::error::ApiError {
    use axum::http::StatusCode;
    match error {
        KeystoneError::InvalidToken => crate::error::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "The user name, password, domain or project is not right, or the user may not use \
             that project.",
        ),
        KeystoneError::Refused(reason) => crate::error::ApiError::forbidden(reason),
        KeystoneError::Unavailable(reason) | KeystoneError::Setup(reason) => {
            tracing::warn!(%reason, "a dashboard login could not reach Keystone");
            crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity service is unavailable. Retry later.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        let keystone = Keystone::new(magnum_keystone::KeystoneSettings {
            auth_url: "http://127.0.0.1:9/v3".to_owned(),
            credentials: magnum_keystone::ServiceCredentials::ApplicationCredential {
                application_credential_id: "id".to_owned(),
                application_credential_secret: "secret".to_owned(),
            },
            cache_for: std::time::Duration::from_secs(60),
            max_cached_tokens: 10,
            timeout: std::time::Duration::from_secs(1),
            ca_certificates_pem: None,
        })
        .unwrap();
        Sessions::new(
            Arc::new(keystone),
            KeySealer::from_key_text(&KeySealer::generate_key_text()).unwrap(),
        )
    }

    fn token() -> UserToken {
        UserToken {
            token: "gAAAAAB-token".to_owned(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
            user_id: "u1".to_owned(),
            user_name: "alice".to_owned(),
            project_id: "p1".to_owned(),
            project_name: "demo".to_owned(),
            roles: vec!["member".to_owned()],
        }
    }

    fn with_cookie(sealed: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}={sealed}")).unwrap(),
        );
        headers.insert("host", HeaderValue::from_static("127.0.0.1:9511"));
        headers
    }

    #[test]
    fn reads_only_need_the_cookie_and_changes_need_the_csrf_header_too() {
        let sessions = sessions();
        let session = sessions.start(&token(), None);
        let sealed = sessions.seal(&session).unwrap();
        let mut headers = with_cookie(&sealed);
        assert!(matches!(
            sessions.authenticate(&Method::GET, &headers, false),
            CookieAuth::Token(token) if token == "gAAAAAB-token"
        ));
        assert!(matches!(
            sessions.authenticate(&Method::POST, &headers, false),
            CookieAuth::Refused(_)
        ));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("not-the-token"));
        assert!(matches!(
            sessions.authenticate(&Method::DELETE, &headers, false),
            CookieAuth::Refused(_)
        ));
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&session.csrf).unwrap());
        assert!(matches!(
            sessions.authenticate(&Method::DELETE, &headers, false),
            CookieAuth::Token(_)
        ));
        headers.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(matches!(
            sessions.authenticate(&Method::PATCH, &headers, false),
            CookieAuth::Refused(_)
        ));
        headers.insert("origin", HeaderValue::from_static("http://127.0.0.1:9511"));
        assert!(matches!(
            sessions.authenticate(&Method::PATCH, &headers, false),
            CookieAuth::Token(_)
        ));
    }

    #[test]
    fn a_cookie_sealed_elsewhere_or_altered_or_expired_is_no_session() {
        let sessions = sessions();
        let other = self::sessions();
        let session = sessions.start(&token(), None);
        let sealed = other.seal(&session).unwrap();
        assert!(sessions.read(&with_cookie(&sealed)).is_none());
        let mut sealed = sessions.seal(&session).unwrap();
        let last = sealed.pop().unwrap();
        sealed.push(if last == '0' { '1' } else { '0' });
        assert!(sessions.read(&with_cookie(&sealed)).is_none());
        let mut expired = session.clone();
        expired.expires = (Utc::now() - chrono::Duration::seconds(1)).timestamp();
        let sealed = sessions.seal(&expired).unwrap();
        assert!(sessions.read(&with_cookie(&sealed)).is_none());
        assert!(sessions.read(&with_cookie("garbage")).is_none());
        let sealed = sessions.seal(&session).unwrap();
        let mut twice = with_cookie(&sealed);
        twice.append(
            COOKIE,
            HeaderValue::from_str(&format!("{COOKIE_NAME}={sealed}")).unwrap(),
        );
        assert!(
            sessions.read(&twice).is_none(),
            "two session cookies are none"
        );
    }

    #[test]
    fn an_explicit_token_wins_over_the_cookie() {
        let sessions = sessions();
        let sealed = sessions.seal(&sessions.start(&token(), None)).unwrap();
        let mut headers = with_cookie(&sealed);
        headers.insert("x-auth-token", HeaderValue::from_static("other"));
        assert!(matches!(
            sessions.authenticate(&Method::POST, &headers, false),
            CookieAuth::Absent
        ));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let cookie = set_cookie(
            Some("x"),
            Some(Utc::now() + chrono::Duration::hours(1)),
            "/",
            true,
        );
        let text = cookie.to_str().unwrap();
        assert!(text.contains("HttpOnly"));
        assert!(text.contains("SameSite=Strict"));
        assert!(text.contains("; Secure"));
        assert!(text.contains("Max-Age=35"));
        let removal = set_cookie(None, None, "/", false);
        assert!(removal.to_str().unwrap().contains("Max-Age=0"));
        assert!(!removal.to_str().unwrap().contains("Secure"));
    }
}

/// The authenticator of an event stream opened with a cookie session: the stream's token is
/// checked again as any stream's, and the session must not have been ended by a logout (a
/// token cache could still honour its token for a while).
pub(crate) struct SessionBound {
    pub inner: Arc<dyn crate::auth::Authenticator>,
    pub dashboard: Arc<super::Dashboard>,
    pub login: [u8; 32],
}

#[async_trait::async_trait]
impl crate::auth::Authenticator for SessionBound {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<magnum_domain::Identity, crate::auth::AuthFailure> {
        if self
            .dashboard
            .sessions()
            .is_none_or(|sessions| sessions.is_ended(&self.login))
        {
            return Err(crate::auth::AuthFailure::Unauthenticated {
                www_authenticate: String::new(),
            });
        }
        self.inner.authenticate(headers).await
    }
}

/// Follows the sessions ended by logouts in any process, while the dashboard lives: all
/// those whose records are kept at first and every [`FULL_READ_EVERY`] reads, and in between
/// every [`ENDED_SESSIONS_POLL`] those ended in the last [`ENDED_SESSIONS_OVERLAP_SECONDS`]
/// by the database's clock (the one clock every process shares). A batch of expired records
/// is dropped now and then. A database outage leaves what is known in place and is retried.
pub(crate) async fn follow_ended_sessions(
    dashboard: Weak<super::Dashboard>,
    store: magnum_store::Store,
) {
    use magnum_domain::time::Timestamp;
    let mut reads: u64 = 0;
    loop {
        let Some(dashboard) = dashboard.upgrade() else {
            return;
        };
        let Some(sessions) = dashboard.sessions() else {
            return;
        };
        let now = Timestamp::now();
        let within =
            (!reads.is_multiple_of(FULL_READ_EVERY)).then_some(ENDED_SESSIONS_OVERLAP_SECONDS);
        match store.sessions_ended(within, now).await {
            Ok(ended) => {
                if ended.len() as i64 == magnum_store::MAX_ENDED_SESSIONS_READ {
                    tracing::warn!(
                        "{} ended dashboard sessions read at once, the bound: the oldest endings may be honoured until their tokens expire",
                        ended.len()
                    );
                }
                sessions.learn_ended(&ended, now.unix_seconds());
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the dashboard sessions ended by logouts")
            }
        }
        if reads.is_multiple_of(FULL_READ_EVERY) {
            if let Err(error) = store.prune_ended_sessions(now).await {
                tracing::warn!(%error, "cannot drop expired records of ended dashboard sessions");
            }
        }
        reads += 1;
        drop(dashboard);
        tokio::time::sleep(ENDED_SESSIONS_POLL).await;
    }
}

/// Every this many reads, all kept records are read again (a safety net for a read that
/// failed or a commit that came late) and a batch of expired ones dropped.
const FULL_READ_EVERY: u64 = 60;

#[cfg(test)]
mod ended_tests {
    use super::{from_hex, hex, login_digest};

    #[test]
    fn digests_travel_as_hex_and_back() {
        let digest = login_digest("gAAAA-a-keystone-token");
        assert_eq!(from_hex(&hex(&digest)), Some(digest));
        assert_eq!(hex(&digest).len(), 64);
        for broken in ["", "zz", &"0".repeat(63), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(from_hex(broken), None, "{broken}");
        }
        assert_ne!(login_digest("a"), login_digest("b"));
    }
}
