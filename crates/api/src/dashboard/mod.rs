//! The web dashboard at `/dashboard/`: its embedded files and, with Keystone, the login
//! that turns a password into a cookie session. The page itself talks to the same v1 API,
//! under the same policy, as every other client; a cookie session only stands in for
//! `X-Auth-Token` (see [`session::Sessions::authenticate`]).

mod assets;
pub(crate) mod session;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Response, StatusCode};
use magnum_certs::KeySealer;
use magnum_keystone::{Keystone, KeystoneError, PasswordLogin, UserToken};
use serde::Deserialize;
use serde_json::json;

pub use assets::BundleSize;
use session::{check_csrf, login_failure, same_origin, set_cookie, SessionData, Sessions};
pub(crate) use session::{follow_ended_sessions, SessionBound};

use crate::context::{base_url, empty_response, json_response};
use crate::error::ApiError;
use crate::microversion::MIN_VERSION;
use crate::AppState;

/// Largest body the session endpoints read (a login form).
const MAX_SESSION_BODY_BYTES: usize = 16 * 1024;

/// The dashboard of one API process.
pub struct Dashboard {
    assets: assets::Assets,
    sessions: Option<Sessions>,
}

impl Dashboard {
    /// Without an identity service: no login, the page acts as noauth's default identity
    /// (or what its headers say), as any noauth client does.
    pub fn without_login() -> Self {
        Self {
            assets: assets::Assets::new(),
            sessions: None,
        }
    }

    /// With Keystone: a login page; sessions sealed with `session_key`, which every API
    /// process serving the same users must share.
    pub fn with_keystone(keystone: Arc<Keystone>, session_key: KeySealer) -> Self {
        Self {
            assets: assets::Assets::new(),
            sessions: Some(Sessions::new(keystone, session_key)),
        }
    }

    pub fn bundle_size(&self) -> BundleSize {
        self.assets.size()
    }

    pub(crate) fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_ref()
    }

    /// Reads every session ended by a logout (and still recorded), so that a process knows
    /// them before it serves its first request; the follower keeps it up to date after.
    pub async fn load_ended_sessions(
        &self,
        store: &magnum_store::Store,
    ) -> Result<(), magnum_store::StoreError> {
        let Some(sessions) = self.sessions() else {
            return Ok(());
        };
        let now = magnum_domain::time::Timestamp::now();
        let ended = store.sessions_ended(None, now).await?;
        sessions.learn_ended(&ended, now.unix_seconds());
        Ok(())
    }
}

/// Whether a path (after the deployment's prefix) is the dashboard's.
pub(crate) fn is_dashboard_path(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// Answers a request for `/dashboard…`.
pub(crate) async fn serve(
    state: &AppState,
    dashboard: &Dashboard,
    parts: &Parts,
    body: Body,
    path: &str,
    prefix: &str,
    request_id: &str,
) -> Response<Body> {
    let rest = path.strip_prefix("/dashboard").unwrap_or_default();
    let method = &parts.method;
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    match rest {
        "" => redirect(&format!("{prefix}/dashboard/")),
        "/" | "/index.html" if read_only => dashboard.assets.page(method, &parts.headers),
        "/session" | "/session/project" => {
            let answer = match (rest, method.clone()) {
                ("/session", Method::GET) => describe(state, dashboard, parts, prefix).await,
                ("/session", Method::POST) => login(state, dashboard, parts, body, prefix).await,
                ("/session", Method::DELETE) => logout(state, dashboard, parts, prefix).await,
                ("/session/project", Method::POST) => {
                    switch_project(state, dashboard, parts, body, prefix).await
                }
                _ => Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "The method is not allowed for this resource.",
                )),
            };
            let mut response =
                answer.unwrap_or_else(|error| error.into_response(request_id, MIN_VERSION));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(request_id) {
                response
                    .headers_mut()
                    .insert(crate::context::REQUEST_ID_HEADER, value);
            }
            response
        }
        _ => {
            let file = rest
                .strip_prefix("/static/")
                .and_then(|file| file.split_once('/'))
                .filter(|_| read_only)
                .and_then(|(version, name)| {
                    dashboard.assets.file(version, name, method, &parts.headers)
                });
            file.unwrap_or_else(|| {
                ApiError::not_found("The dashboard has no such page or file.")
                    .into_response(request_id, MIN_VERSION)
            })
        }
    }
}

fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Whether the cookie is `Secure`: the request came over HTTPS as far as we can tell (a
/// trusted proxy's header, or the page's own `Origin`, which a proxy ending TLS leaves as
/// the browser sent it).
fn secure(state: &AppState, parts: &Parts) -> bool {
    let origin_https = parts
        .headers
        .get("origin")
        .is_some_and(|origin| origin.as_bytes().starts_with(b"https://"));
    origin_https
        || base_url(&parts.headers, state.settings.trust_proxy_headers).starts_with("https://")
}

fn cookie_path(prefix: &str) -> String {
    format!("{prefix}/")
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication: log in.",
    )
}

