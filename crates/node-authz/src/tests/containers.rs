//! Container create, update, exec and start bodies.

use serde_json::json;

use super::*;

#[test]
fn a_plain_docker_run_is_allowed() {
    assert_allowed("POST", CREATE, Some(&docker_run_body().to_string()));
    assert_allowed(
        "POST",
        "/v1.41/containers/create?name=web",
        Some(&docker_run_body().to_string()),
    );
    assert_allowed(
        "POST",
        "/containers/create",
        Some(&docker_run_body().to_string()),
    );
}

#[test]
fn everyday_options_are_allowed() {
    for fields in [
        json!({"Binds": ["data:/data"]}),
        json!({"Binds": ["data:/data:ro", "cache.v2:/cache:rw,z"]}),
        json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]}),
        json!({"Mounts": [{"Type": "volume", "Target": "/anonymous"}]}),
        json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d",
                           "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}, "DriverConfig": null}}]}),
        json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d",
                           "VolumeOptions": {"DriverConfig": {"Name": "local"}}}]}),
        json!({"Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576}}]}),
        json!({"Tmpfs": {"/run": "rw,size=64m"}}),
        json!({"CapAdd": ["chown", "CAP_KILL", "Net_Raw"]}),
        json!({"CapDrop": ["ALL"], "CapAdd": ["NET_BIND_SERVICE"]}),
        json!({"SecurityOpt": ["no-new-privileges"]}),
        json!({"SecurityOpt": ["no-new-privileges=true", "no-new-privileges:false"]}),
        json!({"NetworkMode": "bridge"}),
        json!({"NetworkMode": "container:web"}),
        json!({"NetworkMode": "hostnet"}),
        json!({"PidMode": "container:web", "IpcMode": "shareable", "UTSMode": "", "CgroupnsMode": "private"}),
        json!({"LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}}),
        json!({"LogConfig": {"Type": "local"}}),
        json!({"LogConfig": {"Type": "none"}}),
        json!({"VolumeDriver": "local"}),
        json!({"OomScoreAdj": 500}),
        json!({"Runtime": "runc"}),
        json!({"Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"}}),
        json!({"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}),
        json!({"Memory": 268435456, "PidsLimit": 100, "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]}),
        json!({"Init": true, "ReadonlyRootfs": true, "AutoRemove": true}),
    ] {
        assert_allowed("POST", CREATE, Some(&run_with(fields)));
    }
}

#[test]
fn privileged_is_refused() {
    let message = assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"Privileged": true}))),
        "privileged",
    );
    assert_eq!(
        message,
        "privileged containers are not allowed on a magnum-rs local cluster (HostConfig.Privileged / --privileged)"
    );
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"Privileged": "yes"}))),
        "unexpected JSON type",
    );
}

#[test]
fn host_namespaces_are_refused() {
    for (field, flag) in [
        ("PidMode", "--pid=host"),
        ("IpcMode", "--ipc=host"),
        ("UTSMode", "--uts=host"),
        ("CgroupnsMode", "--cgroupns=host"),
        ("NetworkMode", "--network=host"),
    ] {
        let message = assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({field: "host"}))),
            flag,
        );
        assert!(
            message.contains(&format!("HostConfig.{field}=host")),
            "{message}"
        );
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({field: "HOST"}))),
            flag,
        );
    }
}

#[test]
fn any_user_namespace_mode_is_refused() {
    for mode in ["host", "private", "x"] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({"UsernsMode": mode}))),
            "--userns",
        );
    }
}

#[test]
fn capabilities_outside_the_default_set_are_refused() {
    for capabilities in [
        json!(["SYS_ADMIN"]),
        json!(["cap_sys_admin"]),
        json!(["CAP_SYS_ADMIN"]),
        json!(["ALL"]),
        json!(["all"]),
        json!(["NET_ADMIN"]),
        json!(["SYS_PTRACE"]),
        json!(["CHOWN", "DAC_READ_SEARCH"]),
        json!("SYS_ADMIN"),
        json!([" CHOWN"]),
        json!([null]),
    ] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({"CapAdd": capabilities}))),
            "--cap-add",
        );
    }
    let message = assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"CapAdd": ["cap_sys_admin"]}))),
        "cap_sys_admin",
    );
    assert!(message.contains("HostConfig.CapAdd"), "{message}");
}

