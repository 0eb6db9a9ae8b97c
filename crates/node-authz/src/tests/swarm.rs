//! Services, swarm init / join / leave / update and node updates.

use serde_json::json;

use super::*;

const SERVICES_CREATE: &str = "/v1.41/services/create";
const SERVICE_UPDATE: &str = "/v1.41/services/k3o2vzrjv9ub/update?version=12";

#[test]
fn a_replicated_dnsrr_service_with_a_host_port_is_allowed() {
    let body = docker_service_create_body().to_string();
    assert_allowed("POST", SERVICES_CREATE, Some(&body));
    assert_allowed("POST", SERVICE_UPDATE, Some(&body));
}

#[test]
fn everyday_service_options_are_allowed() {
    for fields in [
        json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]}),
        json!({"Mounts": [{"Type": "tmpfs", "Target": "/t"}]}),
        json!({"CapabilityAdd": ["NET_BIND_SERVICE"], "CapabilityDrop": ["ALL"]}),
        json!({"Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": true}}),
        json!({"Privileges": {"Seccomp": {"Mode": "default"}, "AppArmor": {"Mode": "default"}}}),
        json!({"Privileges": null}),
        json!({"Isolation": ""}),
        json!({"Sysctls": {"net.core.somaxconn": "1024"}}),
        json!({"OomScoreAdj": 100}),
    ] {
        assert_allowed(
            "POST",
            SERVICES_CREATE,
            Some(&service_with_container_spec(fields)),
        );
    }
    for fields in [
        json!({"LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}}}),
        json!({"LogDriver": null}),
        json!({"Networks": [{"Target": "q3e8b3k1mhqz", "Aliases": ["web"]}]}),
        json!({"NetworkAttachmentSpec": {"ContainerID": "abc"}}),
        json!({"Runtime": ""}),
    ] {
        assert_allowed(
            "POST",
            SERVICES_CREATE,
            Some(&service_with_task_template(fields)),
        );
    }
}

#[test]
fn service_bind_mounts_and_volume_driver_options_are_refused() {
    let message = assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(
            json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}),
        )),
        "bind mounts are not allowed",
    );
    assert!(
        message.contains("TaskTemplate.ContainerSpec.Mounts Type=bind"),
        "{message}"
    );
    assert_refused(
        "POST",
        SERVICE_UPDATE,
        Some(&service_with_container_spec(
            json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d",
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "bind", "device": "/etc"}}}}]}),
        )),
        "volume driver options",
    );
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(
            json!({"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/x"}]}),
        )),
        "mount type \"npipe\"",
    );
}

#[test]
fn service_capabilities_outside_the_default_set_are_refused() {
    for capabilities in [
        json!(["CAP_SYS_ADMIN"]),
        json!(["ALL"]),
        json!(["net_admin"]),
    ] {
        assert_refused(
            "POST",
            SERVICES_CREATE,
            Some(&service_with_container_spec(
                json!({"CapabilityAdd": capabilities}),
            )),
            "TaskTemplate.ContainerSpec.CapabilityAdd / --cap-add",
        );
    }
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(
            json!({"Capabilities": ["CAP_SYS_ADMIN"]}),
        )),
        "Capabilities",
    );
}

#[test]
fn service_privileges_are_refused() {
    for (privileges, field) in [
        (
            json!({"CredentialSpec": {"File": "spec.json"}}),
            "CredentialSpec",
        ),
        (
            json!({"SELinuxContext": {"Disable": true}}),
            "SELinuxContext",
        ),
        (
            json!({"SELinuxContext": {"Disable": false, "User": "", "Role": "", "Type": "", "Level": ""}}),
            "SELinuxContext",
        ),
        (json!({"Seccomp": {"Mode": "unconfined"}}), "Seccomp"),
        (
            json!({"Seccomp": {"Mode": "custom", "Profile": "e30="}}),
            "Seccomp",
        ),
        (json!({"AppArmor": {"Mode": "disabled"}}), "AppArmor"),
        (json!({"NoNewPrivileges": "no"}), "NoNewPrivileges"),
        (json!({"Unknown": {}}), "unknown"),
    ] {
        let message = assert_refused(
            "POST",
            SERVICES_CREATE,
            Some(&service_with_container_spec(
                json!({"Privileges": privileges}),
            )),
            "only NoNewPrivileges may be set",
        );
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn service_isolation_plugins_runtimes_log_drivers_and_host_network_are_refused() {
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(json!({"Isolation": "hyperv"}))),
        "--isolation",
    );
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(json!({"OomScoreAdj": -500}))),
        "--oom-score-adj",
    );
    for (fields, expected) in [
        (
            json!({"PluginSpec": {"Name": "vieux/sshfs", "Remote": "vieux/sshfs:latest"}}),
            "TaskTemplate.PluginSpec",
        ),
        (json!({"PluginSpec": {}}), "TaskTemplate.PluginSpec"),
        (json!({"Runtime": "plugin"}), "TaskTemplate.Runtime"),
        (json!({"Runtime": "attachment"}), "TaskTemplate.Runtime"),
        (
            json!({"LogDriver": {"Name": "gelf", "Options": {"gelf-address": "udp://10.0.0.1:12201"}}}),
            "TaskTemplate.LogDriver.Name / --log-driver",
        ),
        (
            json!({"Networks": [{"Target": "host"}]}),
            "TaskTemplate.Networks Target=host",
        ),
    ] {
        assert_refused(
            "POST",
            SERVICES_CREATE,
            Some(&service_with_task_template(fields)),
            expected,
        );
    }
    let mut body = docker_service_create_body();
    body["Networks"] = json!([{"Target": "host"}]);
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&body.to_string()),
        "(Networks Target=host",
    );
}

