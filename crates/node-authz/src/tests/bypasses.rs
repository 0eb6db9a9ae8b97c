//! The six bypasses of a naive plugin reproduced in the spike (local-sandbox-spike.md §8), and
//! their relatives.

use super::*;

#[test]
fn bypass_1_lowercase_keys() {
    assert_refused(
        "POST",
        CREATE,
        Some(r#"{"Image":"busybox","hostconfig":{"binds":["/:/host"],"usernsmode":"host"}}"#),
        "not allowed on a magnum-rs local cluster",
    );
    assert_refused(
        "POST",
        CREATE,
        Some(r#"{"Image":"busybox","hostconfig":{"binds":["/:/host"]}}"#),
        "host bind mounts",
    );
    assert_refused(
        "POST",
        CREATE,
        Some(r#"{"Image":"busybox","HOSTCONFIG":{"USERNSMODE":"host"}}"#),
        "--userns",
    );
    assert_refused(
        "POST",
        "/v1.41/services/create",
        Some(
            r#"{"tasktemplate":{"containerspec":{"image":"x","mounts":[{"type":"bind","source":"/","target":"/h"}]}}}"#,
        ),
        "bind mounts",
    );
}

#[test]
fn bypass_2_unicode_folded_keys() {
    for body in [
        "{\"Image\":\"busybox\",\"HostConfig\":{\"Bind\u{17f}\":[\"/:/host\"]}}",
        r#"{"Image":"busybox","HostConfig":{"Bind\u017f":["/:/host"]}}"#,
        "{\"Image\":\"busybox\",\"HostConfig\":{\"\u{212a}ernelMemory\":1}}",
        "{\"Image\":\"busybox\",\"Ho\u{17f}tConfig\":{}}",
    ] {
        assert_refused("POST", CREATE, Some(body), "is not ASCII");
    }
}

#[test]
fn bypass_3_duplicate_keys() {
    for body in [
        r#"{"Image":"busybox","HostConfig":{"Binds":["/:/host"]},"HostConfig":{"Memory":0}}"#,
        r#"{"Image":"busybox","HostConfig":{"Memory":0},"hostConfig":{"Binds":["/:/host"]}}"#,
        r#"{"Image":"busybox","HostConfig":{"Privileged":false,"privileged":true}}"#,
        r#"{"TaskTemplate":{"ContainerSpec":{"Mounts":[]},"ContainerSpec":{"Mounts":[{"Type":"bind"}]}}}"#,
    ] {
        let uri = if body.contains("TaskTemplate") {
            "/v1.41/services/create"
        } else {
            CREATE
        };
        assert_refused("POST", uri, Some(body), "appears more than once");
    }
}

#[test]
fn bypass_4_bodies_dockerd_did_not_forward() {
    // text/plain, ≥ 1 MiB, or (upstream 20.10) chunked or a URI ending in /auth: RequestBody
    // is absent.
    for uri in [
        "/v1.41/services/create",
        "/v1.41/services/web/update?version=3",
        CREATE,
        "/v1.41/containers/create?name=/auth",
        "/v1.41/containers/web/update",
        "/v1.41/containers/web/exec",
        "/v1.41/volumes/create",
        "/v1.41/networks/create",
        "/v1.41/secrets/create",
        "/v1.41/configs/create",
        "/v1.41/swarm/update",
    ] {
        let message = assert_refused(
            "POST",
            uri,
            None,
            "the request body could not be inspected (it must be application/json under 1 MiB)",
        );
        assert!(message.contains("magnum-rs local cluster"), "{message}");
    }
    // Only magnumd may init a swarm; its body is inspected as well.
    assert_refused_for(
        &Caller::UNIX_SOCKET,
        "POST",
        "/v1.41/swarm/init",
        None,
        "the request body could not be inspected",
    );
}

#[test]
fn bypass_5_percent_encoded_routes() {
    let host_bind = r#"{"Image":"busybox","HostConfig":{"Binds":["/:/host"]}}"#;
    assert_refused(
        "POST",
        "/v1.41/containers/%63reate",
        Some(host_bind),
        "host bind mounts",
    );
    assert_refused(
        "POST",
        "/v1.41/containers/%63reate",
        None,
        "could not be inspected",
    );
    assert_refused(
        "POST",
        "/v1.41/%73ervices/create",
        None,
        "could not be inspected",
    );
    assert_refused(
        "POST",
        "/v1.41/containers%2Fcreate",
        Some(host_bind),
        "host bind mounts",
    );
    assert_refused("POST", "/v1.41/plugins%2Fpull", None, "plugin installation");
}

#[test]
fn bypass_6_no_host_path_is_bindable() {
    // Symlinks planted under an "allowed" prefix are invisible to a plugin: no prefix is allowed.
    for bind in [
        "/srv/tenant/a:/t",
        "/srv/tenant/a/root:/host",
        "/srv/x/../../etc:/etc2",
    ] {
        let body = run_with(serde_json::json!({"Binds": [bind]}));
        assert_refused("POST", CREATE, Some(&body), "host bind mounts");
    }
}

#[test]
fn bodies_that_are_not_strict_json_are_refused() {
    for body in [
        &b"{\"Image\":\"busybox\"} {\"HostConfig\":{\"Privileged\":true}}"[..],
        b"{\"Image\":\"busy\xffbox\"}",
        b"{\"Image\":\"busybox\",}",
        b"{'Image':'busybox'}",
    ] {
        let refusal = review(&TENANT, "POST", CREATE, Some(body)).unwrap_err();
        assert!(
            refusal.message().contains("not acceptable JSON"),
            "{refusal}"
        );
    }
}