/// The session as the page sees it.
fn session_body(
    auth: &str,
    user: (&str, &str),
    project: (&str, &str),
    projects: serde_json::Value,
    roles: &[String],
    csrf: &str,
    expires_at: Option<String>,
) -> serde_json::Value {
    json!({
        "auth": auth,
        "user": {"id": user.0, "name": user.1},
        "project": {"id": project.0, "name": project.1},
        "projects": projects,
        "roles": roles,
        "csrf_token": csrf,
        "expires_at": expires_at,
    })
}

async fn describe(
    state: &AppState,
    dashboard: &Dashboard,
    parts: &Parts,
    prefix: &str,
) -> Result<Response<Body>, ApiError> {
    let Some(sessions) = dashboard.sessions() else {
        let identity = state
            .authenticator
            .authenticate(&parts.headers)
            .await
            .map_err(|_| unauthenticated())?;
        let project = json!([{"id": identity.project_id, "name": identity.project_id}]);
        let body = session_body(
            "noauth",
            (&identity.user_id, &identity.user_id),
            (&identity.project_id, &identity.project_id),
            project,
            &identity.roles,
            "",
            None,
        );
        return Ok(json_response(StatusCode::OK, body.to_string(), ""));
    };
    let Some(session) = sessions.read(&parts.headers) else {
        return Err(unauthenticated());
    };
    let validated = match sessions.keystone.validate(&session.token).await {
        Ok(validated) => validated,
        Err(KeystoneError::InvalidToken) => {
            // Revoked or expired in Keystone: the cookie is worth nothing any more.
            let mut response = unauthenticated().into_response("", MIN_VERSION);
            response.headers_mut().insert(
                axum::http::header::SET_COOKIE,
                set_cookie(None, None, &cookie_path(prefix), secure(state, parts)),
            );
            return Ok(response);
        }
        Err(error) => return Err(login_failure(error)),
    };
    let project_id = validated.project_id.clone().unwrap_or_default();
    // The switcher is a convenience: when Keystone cannot list projects, or this process is
    // already asking Keystone for as many logins and lists as it allows, the session still
    // works in its own project.
    let listed = match sessions.logins.try_acquire() {
        Ok(_slot) => sessions.keystone.user_projects(&session.token).await,
        Err(_) => Err(KeystoneError::Unavailable("busy".to_owned())),
    };
    let projects = match listed {
        Ok(projects) => projects
            .iter()
            .map(|project| json!({"id": project.id, "name": project.name}))
            .collect(),
        Err(_) => vec![json!({"id": project_id, "name": session.project_name})],
    };
    let body = session_body(
        "keystone",
        (&validated.user_id, &session.user_name),
        (&project_id, &session.project_name),
        serde_json::Value::Array(projects),
        &validated.roles,
        &session.csrf,
        Some(session.expires_at().to_rfc3339()),
    );
    Ok(json_response(StatusCode::OK, body.to_string(), ""))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default = "default_domain")]
    user_domain: String,
    #[serde(default)]
    project: String,
    #[serde(default = "default_domain")]
    project_domain: String,
}

fn default_domain() -> String {
    "Default".to_owned()
}

#[derive(Deserialize)]
struct ProjectChoice {
    project_id: String,
}

/// A session endpoint's JSON body: only JSON (which no other site's form can send without
/// the browser asking first), only from this origin, bounded in size and time.
async fn read_form<T: serde::de::DeserializeOwned>(
    state: &AppState,
    parts: &Parts,
    body: Body,
) -> Result<T, ApiError> {
    let json_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The dashboard's session endpoints take application/json.",
        ));
    }
    if !same_origin(&parts.headers, state.settings.trust_proxy_headers) {
        return Err(ApiError::forbidden(
            "A dashboard session's request must come from the dashboard's own origin.",
        ));
    }
    let bytes = tokio::time::timeout(
        state.settings.body_timeout,
        to_bytes(body, MAX_SESSION_BODY_BYTES),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body did not arrive in time.",
        )
    })?
    .map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request is too large. Larger than {MAX_SESSION_BODY_BYTES} bytes."),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("The form is not valid: {error}.")))
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many logins at once. Retry in a moment.",
    )
}

