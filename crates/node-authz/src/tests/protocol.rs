//! The plugin protocol documents.

use serde_json::{json, Value};

use crate::handle_plugin_call;
use crate::protocol::plugin_call;

/// Standard base64 with padding, as Go encodes `[]byte` (test-only encoder).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                encoded.push(char::from(
                    ALPHABET[(word >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// An AuthZReq as dockerd 20.10 encodes it (omitempty fields left out when empty).
pub(super) fn authz_request(method: &str, uri: &str, body: Option<&str>) -> Vec<u8> {
    let mut document = json!({
        "User": "admin",
        "UserAuthNMethod": "TLS",
        "RequestMethod": method,
        "RequestUri": uri,
        "RequestHeaders": {"Content-Type": "application/json", "User-Agent": "Docker-Client/28.2.2 (linux)"}
    });
    if let Some(body) = body {
        document["RequestBody"] = json!(base64(body.as_bytes()));
    }
    let mut encoded = serde_json::to_vec(&document).unwrap();
    encoded.push(b'\n'); // Go's json.Encoder ends each document with a newline.
    encoded
}

/// An AuthZReq for a request on the node's unix socket: dockerd leaves out `User` and
/// `UserAuthNMethod` (both empty, both `omitempty`).
fn unix_socket_authz_request(method: &str, uri: &str, body: Option<&str>) -> Vec<u8> {
    let mut document: Value = serde_json::from_slice(&authz_request(method, uri, body)).unwrap();
    let fields = document.as_object_mut().unwrap();
    fields.remove("User");
    fields.remove("UserAuthNMethod");
    serde_json::to_vec(&document).unwrap()
}

fn call(path: &str, body: &[u8]) -> (u16, Value) {
    let (status, response) = handle_plugin_call(path, body);
    (status, serde_json::from_slice(&response).unwrap())
}

#[test]
fn base64_helper_matches_known_vectors() {
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}

#[test]
fn activate_announces_authz() {
    assert_eq!(
        call("/Plugin.Activate", b""),
        (200, json!({"Implements": ["authz"]}))
    );
}

#[test]
fn authz_requests_are_answered() {
    let allowed = authz_request("GET", "/v1.41/containers/json", None);
    assert_eq!(
        call("/AuthZPlugin.AuthZReq", &allowed),
        (200, json!({"Allow": true}))
    );

    let run = r#"{"Image":"busybox","HostConfig":{"Binds":["data:/data"]}}"#;
    let allowed = authz_request("POST", "/v1.41/containers/create", Some(run));
    assert_eq!(
        call("/AuthZPlugin.AuthZReq", &allowed),
        (200, json!({"Allow": true}))
    );

    let privileged = r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#;
    let refused = authz_request("POST", "/v1.41/containers/create", Some(privileged));
    let (status, answer) = call("/AuthZPlugin.AuthZReq", &refused);
    assert_eq!(status, 200);
    assert_eq!(answer["Allow"], json!(false));
    assert_eq!(
        answer["Msg"],
        json!("privileged containers are not allowed on a magnum-rs local cluster (HostConfig.Privileged / --privileged)")
    );
}

#[test]
fn authz_responses_are_allowed() {
    let response =
        json!({"RequestMethod": "GET", "RequestUri": "/info", "ResponseStatusCode": 200});
    assert_eq!(
        call("/AuthZPlugin.AuthZRes", response.to_string().as_bytes()),
        (200, json!({"Allow": true}))
    );
}

#[test]
fn unknown_calls_are_not_found() {
    for path in [
        "/VolumeDriver.Create",
        "/Plugin.Activate/",
        "/AuthZPlugin.AuthZReq?x",
        "/",
    ] {
        assert_eq!(handle_plugin_call(path, b"{}").0, 404, "{path}");
    }
}

#[track_caller]
fn assert_denied(request: &[u8], expected: &str) {
    let (status, answer) = call("/AuthZPlugin.AuthZReq", request);
    assert_eq!(status, 200);
    assert_eq!(answer["Allow"], json!(false), "{answer}");
    let message = answer["Msg"].as_str().unwrap();
    assert!(
        message.contains(expected),
        "{message:?} does not contain {expected:?}"
    );
}

#[test]
fn unusable_authz_requests_are_denied() {
    let complete = authz_request("GET", "/v1.41/info", None);
    assert_denied(&complete[..complete.len() / 2], "could not be read");
    assert_denied(b"", "could not be read");
    assert_denied(b"[]", "no RequestMethod");
    assert_denied(b"null", "could not be read");
    assert_denied(
        b"{\"RequestMethod\":\"GET\",\"RequestUri\":\"/info\",\"RequestUri\":\"/x\"}",
        "could not be read",
    );
    assert_denied(
        br#"{"RequestMethod":"GET","RequestURI":"/v1.41/info"}"#,
        "no RequestUri",
    );
    assert_denied(
        br#"{"RequestMethod":"GET","RequestUri":""}"#,
        "no RequestUri",
    );
    assert_denied(br#"{"RequestUri":"/v1.41/info"}"#, "no RequestMethod");
    assert_denied(
        br#"{"RequestMethod":"GET","RequestUri":"/info","RequestBody":5}"#,
        "could not be read",
    );
}

#[test]
fn invalid_base64_bodies_are_denied() {
    for encoded in ["e30=x", "%%%%", "e3 0=", "e30==", "e31="] {
        let request = json!({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create", "RequestBody": encoded});
        assert_denied(request.to_string().as_bytes(), "not valid base64");
    }
    // Even on a route that does not look at bodies: the document is corrupt.
    let request = json!({"RequestMethod": "GET", "RequestUri": "/info", "RequestBody": "!"});
    assert_denied(request.to_string().as_bytes(), "not valid base64");
}

#[test]
fn unpadded_base64_is_accepted() {
    // `e30` is `{}` without padding: a create body without options.
    let request = json!({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create", "RequestBody": "e30"});
    assert_eq!(
        call("/AuthZPlugin.AuthZReq", request.to_string().as_bytes()),
        (200, json!({"Allow": true}))
    );
}

#[test]
fn a_null_request_body_means_not_forwarded() {
    let request = json!({"RequestMethod": "POST", "RequestUri": "/v1.41/services/create", "RequestBody": null});
    assert_denied(request.to_string().as_bytes(), "could not be inspected");
}

const SWARM_JOIN: &str = r#"{"ListenAddr":"0.0.0.0:2377","RemoteAddrs":["10.88.0.2:2377"],"JoinToken":"SWMTKN-1-abc-def"}"#;

#[test]
fn the_authentication_method_reaches_the_review() {
    let over_tls = authz_request("POST", "/v1.41/swarm/join", Some(SWARM_JOIN));
    assert_denied(
        &over_tls,
        "joining, leaving or creating a swarm is reserved to magnum-rs on a local cluster \
         (POST /swarm/join); resize the cluster through the Magnum API instead",
    );

    let over_the_socket = unix_socket_authz_request("POST", "/v1.41/swarm/join", Some(SWARM_JOIN));
    assert_eq!(
        call("/AuthZPlugin.AuthZReq", &over_the_socket),
        (200, json!({"Allow": true}))
    );
    let leave = unix_socket_authz_request("POST", "/v1.41/swarm/leave?force=1", None);
    assert_eq!(
        call("/AuthZPlugin.AuthZReq", &leave),
        (200, json!({"Allow": true}))
    );

    // An empty certificate name is still TLS; an empty method is the socket, whatever the user.
    for (user, method, allowed) in [
        (json!(""), json!("TLS"), false),
        (json!(null), json!("TLS"), false),
        (json!("admin"), json!(""), true),
        (json!("admin"), json!(null), true),
    ] {
        let request = json!({
            "User": user, "UserAuthNMethod": method,
            "RequestMethod": "POST", "RequestUri": "/v1.41/swarm/leave"
        });
        let (status, answer) = call("/AuthZPlugin.AuthZReq", request.to_string().as_bytes());
        assert_eq!(status, 200);
        assert_eq!(answer["Allow"], json!(allowed), "{request}: {answer}");
    }
}

#[test]
fn a_caller_dockerd_could_not_have_sent_is_denied() {
    for request in [
        json!({"UserAuthNMethod": 1, "RequestMethod": "GET", "RequestUri": "/info"}),
        json!({"UserAuthNMethod": ["TLS"], "RequestMethod": "GET", "RequestUri": "/info"}),
        json!({"User": {}, "RequestMethod": "GET", "RequestUri": "/info"}),
    ] {
        assert_denied(request.to_string().as_bytes(), "could not be read");
    }
    assert_denied(
        br#"{"UserAuthNMethod":"","UserAuthNMethod":"TLS","RequestMethod":"GET","RequestUri":"/info"}"#,
        "could not be read",
    );
}

#[test]
fn refusal_log_lines_name_the_caller() {
    let over_tls = authz_request("POST", "/v1.41/swarm/join", Some(SWARM_JOIN));
    let line = plugin_call("/AuthZPlugin.AuthZReq", &over_tls)
        .refusal_log
        .unwrap();
    assert!(
        line.starts_with(
            "POST /v1.41/swarm/join (TLS user \"admin\"): joining, leaving or creating a swarm"
        ),
        "{line}"
    );

    let privileged = r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#;
    let over_the_socket =
        unix_socket_authz_request("POST", "/v1.41/containers/create", Some(privileged));
    let line = plugin_call("/AuthZPlugin.AuthZReq", &over_the_socket)
        .refusal_log
        .unwrap();
    assert!(
        line.starts_with("POST /v1.41/containers/create (unix socket): privileged containers"),
        "{line}"
    );

    // The certificate's name is the tenant's choice: escaped, never raw.
    let request = json!({
        "User": "evil\nrefused GET /forged", "UserAuthNMethod": "TLS",
        "RequestMethod": "POST", "RequestUri": "/v1.41/swarm/leave"
    });
    let line = plugin_call("/AuthZPlugin.AuthZReq", request.to_string().as_bytes())
        .refusal_log
        .unwrap();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("(TLS user \"evil\\nrefused GET /forged\")"),
        "{line}"
    );

    let allowed = authz_request("GET", "/v1.41/info", None);
    assert_eq!(
        plugin_call("/AuthZPlugin.AuthZReq", &allowed).refusal_log,
        None
    );
}