#[test]
fn service_bodies_must_be_seen() {
    // Bypass 4: a text/plain services/create is decoded by dockerd but never forwarded.
    let message = assert_refused("POST", SERVICES_CREATE, None, "could not be inspected");
    assert!(message.starts_with(
        "the request body could not be inspected (it must be application/json under 1 MiB)"
    ));
    assert_refused("POST", SERVICE_UPDATE, None, "could not be inspected");
    assert_refused("POST", SERVICES_CREATE, Some(""), "could not be inspected");
}

/// `docker swarm init` as magnumd runs it.
fn swarm_init_body() -> serde_json::Value {
    json!({
        "ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.88.0.2", "DataPathAddr": "",
        "DataPathPort": 0, "ForceNewCluster": false,
        "Spec": {
            "Labels": null, "Orchestration": {}, "Raft": {"ElectionTick": 10, "HeartbeatTick": 1},
            "Dispatcher": {}, "CAConfig": {}, "TaskDefaults": {}, "EncryptionConfig": {"AutoLockManagers": false}
        },
        "AutoLockManagers": false, "Availability": "active", "DefaultAddrPool": null, "SubnetSize": 0
    })
}

/// `docker swarm join` as magnumd runs it.
const SWARM_JOIN_BODY: &str = r#"{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"10.88.0.3",
    "DataPathAddr":"","RemoteAddrs":["10.88.0.2:2377"],"JoinToken":"SWMTKN-1-abc-def",
    "Availability":"active"}"#;

#[test]
fn magnumd_inits_joins_and_leaves_over_the_unix_socket() {
    let magnumd = Caller::UNIX_SOCKET;
    let init = swarm_init_body();
    assert_allowed_for(
        &magnumd,
        "POST",
        "/v1.41/swarm/init",
        Some(&init.to_string()),
    );
    assert_allowed_for(&magnumd, "POST", "/v1.41/swarm/join", Some(SWARM_JOIN_BODY));
    assert_allowed_for(&magnumd, "POST", "/v1.41/swarm/leave?force=1", None);
    assert_allowed_for(&magnumd, "POST", "/swarm/leave", None);

    // The body rules still apply to magnumd's swarm init.
    assert_refused_for(
        &magnumd,
        "POST",
        "/v1.41/swarm/init",
        None,
        "could not be inspected",
    );
    let mut syslog_default = init.clone();
    syslog_default["Spec"]["TaskDefaults"] = json!({"LogDriver": {"Name": "syslog"}});
    assert_refused_for(
        &magnumd,
        "POST",
        "/v1.41/swarm/init",
        Some(&syslog_default.to_string()),
        "Spec.TaskDefaults.LogDriver.Name",
    );
}

#[test]
fn tenants_cannot_init_join_or_leave_a_swarm() {
    let init = swarm_init_body().to_string();
    for (uri, body, route) in [
        ("/v1.41/swarm/init", Some(init.as_str()), "POST /swarm/init"),
        (
            "/v1.41/swarm/join",
            Some(SWARM_JOIN_BODY),
            "POST /swarm/join",
        ),
        ("/v1.41/swarm/leave?force=1", None, "POST /swarm/leave"),
        ("/v1.41/swarm/leave", None, "POST /swarm/leave"),
        // Spellings that route to the same handlers.
        ("/swarm/join", Some(SWARM_JOIN_BODY), "POST /swarm/join"),
        (
            "/v1.41/swarm/%6Aoin",
            Some(SWARM_JOIN_BODY),
            "POST /swarm/join",
        ),
        ("/v1.41/nodes/../swarm/leave/", None, "POST /swarm/leave"),
        // Refused before the body is looked at.
        ("/v1.41/swarm/init", None, "POST /swarm/init"),
    ] {
        let message = assert_refused("POST", uri, body, "reserved to magnum-rs");
        assert_eq!(
            message,
            format!(
                "joining, leaving or creating a swarm is reserved to magnum-rs on a local cluster \
                 ({route}); resize the cluster through the Magnum API instead"
            )
        );
    }
}

