//! Methods, routes, URIs, versions and image builds.

use super::*;

#[test]
fn reads_are_allowed() {
    for uri in [
        "/_ping",
        "/v1.41/version",
        "/v1.41/info",
        "/v1.41/containers/json?all=1",
        "/v1.41/containers/web/json",
        "/v1.41/containers/web/logs?stdout=1",
        "/v1.41/containers/web/archive?path=/etc",
        "/v1.41/images/json",
        "/v1.41/images/magnum/local-node:1/json",
        "/v1.41/services",
        "/v1.41/nodes",
        "/v1.41/swarm/unlockkey",
        "/v1.41/plugins",
        "/v1.41/events?filters=%7B%7D",
        "/v1.41/system/df",
    ] {
        assert_allowed("GET", uri, None);
    }
    assert_allowed("HEAD", "/_ping", None);
    assert_allowed("HEAD", "/v1.41/containers/web/archive?path=/etc", None);
}

#[test]
fn the_debug_endpoints_are_refused() {
    assert_refused(
        "GET",
        "/debug/pprof/profile?seconds=30",
        None,
        "debug endpoints",
    );
    assert_refused("GET", "/debug/vars", None, "debug endpoints");
    assert_refused("POST", "/debug/pprof/heap", None, "not on the list");
}

#[test]
fn unknown_methods_are_refused() {
    for method in ["OPTIONS", "PATCH", "TRACE", "post", "Get", ""] {
        assert_refused(method, "/v1.41/containers/json", None, "HTTP method");
    }
}

#[test]
fn unknown_write_routes_are_refused() {
    for (method, uri) in [
        ("POST", "/v1.41/containers/web/checkpoints"),
        ("POST", "/v1.41/containers/web/copy"),
        ("POST", "/v1.41/containers/web/frobnicate"),
        ("POST", "/v1.41/containers/start"),
        ("POST", "/v1.41/Containers/create"),
        ("POST", "/v1.41/images/search"),
        ("POST", "/v1.41/volumes/data"),
        ("PUT", "/v1.41/volumes/data"),
        ("PUT", "/v1.41/containers/create"),
        ("DELETE", "/v1.41/containers"),
        ("DELETE", "/v1.41/services/a/b"),
        ("DELETE", "/v1.41/swarm"),
        ("POST", "/"),
        ("POST", "/v1.41"),
    ] {
        let message = assert_refused(
            method,
            uri,
            None,
            "is not allowed on a magnum-rs local cluster",
        );
        assert!(
            message.contains("not on the list"),
            "{method} {uri}: {message}"
        );
    }
}

#[test]
fn plugin_installation_is_refused() {
    for (method, uri) in [
        ("POST", "/v1.41/plugins/pull?remote=vieux/sshfs"),
        ("POST", "/v1.41/plugins/create?name=x"),
        ("POST", "/v1.41/plugins/vieux/sshfs:latest/enable"),
        ("POST", "/v1.41/plugins/magnum-authz/disable"),
        ("POST", "/v1.41/plugins/vieux/sshfs/upgrade"),
        ("POST", "/v1.41/plugins/vieux/sshfs/set"),
        ("POST", "/v1.41/plugins/vieux/sshfs/push"),
        ("DELETE", "/v1.41/plugins/vieux/sshfs"),
        ("PUT", "/v1.41/plugins/x"),
    ] {
        assert_refused(
            method,
            uri,
            None,
            "plugin installation and management is not allowed on a magnum-rs local cluster",
        );
    }
}