#[test]
fn devices_and_cgroup_parent_are_refused() {
    for (fields, flag) in [
        (
            json!({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]}),
            "--device",
        ),
        (
            json!({"DeviceCgroupRules": ["b 8:* rwm"]}),
            "--device-cgroup-rule",
        ),
        (
            json!({"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}),
            "--gpus",
        ),
        (json!({"CgroupParent": "/"}), "--cgroup-parent"),
        (json!({"CgroupParent": "../../.."}), "--cgroup-parent"),
    ] {
        assert_refused("POST", CREATE, Some(&run_with(fields)), flag);
    }
}

#[test]
fn security_options_other_than_no_new_privileges_are_refused() {
    let profile = r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#;
    for (option, name) in [
        ("seccomp=unconfined", "seccomp"),
        ("seccomp:unconfined", "seccomp"),
        (profile, "seccomp"),
        ("apparmor=unconfined", "apparmor"),
        ("apparmor:docker-default", "apparmor"),
        ("label=disable", "label"),
        ("label:disable", "label"),
        ("disable", "disable"),
        ("systempaths=unconfined", "systempaths"),
        ("no-new-privileges=maybe", "no-new-privileges"),
        ("NO-NEW-PRIVILEGES", "NO-NEW-PRIVILEGES"),
    ] {
        let message = assert_refused(
            "POST",
            CREATE,
            Some(&run_with(
                json!({"SecurityOpt": ["no-new-privileges", option]}),
            )),
            "--security-opt",
        );
        assert!(
            message.contains(&format!("security option \"{name}\"")),
            "{message}"
        );
    }
    // A long profile is not echoed back whole.
    let message = assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"SecurityOpt": [profile]}))),
        "seccomp",
    );
    assert!(!message.contains("SCMP_ACT_ALLOW"), "{message}");
}

#[test]
fn masked_and_readonly_paths_are_refused() {
    for field in ["MaskedPaths", "ReadonlyPaths"] {
        for value in [json!([]), json!(["/proc/kcore"])] {
            let message = assert_refused(
                "POST",
                CREATE,
                Some(&run_with(json!({field: value}))),
                "systempaths=unconfined",
            );
            assert!(message.contains(field), "{message}");
        }
    }
}

#[test]
fn host_binds_are_refused() {
    for bind in [
        "/:/host",
        "/srv/x/../../etc:/etc2",
        "/srv/tenant/a:/t",
        "./data:/data",
        "../data:/data",
        ".:/data",
        "..:/data",
        "data/sub:/data",
        "-data:/data",
        ":/data",
        "/data",
        "data",
        "",
    ] {
        let message = assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({"Binds": [bind]}))),
            "host bind mounts are not allowed",
        );
        assert!(message.contains("HostConfig.Binds"), "{message}");
    }
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"Binds": ["data:/data", "/:/host"]}))),
        "\"/:/host\"",
    );
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"Binds": "/:/host"}))),
        "unexpected JSON type",
    );
}

#[test]
fn bind_and_other_mount_types_are_refused() {
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}))),
        "bind mounts are not allowed on a magnum-rs local cluster (HostConfig.Mounts Type=bind / --mount type=bind",
    );
    for mount_type in [
        json!("npipe"),
        json!("cluster"),
        json!("Bind"),
        json!("VOLUME"),
        json!(null),
    ] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(
                json!({"Mounts": [{"Type": mount_type, "Source": "/", "Target": "/host"}]}),
            )),
            "mount type",
        );
    }
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(
            json!({"Mounts": [{"Source": "data", "Target": "/d"}]}),
        )),
        "mount type \"\"",
    );
}