#[test]
fn swarm_membership_depends_on_the_authentication_method_not_the_user() {
    // A certificate with an empty common name is still a TLS client.
    for caller in [
        Caller::tls(""),
        Caller::tls("admin"),
        // A method a later dockerd might add is no more trusted than TLS.
        Caller {
            authentication_method: "krb",
            user: "",
        },
    ] {
        assert_refused_for(
            &caller,
            "POST",
            "/v1.41/swarm/join",
            Some(SWARM_JOIN_BODY),
            "(POST /swarm/join)",
        );
        assert_refused_for(
            &caller,
            "POST",
            "/v1.41/swarm/leave?force=1",
            None,
            "(POST /swarm/leave)",
        );
    }
    // A user name without a method is the unix socket as dockerd reports it.
    let named_without_method = Caller {
        authentication_method: "",
        user: "admin",
    };
    assert_allowed_for(&named_without_method, "POST", "/v1.41/swarm/leave", None);
    assert!(Caller::UNIX_SOCKET.is_unix_socket());
    assert!(!Caller::tls("").is_unix_socket());
}

#[test]
fn tenants_may_still_manage_their_swarm() {
    let init = swarm_init_body();
    let update = "/v1.41/swarm/update?version=11&rotateWorkerToken=false";
    assert_allowed("POST", update, Some(&init["Spec"].to_string()));
    assert_refused(
        "POST",
        update,
        Some(r#"{"TaskDefaults":{"LogDriver":{"Name":"fluentd"}}}"#),
        "TaskDefaults.LogDriver.Name",
    );
    assert_allowed(
        "POST",
        "/v1.41/swarm/unlock",
        Some(r#"{"UnlockKey":"SWMKEY-1-x"}"#),
    );
    assert_allowed("GET", "/v1.41/swarm", None);
    assert_allowed("GET", "/v1.41/swarm/unlockkey", None);
}

#[test]
fn node_update_with_a_label_is_allowed() {
    assert_allowed(
        "POST",
        "/v1.41/nodes/x2b8n1k5/update?version=20",
        Some(r#"{"Labels":{"zone":"a"},"Role":"worker","Availability":"active"}"#),
    );
    assert_allowed("DELETE", "/v1.41/nodes/x2b8n1k5?force=1", None);
    assert_allowed("DELETE", "/v1.41/services/web", None);
}

#[test]
fn service_ulimits_are_checked() {
    assert_allowed(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(json!({"Ulimits": [
            {"Name": "nofile", "Soft": 1024, "Hard": 2048},
            {"Name": "nproc", "Soft": 512, "Hard": 512}
        ]}))),
    );
    assert_allowed(
        "POST",
        SERVICE_UPDATE,
        Some(&service_with_container_spec(json!({"Ulimits": []}))),
    );
    for (uri, name, flag) in [
        (SERVICES_CREATE, "rtprio", "--ulimit rtprio=…"),
        (SERVICE_UPDATE, "RTPRIO", "--ulimit rtprio=…"),
        (SERVICES_CREATE, "rttime", "--ulimit rttime=…"),
        (SERVICE_UPDATE, "nice", "--ulimit nice=…"),
    ] {
        let message = assert_refused(
            "POST",
            uri,
            Some(&service_with_container_spec(
                json!({"Ulimits": [{"Name": name, "Soft": 99, "Hard": 99}]}),
            )),
            "real-time and nice limits are not allowed",
        );
        assert!(
            message.ends_with(&format!(
                "(TaskTemplate.ContainerSpec.Ulimits \"{name}\" / {flag})"
            )),
            "{message}"
        );
    }
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(&service_with_container_spec(
            json!({"Ulimits": [{"Name": "rtpr\u{131}o", "Soft": 99, "Hard": 99}]}),
        )),
        "not ASCII",
    );
    // The lowercase spelling dockerd also decodes.
    assert_refused(
        "POST",
        SERVICES_CREATE,
        Some(
            r#"{"tasktemplate":{"containerspec":{"image":"x","ulimits":[{"name":"rtprio","soft":99,"hard":99}]}}}"#,
        ),
        "TaskTemplate.ContainerSpec.Ulimits",
    );
}
