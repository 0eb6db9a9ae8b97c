//! Volumes, networks, secrets, configs and images.

use serde_json::json;

use super::*;

const VOLUMES_CREATE: &str = "/v1.41/volumes/create";
const NETWORKS_CREATE: &str = "/v1.41/networks/create";

#[test]
fn docker_volume_create_is_allowed() {
    assert_allowed(
        "POST",
        VOLUMES_CREATE,
        Some(r#"{"Driver":"local","DriverOpts":{},"Labels":{},"Name":"data"}"#),
    );
    assert_allowed("POST", VOLUMES_CREATE, Some(r#"{"Name":"data"}"#));
    assert_allowed(
        "POST",
        VOLUMES_CREATE,
        Some(r#"{"Driver":"","DriverOpts":null,"Labels":{"a":"b"},"Name":""}"#),
    );
    assert_allowed("POST", "/v1.41/volumes/prune", None);
    assert_allowed("DELETE", "/v1.41/volumes/data?force=1", None);
}

#[test]
fn volume_drivers_and_driver_options_are_refused() {
    let message = assert_refused(
        "POST",
        VOLUMES_CREATE,
        Some(
            r#"{"Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/"},"Name":"root"}"#,
        ),
        "DriverOpts / docker volume create --opt",
    );
    assert!(
        message.starts_with("volume driver options are not allowed on a magnum-rs local cluster"),
        "{message}"
    );
    assert_refused(
        "POST",
        VOLUMES_CREATE,
        Some(r#"{"DriverOpts":{"device":"tmpfs"}}"#),
        "DriverOpts",
    );
    assert_refused(
        "POST",
        VOLUMES_CREATE,
        Some(r#"{"Driver":"sshfs","Name":"x"}"#),
        "volume driver \"sshfs\"",
    );
    assert_refused(
        "POST",
        VOLUMES_CREATE,
        Some(r#"{"Driver":"Local"}"#),
        "volume driver \"Local\"",
    );
    assert_refused("POST", VOLUMES_CREATE, None, "could not be inspected");
}

#[test]
fn bridge_and_overlay_networks_are_allowed() {
    let bridge = json!({
        "Name": "backend", "CheckDuplicate": true, "Driver": "bridge", "Scope": "",
        "EnableIPv6": false, "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.10.0.0/24"}]},
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigOnly": false,
        "ConfigFrom": null, "Options": {}, "Labels": {}
    });
    assert_allowed("POST", NETWORKS_CREATE, Some(&bridge.to_string()));
    assert_allowed(
        "POST",
        NETWORKS_CREATE,
        Some(r#"{"Name":"web","Driver":"overlay","Attachable":true,"IPAM":{"Driver":"default"}}"#),
    );
    assert_allowed("POST", NETWORKS_CREATE, Some(r#"{"Name":"plain"}"#));
    assert_allowed(
        "POST",
        NETWORKS_CREATE,
        Some(r#"{"Name":"n","Driver":"bridge","ConfigFrom":{"Network":"cfg"}}"#),
    );
    assert_allowed(
        "POST",
        "/v1.41/networks/backend/connect",
        Some(r#"{"Container":"web","EndpointConfig":{}}"#),
    );
    assert_allowed(
        "POST",
        "/v1.41/networks/backend/disconnect",
        Some(r#"{"Container":"web","Force":false}"#),
    );
    assert_allowed("POST", "/v1.41/networks/prune", None);
    assert_allowed("DELETE", "/v1.41/networks/backend", None);
}

#[test]
fn other_network_and_ipam_drivers_are_refused() {
    for driver in ["macvlan", "ipvlan", "host", "weave", "Bridge"] {
        let body =
            json!({"Name": "n", "Driver": driver, "Options": {"parent": "eth0"}}).to_string();
        assert_refused(
            "POST",
            NETWORKS_CREATE,
            Some(&body),
            "docker network create --driver",
        );
    }
    assert_refused(
        "POST",
        NETWORKS_CREATE,
        Some(r#"{"Name":"n","Driver":"bridge","IPAM":{"Driver":"infoblox"}}"#),
        "IPAM driver \"infoblox\"",
    );
    assert_refused("POST", NETWORKS_CREATE, None, "could not be inspected");
}

#[test]
fn secrets_and_configs_without_drivers_are_allowed() {
    let secret = r#"{"Name":"db-password","Labels":{},"Data":"c2VjcmV0"}"#;
    assert_allowed("POST", "/v1.41/secrets/create", Some(secret));
    assert_allowed(
        "POST",
        "/v1.41/secrets/create",
        Some(r#"{"Name":"s","Data":"eA==","Templating":{"Name":"golang"}}"#),
    );
    assert_allowed(
        "POST",
        "/v1.41/secrets/abc/update?version=3",
        Some(r#"{"Name":"s","Labels":{"a":"b"},"Data":"eA=="}"#),
    );
    assert_allowed(
        "POST",
        "/v1.41/configs/create",
        Some(r#"{"Name":"nginx.conf","Labels":{},"Data":"eA=="}"#),
    );
    assert_allowed("DELETE", "/v1.41/secrets/abc", None);
    assert_allowed("DELETE", "/v1.41/configs/abc", None);
}

#[test]
fn secret_and_config_drivers_are_refused() {
    assert_refused(
        "POST",
        "/v1.41/secrets/create",
        Some(r#"{"Name":"s","Driver":{"Name":"vault","Options":{}}}"#),
        "Driver / docker secret create --driver",
    );
    assert_refused(
        "POST",
        "/v1.41/secrets/create",
        Some(r#"{"Name":"s","Templating":{"Name":"my-plugin"}}"#),
        "template driver \"my-plugin\"",
    );
    assert_refused(
        "POST",
        "/v1.41/configs/create",
        Some(r#"{"Name":"c","Driver":{"Name":"x"}}"#),
        "Driver",
    );
    assert_refused(
        "POST",
        "/v1.41/configs/abc/update",
        Some(r#"{"Templating":{"Name":"x"}}"#),
        "Templating",
    );
    assert_refused(
        "POST",
        "/v1.41/secrets/create",
        None,
        "could not be inspected",
    );
    assert_refused(
        "POST",
        "/v1.41/configs/create",
        None,
        "could not be inspected",
    );
}

#[test]
fn image_writes_are_allowed_with_slashes_in_names() {
    for uri in [
        "/v1.41/images/create?fromSrc=-&message=&repo=magnum%2Flocal-node&tag=1",
        "/v1.41/images/create?fromImage=busybox&tag=latest",
        "/v1.41/images/load?quiet=1",
        "/v1.41/images/prune",
        "/v1.41/images/library/busybox/tag?repo=registry.local%3A5000%2Fbusybox&tag=1",
        "/v1.41/images/registry.local:5000/team/app/push?tag=1",
        "/v1.41/auth",
        "/v1.41/build/prune?all=1",
        "/v1.41/build/cancel?id=x",
    ] {
        assert_allowed("POST", uri, None);
    }
    assert_allowed("DELETE", "/v1.41/images/magnum/local-node:1", None);
    assert_allowed("DELETE", "/v1.41/images/sha256:0123abcd?force=1", None);
}