#[test]
fn volume_mounts_with_driver_options_are_refused() {
    for driver_config in [
        json!({"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}),
        json!({"Options": {"o": "bind"}}),
        json!({"Name": "sshfs"}),
        json!({"Options": "o=bind"}),
    ] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(
                json!({"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d",
                                              "VolumeOptions": {"DriverConfig": driver_config}}]}),
            )),
            "--mount volume-driver",
        );
    }
    assert_refused(
        "POST",
        CREATE,
        Some(&run_with(
            json!({"Mounts": [{"Type": "volume", "Source": "/etc", "Target": "/d"}]}),
        )),
        "volume source \"/etc\"",
    );
}

#[test]
fn volume_drivers_log_drivers_oom_and_runtimes_are_refused() {
    for (fields, expected) in [
        (json!({"VolumeDriver": "sshfs"}), "--volume-driver"),
        (json!({"VolumeDriver": "magnum-authz"}), "--volume-driver"),
        (
            json!({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "udp://10.0.0.1:514"}}}),
            "--log-driver",
        ),
        (json!({"LogConfig": {"Type": "journald"}}), "--log-driver"),
        (json!({"LogConfig": {"Type": "JSON-FILE"}}), "--log-driver"),
        (json!({"OomScoreAdj": -1000}), "--oom-score-adj"),
        (json!({"OomScoreAdj": -1}), "--oom-score-adj"),
        (json!({"Runtime": "io.containerd.runc.v2"}), "--runtime"),
        (json!({"Runtime": "kata"}), "--runtime"),
    ] {
        assert_refused("POST", CREATE, Some(&run_with(fields)), expected);
    }
}

#[test]
fn host_config_fields_at_the_top_level_are_checked_too() {
    // dockerd reads HostConfig fields from the top level of the create body as well.
    for (fields, expected) in [
        (json!({"Binds": ["/:/host"]}), "(Binds \"/:/host\""),
        (json!({"Privileged": true}), "(Privileged / --privileged)"),
        (json!({"UsernsMode": "host"}), "UsernsMode"),
        (json!({"CapAdd": "SYS_ADMIN"}), "(CapAdd / --cap-add"),
        (
            json!({"Devices": [{"PathOnHost": "/dev/mem"}]}),
            "(Devices / --device)",
        ),
        (
            json!({"VolumeDriver": "sshfs"}),
            "(VolumeDriver / --volume-driver",
        ),
        (json!({"MaskedPaths": []}), "(MaskedPaths /"),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
            "Type=bind",
        ),
    ] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with_top_level(fields.clone())),
            expected,
        );
        // Also without a HostConfig object (the old API shape).
        let mut body = fields.clone();
        body["Image"] = json!("busybox");
        assert_refused("POST", CREATE, Some(&body.to_string()), expected);
    }
    assert_allowed(
        "POST",
        CREATE,
        Some(r#"{"Image":"busybox","Binds":["data:/data"],"Memory":1000}"#),
    );
}

