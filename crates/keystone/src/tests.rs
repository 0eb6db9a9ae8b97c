//! Unit tests against a small in-process stand-in for Keystone's two token routes; the real
//! Keystone is exercised by magnumd's integration tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::*;

#[derive(Default)]
struct FakeKeystone {
    logins: AtomicUsize,
    validations: AtomicUsize,
    /// Service tokens the fake still accepts.
    service_tokens: Mutex<Vec<String>>,
    /// Subject token → (project, expiry).
    subjects: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    fail_with: Mutex<Option<u16>>,
}

async fn login(State(fake): State<Arc<FakeKeystone>>) -> impl IntoResponse {
    let number = fake.logins.fetch_add(1, Ordering::SeqCst);
    let token = format!("service-{number}");
    fake.service_tokens.lock().unwrap().push(token.clone());
    let expires = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    (
        StatusCode::CREATED,
        [
            ("x-subject-token", token),
            ("content-type", "application/json".to_owned()),
        ],
        json!({"token": {"expires_at": expires}}).to_string(),
    )
}

async fn validate(State(fake): State<Arc<FakeKeystone>>, headers: HeaderMap) -> impl IntoResponse {
    fake.validations.fetch_add(1, Ordering::SeqCst);
    if let Some(code) = *fake.fail_with.lock().unwrap() {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    let service = headers["x-auth-token"].to_str().unwrap().to_owned();
    if !fake.service_tokens.lock().unwrap().contains(&service) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let subject = headers["x-subject-token"].to_str().unwrap();
    match fake.subjects.lock().unwrap().get(subject) {
        Some((project, expires)) => json_response(json!({"token": {
            "expires_at": expires.to_rfc3339(),
            "user": {"id": "u-1"},
            "project": {"id": project, "domain": {"id": "default"}},
            "roles": [{"name": "member"}, {"name": "reader"}],
        }})),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn json_response(body: Value) -> axum::response::Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn serve(fake: Arc<FakeKeystone>) -> String {
    let app = Router::new()
        .route("/v3/auth/tokens", get(validate).post(login))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v3")
}

fn keystone(auth_url: String, cache_for: Duration, max_cached_tokens: usize) -> Keystone {
    Keystone::new(KeystoneSettings {
        auth_url,
        credentials: ServiceCredentials::Password {
            username: "magnum".into(),
            password: "secret".into(),
            user_domain_name: "Default".into(),
            project_name: "service".into(),
            project_domain_name: "Default".into(),
        },
        cache_for,
        max_cached_tokens,
        timeout: Duration::from_secs(5),
        ca_certificates_pem: None,
    })
    .unwrap()
}

fn add_subject(fake: &FakeKeystone, token: &str, expires_in: chrono::Duration) {
    fake.subjects
        .lock()
        .unwrap()
        .insert(token.into(), ("p-1".into(), Utc::now() + expires_in));
}

#[tokio::test]
async fn a_validated_token_is_cached_until_the_cache_time_passes() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "t-1", chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_millis(300), 10);

    let validated = keystone.validate("t-1").await.unwrap();
    assert_eq!(validated.project_id.as_deref(), Some("p-1"));
    assert_eq!(validated.roles, vec!["member", "reader"]);
    keystone.validate("t-1").await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), 1);

    // Revoked in Keystone: still trusted from the cache, refused once the cache time passed.
    fake.subjects.lock().unwrap().remove("t-1");
    keystone.validate("t-1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        keystone.validate("t-1").await,
        Err(KeystoneError::InvalidToken)
    );
    assert_eq!(fake.validations.load(Ordering::SeqCst), 2);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_cache_never_outlives_the_token() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "short", chrono::Duration::milliseconds(300));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(3600), 10);
    keystone.validate("short").await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The fake would still vouch for it; the expiry it gave is what counts.
    assert_eq!(
        keystone.validate("short").await,
        Err(KeystoneError::InvalidToken)
    );
}

#[tokio::test]
async fn unknown_tokens_are_refused_and_the_refusal_remembered() {
    let fake = Arc::new(FakeKeystone::default());
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 2);
    for _ in 0..3 {
        assert_eq!(
            keystone.validate("nope").await,
            Err(KeystoneError::InvalidToken)
        );
    }
    assert_eq!(fake.validations.load(Ordering::SeqCst), 1);
    assert_eq!(keystone.cached_tokens(), 1);
    // A full cache drops refusals before valid tokens.
    add_subject(&fake, "good", chrono::Duration::hours(1));
    keystone.validate("good").await.unwrap();
    for made_up in ["x-1", "x-2", "x-3"] {
        assert!(keystone.validate(made_up).await.is_err());
    }
    let asked = fake.validations.load(Ordering::SeqCst);
    keystone.validate("good").await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), asked);
    // A token no HTTP header can carry never reaches Keystone.
    assert_eq!(
        keystone.validate("bad\ntoken").await,
        Err(KeystoneError::InvalidToken)
    );
    assert_eq!(fake.validations.load(Ordering::SeqCst), asked);
}

#[tokio::test]
async fn a_refused_service_token_means_one_new_login() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "t-1", chrono::Duration::hours(1));
    add_subject(&fake, "t-2", chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 10);
    keystone.validate("t-1").await.unwrap();
    fake.service_tokens.lock().unwrap().clear();
    keystone.validate("t-2").await.unwrap();
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keystone_failing_or_away_is_unavailable_never_valid() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "t-1", chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 10);
    *fake.fail_with.lock().unwrap() = Some(500);
    assert!(matches!(
        keystone.validate("t-1").await,
        Err(KeystoneError::Unavailable(_))
    ));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/v3", listener.local_addr().unwrap());
    drop(listener);
    let away = self::keystone(closed, Duration::from_secs(60), 10);
    assert!(matches!(
        away.validate("t-1").await,
        Err(KeystoneError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_cache_keeps_at_most_its_bound_dropping_the_soonest_to_expire() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "soon", chrono::Duration::minutes(5));
    add_subject(&fake, "later-1", chrono::Duration::hours(1));
    add_subject(&fake, "later-2", chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(3600), 2);
    for token in ["soon", "later-1", "later-2"] {
        keystone.validate(token).await.unwrap();
    }
    assert_eq!(keystone.cached_tokens(), 2);
    let asked = fake.validations.load(Ordering::SeqCst);
    keystone.validate("later-1").await.unwrap();
    keystone.validate("later-2").await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), asked);
    keystone.validate("soon").await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), asked + 1);
}

#[test]
fn credentials_files_read_as_password_or_application_credential() {
    let password: ServiceCredentials = serde_json::from_value(json!({
        "username": "magnum", "password": "pw", "project_name": "service"
    }))
    .unwrap();
    assert!(matches!(
        &password,
        ServiceCredentials::Password { user_domain_name, .. } if user_domain_name == "Default"
    ));
    assert!(!format!("{password:?}").contains("pw"));
    let application: ServiceCredentials = serde_json::from_value(json!({
        "application_credential_id": "id", "application_credential_secret": "s"
    }))
    .unwrap();
    assert_eq!(
        application.login_body()["auth"]["identity"]["methods"][0],
        "application_credential"
    );
}