fn started(
    state: &AppState,
    sessions: &Sessions,
    parts: &Parts,
    prefix: &str,
    session: &SessionData,
    issued: &UserToken,
) -> Result<Response<Body>, ApiError> {
    let (user_id, project_id) = (issued.user_id.as_str(), issued.project_id.as_str());
    let sealed = sessions.seal(session).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "Keystone's token is too long to keep in a browser session.",
        )
    })?;
    let body = session_body(
        "keystone",
        (user_id, &session.user_name),
        (project_id, &session.project_name),
        json!([{"id": project_id, "name": session.project_name}]),
        &issued.roles,
        &session.csrf,
        Some(session.expires_at().to_rfc3339()),
    );
    let mut response = json_response(StatusCode::OK, body.to_string(), "");
    response.headers_mut().insert(
        axum::http::header::SET_COOKIE,
        set_cookie(
            Some(&sealed),
            Some(session.expires_at()),
            &cookie_path(prefix),
            secure(state, parts),
        ),
    );
    Ok(response)
}

async fn login(
    state: &AppState,
    dashboard: &Dashboard,
    parts: &Parts,
    body: Body,
    prefix: &str,
) -> Result<Response<Body>, ApiError> {
    let Some(sessions) = dashboard.sessions() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "This deployment has no login: it does not use Keystone.",
        ));
    };
    let form: LoginForm = read_form(state, parts, body).await?;
    let _slot = sessions.logins.try_acquire().map_err(|_| busy())?;
    let issued = sessions
        .keystone
        .password_login(&PasswordLogin {
            username: form.username.trim(),
            password: &form.password,
            user_domain: form.user_domain.trim(),
            project: form.project.trim(),
            project_domain: form.project_domain.trim(),
        })
        .await
        .map_err(login_failure)?;
    // A login over a session ends that one as a logout would, best effort (the new login
    // is what was asked for).
    if let Some(previous) = sessions.read(&parts.headers) {
        if let Err(error) = sessions.record_end(&state.store, &previous).await {
            tracing::warn!(%error, "cannot record the end of the session a login replaces");
        }
        if end(sessions, &previous).await.is_ok() {
            let _ = sessions.revoked(&state.store, &previous).await;
        }
    }
    let session = sessions.start(&issued, None);
    started(state, sessions, parts, prefix, &session, &issued)
}

async fn switch_project(
    state: &AppState,
    dashboard: &Dashboard,
    parts: &Parts,
    body: Body,
    prefix: &str,
) -> Result<Response<Body>, ApiError> {
    let sessions = dashboard.sessions().ok_or_else(unauthenticated)?;
    let session = sessions.read(&parts.headers).ok_or_else(unauthenticated)?;
    check_csrf(&session, &parts.headers, state.settings.trust_proxy_headers)
        .map_err(ApiError::forbidden)?;
    let choice: ProjectChoice = read_form(state, parts, body).await?;
    let _slot = sessions.logins.try_acquire().map_err(|_| busy())?;
    let issued = sessions
        .keystone
        .rescope(&session.token, choice.project_id.trim())
        .await
        .map_err(|error| match error {
            KeystoneError::InvalidToken => {
                ApiError::forbidden("You have no role on that project, or your session ended.")
            }
            other => login_failure(other),
        })?;
    let session = sessions.start(&issued, Some(&session.login_token));
    started(state, sessions, parts, prefix, &session, &issued)
}

/// Revokes a session's tokens: the login's, which takes every token of its project switches
/// with it, and the current one, whose validation this process may have cached.
async fn end(sessions: &Sessions, session: &SessionData) -> Result<(), KeystoneError> {
    if session.token != session.login_token {
        sessions.keystone.revoke_user_token(&session.token).await?;
    }
    sessions
        .keystone
        .revoke_user_token(&session.login_token)
        .await
}

async fn logout(
    state: &AppState,
    dashboard: &Dashboard,
    parts: &Parts,
    prefix: &str,
) -> Result<Response<Body>, ApiError> {
    let clear = |mut response: Response<Body>| {
        response.headers_mut().insert(
            axum::http::header::SET_COOKIE,
            set_cookie(None, None, &cookie_path(prefix), secure(state, parts)),
        );
        response
    };
    // Opened even when already ended here: a logout retried after a failure does
    // everything again.
    let Some(session) = dashboard
        .sessions()
        .and_then(|sessions| sessions.open(&parts.headers))
    else {
        return Ok(clear(empty_response(StatusCode::NO_CONTENT, "")));
    };
    check_csrf(&session, &parts.headers, state.settings.trust_proxy_headers)
        .map_err(ApiError::forbidden)?;
    let sessions = dashboard.sessions().ok_or_else(unauthenticated)?;
    // Recorded first (every process refuses the cookie within a second), and Keystone asked
    // whatever the database said: either failing leaves the cookie for a retry (503).
    let recorded = sessions.record_end(&state.store, &session).await;
    let revoked = end(sessions, &session).await;
    if revoked.is_ok() && recorded.is_ok() {
        if let Err(error) = sessions.revoked(&state.store, &session).await {
            tracing::warn!(%error, "cannot shorten the record of an ended session; it stays until its tokens expire");
        }
    }
    revoked.map_err(login_failure)?;
    recorded?;
    Ok(clear(empty_response(StatusCode::NO_CONTENT, "")))
}