#[test]
fn image_builds_are_refused() {
    // docker build with DOCKER_BUILDKIT=0, as CLI 28 sends it: refused like any other build,
    // since its options may also travel in a form body the plugin never sees.
    let classic = "/v1.41/build?buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0\
                   &cpusetcpus=&cpusetmems=&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0\
                   &memswap=0&networkmode=default&rm=1&shmsize=0&t=app%3A1&target=&ulimits=null&version=1";
    let message = assert_refused("POST", classic, None, "image builds");
    assert_eq!(
        message,
        "image builds are not allowed on a magnum-rs local cluster (POST /build / docker build: \
         build options can reach dockerd in a form body the plugin cannot see); build the image \
         elsewhere and docker load it"
    );
    for uri in [
        "/v1.41/build",
        "/build",
        "/v1.41/build?t=x",
        "/v1.41/build?version=2&session=x",
        "/v1.41/build?cgroupparent=/",
        "/v1.41/build?networkmode=host",
        "/v1.41/build?remote=http://10.0.0.5/ctx.tar",
        "/v1.41/build?ulimits=%5B%7B%22Name%22%3A%22rtprio%22%7D%5D",
        "/v1.41/build/",
        "/v1.41/%62uild",
        "/v1.41/images/../build",
    ] {
        assert_refused("POST", uri, None, "image builds are not allowed");
        assert_refused("POST", uri, Some("{}"), "image builds are not allowed");
    }
    // Not even magnumd builds on a node.
    assert_refused_for(
        &Caller::UNIX_SOCKET,
        "POST",
        "/v1.41/build",
        None,
        "image builds",
    );
    // The build cache may still be cleaned up, and a build (on another daemon) cancelled.
    assert_allowed("POST", "/v1.41/build/prune?all=1", None);
    assert_allowed("POST", "/v1.41/build/cancel?id=x", None);
    assert_allowed("GET", "/v1.41/build/prune", None);
}

#[test]
fn buildkit_is_refused() {
    for uri in ["/v1.41/session", "/session", "/grpc", "/v1.41/grpc"] {
        let message = assert_refused("POST", uri, None, "BuildKit is not allowed");
        assert!(
            message.ends_with("; build the image elsewhere and docker load it"),
            "{message}"
        );
    }
}

#[test]
fn api_versions_below_1_24_are_refused() {
    let message = assert_refused(
        "POST",
        "/v1.23/containers/web/start",
        Some(r#"{"Binds":["/:/host"]}"#),
        "1.23",
    );
    assert_eq!(
        message,
        "Docker API version 1.23 is not allowed on a magnum-rs local cluster: versions below 1.24 accept a \
         HostConfig on container start; use API 1.24 or newer"
    );
    assert_refused("POST", "/v1.23/containers/web/start", None, "below 1.24");
    assert_refused("GET", "/v1.12/info", None, "below 1.24");
    assert_allowed("POST", "/v1.24/containers/web/start", None);
    assert_allowed("POST", "/v1.41/containers/web/start", None);
    assert_allowed("POST", "/v1.43/containers/web/start", None);
}

#[test]
fn normalised_paths_reach_the_right_rule() {
    let privileged = run_with(serde_json::json!({"Privileged": true}));
    for uri in [
        "/v1.41/containers/create/",
        "/v1.41//containers/./create",
        "/v1.41/containers/web/../create",
        "/v1.41/images/../containers/create",
        "/v1.41/containers%2Fcreate",
        "/v1.41/containers%2fcreate",
        "/v1.41/%63ontainers/%63reate",
        "/%761.41/containers/create",
        "//containers//create",
        "/v1.41/containers/create?name=x/auth",
    ] {
        assert_refused("POST", uri, Some(&privileged), "privileged containers");
        assert_refused("POST", uri, None, "could not be inspected");
    }
    // `..` cannot climb above the root, nor hide the version from the check.
    assert_refused(
        "POST",
        "/../../v1.23/containers/x/start",
        None,
        "below 1.24",
    );
    assert_refused(
        "POST",
        "/v1.41/containers/x/..%2F..%2F..%2Fplugins/pull",
        None,
        "plugin installation",
    );
}

#[test]
fn malformed_uris_are_refused() {
    for uri in [
        "http://dockerd/v1.41/containers/create",
        "v1.41/containers/create",
        "/v1.41/containers/%zz",
        "/v1.41/containers/%",
        "/v1.41/containers/web%00/start",
        "/v1.41/containers/web%0a/start",
        "/v1.41/containers/web\u{7}/start",
        "/v1.41/containers/%c3%28/start",
    ] {
        assert_refused("POST", uri, None, "the request URI");
    }
}

#[test]
fn names_with_slashes_keep_their_action() {
    // `{name:.*}`: the action is the last segment.
    assert_allowed("POST", "/v1.41/containers/team/web/stop", None);
    assert_allowed("POST", "/v1.41/containers/create/start", None);
    assert_refused(
        "POST",
        "/v1.41/containers/team/web/update",
        Some(r#"{"Devices":[{"PathOnHost":"/dev/sda"}]}"#),
        "--device",
    );
    assert_refused(
        "POST",
        "/v1.41/containers/team/create/exec",
        Some(r#"{"Cmd":["sh"],"Privileged":true}"#),
        "privileged exec",
    );
}
