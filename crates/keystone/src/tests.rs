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

/// A token of `length` bytes that no other call of this makes (`seed` differs).
fn long_token(seed: usize, length: usize) -> String {
    let prefix = format!("t-{seed}-");
    format!("{prefix}{}", "x".repeat(length - prefix.len()))
}

#[tokio::test]
async fn an_oversized_token_is_refused_without_asking_keystone_and_never_cached() {
    let fake = Arc::new(FakeKeystone::default());
    let at_the_bound = long_token(0, MAX_TOKEN_BYTES);
    add_subject(&fake, &at_the_bound, chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 10);

    let oversized = long_token(1, MAX_TOKEN_BYTES + 1);
    for _ in 0..3 {
        assert_eq!(
            keystone.validate(&oversized).await,
            Err(KeystoneError::InvalidToken)
        );
    }
    // Even one Keystone knows: past the bound a token is worthless.
    let known_but_oversized = long_token(2, MAX_TOKEN_BYTES + 1);
    add_subject(&fake, &known_but_oversized, chrono::Duration::hours(1));
    assert_eq!(
        keystone.validate(&known_but_oversized).await,
        Err(KeystoneError::InvalidToken)
    );
    assert_eq!(fake.validations.load(Ordering::SeqCst), 0);
    assert_eq!(keystone.cached_tokens(), 0);
    assert_eq!(keystone.cached_bytes(), 0);

    // A token of exactly the bound is asked about once, then served from the cache.
    keystone.validate(&at_the_bound).await.unwrap();
    keystone.validate(&at_the_bound).await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), 1);
    assert_eq!(keystone.cached_tokens(), 1);
}

#[tokio::test]
async fn many_distinct_large_tokens_leave_the_cache_bounded_in_entries_and_bytes() {
    let fake = Arc::new(FakeKeystone::default());
    add_subject(&fake, "good", chrono::Duration::hours(1));
    let keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 50);
    keystone.validate("good").await.unwrap();
    let good_bytes = keystone.cached_bytes();

    // 300 made-up tokens of the largest size Keystone is asked about: 2.4 MB of tokens.
    for seed in 0..300 {
        let token = long_token(seed, MAX_TOKEN_BYTES);
        assert_eq!(
            keystone.validate(&token).await,
            Err(KeystoneError::InvalidToken)
        );
    }
    assert_eq!(fake.validations.load(Ordering::SeqCst), 301);
    assert_eq!(keystone.cached_tokens(), 50);
    // Keyed by a digest: each refusal costs the same small amount whatever the token's length.
    let refusal_bytes = entry_bytes(None);
    assert!(refusal_bytes < 256, "{refusal_bytes}");
    assert_eq!(keystone.cached_bytes(), good_bytes + 49 * refusal_bytes);
    assert!(keystone.cached_bytes() < MAX_TOKEN_BYTES * 2);
    // The good token outlived the flood and is still served from the cache.
    keystone.validate("good").await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), 301);
    // A repeated made-up token is served from the cache too.
    let last = long_token(299, MAX_TOKEN_BYTES);
    assert!(keystone.validate(&last).await.is_err());
    assert_eq!(fake.validations.load(Ordering::SeqCst), 301);
}

#[tokio::test]
async fn the_cache_keeps_within_its_byte_bound() {
    let fake = Arc::new(FakeKeystone::default());
    let tokens: Vec<String> = (0..10).map(|number| format!("good-{number}")).collect();
    for token in &tokens {
        add_subject(&fake, token, chrono::Duration::hours(1));
    }
    let mut keystone = keystone(serve(fake.clone()).await, Duration::from_secs(60), 100);
    keystone.validate(&tokens[0]).await.unwrap();
    let one_entry = keystone.cached_bytes();
    // Each validated entry counts its ids and roles on top of the fixed part.
    assert!(one_entry > entry_bytes(None), "{one_entry}");
    keystone
        .cache
        .lock()
        .unwrap()
        .remove(&token_digest(&tokens[0]));
    assert_eq!(keystone.cached_bytes(), 0);

    keystone.max_cached_bytes = 3 * one_entry;
    for token in &tokens {
        keystone.validate(token).await.unwrap();
        assert!(keystone.cached_bytes() <= 3 * one_entry);
    }
    assert_eq!(keystone.cached_tokens(), 3);
    assert_eq!(keystone.cached_bytes(), 3 * one_entry);
    let asked = fake.validations.load(Ordering::SeqCst);
    keystone.validate(&tokens[9]).await.unwrap();
    assert_eq!(fake.validations.load(Ordering::SeqCst), asked);
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