#[test]
fn create_bodies_must_be_objects() {
    for body in ["[]", "null", "\"x\"", "1"] {
        assert_refused("POST", CREATE, Some(body), "must be a JSON object");
    }
    assert_refused(
        "POST",
        CREATE,
        Some(r#"{"HostConfig":[]}"#),
        "HostConfig has an unexpected JSON type",
    );
}

#[test]
fn container_update_checks_devices_and_cgroup_parent() {
    let update = "/v1.41/containers/web/update";
    assert_allowed(
        "POST",
        update,
        Some(r#"{"Memory":268435456,"MemorySwap":-1,"RestartPolicy":{"Name":"always"}}"#),
    );
    assert_allowed(
        "POST",
        update,
        Some(r#"{"CpuShares":512,"Devices":[],"DeviceCgroupRules":null}"#),
    );
    for (body, expected) in [
        (
            r#"{"Devices":[{"PathOnHost":"/dev/sda"}]}"#,
            "(Devices / --device)",
        ),
        (
            r#"{"DeviceCgroupRules":["a *:* rwm"]}"#,
            "DeviceCgroupRules",
        ),
        (r#"{"DeviceRequests":[{"Count":-1}]}"#, "DeviceRequests"),
        (r#"{"CgroupParent":"/"}"#, "CgroupParent"),
    ] {
        assert_refused("POST", update, Some(body), expected);
    }
    assert_refused("POST", update, None, "could not be inspected");
}

#[test]
fn docker_exec_is_allowed_and_privileged_exec_refused() {
    let exec = "/v1.41/containers/web/exec";
    let body = json!({
        "User": "", "Privileged": false, "Tty": true, "AttachStdin": true, "AttachStderr": true,
        "AttachStdout": true, "Detach": false, "DetachKeys": "", "Env": null, "WorkingDir": "",
        "Cmd": ["sh"]
    });
    assert_allowed("POST", exec, Some(&body.to_string()));
    let mut privileged = body.clone();
    privileged["Privileged"] = json!(true);
    assert_eq!(
        assert_refused("POST", exec, Some(&privileged.to_string()), "privileged exec"),
        "privileged exec is not allowed on a magnum-rs local cluster (Privileged / docker exec --privileged)"
    );
    assert_refused(
        "POST",
        exec,
        Some(r#"{"Cmd":["sh"],"privileged":true}"#),
        "privileged exec",
    );
    assert_refused("POST", exec, None, "could not be inspected");
    assert_allowed(
        "POST",
        "/v1.41/exec/abc123/start",
        Some(r#"{"Detach":false,"Tty":true}"#),
    );
    assert_allowed("POST", "/v1.41/exec/abc123/resize?h=40&w=120", None);
}

#[test]
fn container_start_takes_no_body() {
    let start = "/v1.41/containers/web/start";
    assert_allowed("POST", start, None);
    assert_allowed("POST", start, Some(""));
    assert_allowed("POST", start, Some("{}"));
    assert_allowed("POST", start, Some("null"));
    assert_allowed("POST", start, Some(" {} \n"));
    assert_refused(
        "POST",
        start,
        Some(r#"{"Binds":["/:/host"]}"#),
        "a request body on container start is not allowed",
    );
    assert_refused(
        "POST",
        start,
        Some(r#"{"HostConfig":{}}"#),
        "container start",
    );
    assert_refused("POST", start, Some("[]"), "container start");
    assert_refused("POST", start, Some("{"), "not acceptable JSON");
}

#[test]
fn other_container_writes_need_no_body() {
    for uri in [
        "/v1.41/containers/web/kill?signal=KILL",
        "/v1.41/containers/web/pause",
        "/v1.41/containers/web/unpause",
        "/v1.41/containers/web/restart?t=10",
        "/v1.41/containers/web/stop",
        "/v1.41/containers/web/wait?condition=next-exit",
        "/v1.41/containers/web/resize?h=40&w=120",
        "/v1.41/containers/web/attach?stream=1&stdout=1",
        "/v1.41/containers/web/rename?name=web2",
        "/v1.41/containers/prune",
        "/v1.41/commit?container=web&repo=snap",
    ] {
        assert_allowed("POST", uri, None);
    }
    assert_allowed("DELETE", "/v1.41/containers/web?force=1&v=1", None);
    assert_allowed("PUT", "/v1.41/containers/web/archive?path=/tmp", None);
}

#[test]
fn ordinary_ulimits_are_allowed() {
    let ulimits = json!([
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "nproc", "Soft": 512, "Hard": 512},
        {"Name": "core", "Soft": 0, "Hard": 0},
        {"Name": "memlock", "Soft": -1, "Hard": -1},
        {"Name": "stack", "Soft": 8388608, "Hard": 8388608},
        {"Name": "NOFILE", "Soft": 1, "Hard": 1},
        {"Name": "msgqueue", "Soft": 1, "Hard": 1},
        // Not an rlimit at all: runc refuses it when the container starts.
        {"Name": "realtime", "Soft": 1, "Hard": 1},
        {"Soft": 1, "Hard": 1}
    ]);
    for value in [ulimits.clone(), json!([]), json!(null)] {
        assert_allowed("POST", CREATE, Some(&run_with(json!({"Ulimits": value}))));
    }
    assert_allowed(
        "POST",
        CREATE,
        Some(&run_with_top_level(json!({"Ulimits": ulimits.clone()}))),
    );
    let update = json!({"Memory": 268435456, "Ulimits": ulimits}).to_string();
    assert_allowed("POST", "/v1.41/containers/web/update", Some(&update));
}

#[test]
fn real_time_and_nice_ulimits_are_refused() {
    let message = assert_refused(
        "POST",
        CREATE,
        Some(&run_with(
            json!({"Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]}),
        )),
        "real-time",
    );
    assert_eq!(
        message,
        "real-time and nice limits are not allowed on a magnum-rs local cluster \
         (HostConfig.Ulimits \"rtprio\" / --ulimit rtprio=…)"
    );
    for (name, flag) in [
        ("rtprio", "--ulimit rtprio=…"),
        ("RTPRIO", "--ulimit rtprio=…"),
        ("rttime", "--ulimit rttime=…"),
        ("RtTime", "--ulimit rttime=…"),
        ("nice", "--ulimit nice=…"),
        ("NICE", "--ulimit nice=…"),
    ] {
        // Behind an allowed ulimit, and the field spelt in another case.
        let ulimits = json!([
            {"Name": "nofile", "Soft": 1024, "Hard": 1024},
            {"Name": name, "Soft": 40, "Hard": 40}
        ]);
        let expected = format!("(HostConfig.Ulimits \"{name}\" / {flag})");
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({"Ulimits": ulimits.clone()}))),
            &expected,
        );
        let lowercase = json!({"image": "busybox", "hostconfig": {"ulimits": ulimits.clone()}});
        assert_refused("POST", CREATE, Some(&lowercase.to_string()), &expected);
        // dockerd reads HostConfig fields at the top level of the create body too.
        let top_level = format!("(Ulimits \"{name}\" / {flag})");
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with_top_level(json!({"Ulimits": ulimits.clone()}))),
            &top_level,
        );
        let without_host_config = json!({"Image": "busybox", "Ulimits": ulimits.clone()});
        assert_refused(
            "POST",
            CREATE,
            Some(&without_host_config.to_string()),
            &top_level,
        );
        // And the update body is Resources at its top level.
        let update = json!({"CpuShares": 512, "Ulimits": ulimits}).to_string();
        assert_refused(
            "POST",
            "/v1.41/containers/web/update",
            Some(&update),
            &top_level,
        );
    }
}

#[test]
fn ulimit_names_dockerd_would_fold_onto_rtprio_are_refused() {
    // Go's strings.ToUpper turns the dotless ı into I: "rtprıo" becomes RLIMIT_RTPRIO.
    for name in ["rtpr\u{131}o", "n\u{131}ce", "rttime\u{17f}", "\u{212a}"] {
        let message = assert_refused(
            "POST",
            CREATE,
            Some(&run_with(
                json!({"Ulimits": [{"Name": name, "Soft": 99, "Hard": 99}]}),
            )),
            "ulimit names that are not ASCII are not allowed",
        );
        assert!(message.contains("HostConfig.Ulimits"), "{message}");
    }
    assert_refused(
        "POST",
        "/v1.41/containers/web/update",
        Some(r#"{"Ulimits":[{"Name":"rtpr\u0131o","Soft":99,"Hard":99}]}"#),
        "not ASCII",
    );
}

#[test]
fn malformed_ulimits_are_refused() {
    for (ulimits, expected) in [
        (
            json!([null]),
            "HostConfig.Ulimits has an unexpected JSON type",
        ),
        (
            json!(["rtprio=99"]),
            "HostConfig.Ulimits has an unexpected JSON type",
        ),
        (
            json!({"Name": "rtprio"}),
            "HostConfig.Ulimits has an unexpected JSON type",
        ),
        (
            json!([{"Name": 1, "Soft": 99, "Hard": 99}]),
            "HostConfig.Ulimits.Name has an unexpected JSON type",
        ),
    ] {
        assert_refused(
            "POST",
            CREATE,
            Some(&run_with(json!({"Ulimits": ulimits}))),
            expected,
        );
    }
}
