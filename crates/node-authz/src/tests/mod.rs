//! Tests of the whole review, with request bodies shaped as the docker CLI 28 sends them to a
//! dockerd 20.10 (API 1.41).

mod bypasses;
mod containers;
mod objects;
mod protocol;
mod routes;
mod server;
mod swarm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::{review, Caller};

/// A fresh socket path under the temporary directory (short enough for `sun_path`).
pub(crate) fn temporary_socket_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "magnum-node-authz-{}-{name}-{number}.sock",
        std::process::id()
    ))
}

/// The tenant: a TLS client, as every request reaches a node's API but magnumd's.
const TENANT: Caller<'static> = Caller::tls("admin");

#[track_caller]
fn assert_allowed(method: &str, uri: &str, body: Option<&str>) {
    assert_allowed_for(&TENANT, method, uri, body);
}

#[track_caller]
fn assert_allowed_for(caller: &Caller<'_>, method: &str, uri: &str, body: Option<&str>) {
    if let Err(refusal) = review(caller, method, uri, body.map(str::as_bytes)) {
        panic!("{method} {uri} from {caller:?} was refused: {refusal}\nbody: {body:?}");
    }
}

/// Asserts a refusal of the tenant's request whose message contains `expected`; returns the
/// message.
#[track_caller]
fn assert_refused(method: &str, uri: &str, body: Option<&str>, expected: &str) -> String {
    assert_refused_for(&TENANT, method, uri, body, expected)
}

#[track_caller]
fn assert_refused_for(
    caller: &Caller<'_>,
    method: &str,
    uri: &str,
    body: Option<&str>,
    expected: &str,
) -> String {
    match review(caller, method, uri, body.map(str::as_bytes)) {
        Ok(()) => panic!("{method} {uri} from {caller:?} was allowed\nbody: {body:?}"),
        Err(refusal) => {
            assert!(
                refusal.message().contains(expected),
                "{method} {uri}: message {:?} does not contain {expected:?}",
                refusal.message()
            );
            refusal.message().to_owned()
        }
    }
}

const CREATE: &str = "/v1.41/containers/create";

/// `docker run -d busybox sleep 1000` as docker CLI 28 sends it to API 1.41.
const DOCKER_RUN_BODY: &str = r#"{
    "Hostname": "", "Domainname": "", "User": "",
    "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
    "Tty": false, "OpenStdin": false, "StdinOnce": false,
    "Env": null, "Cmd": ["sleep", "1000"], "Image": "busybox",
    "Volumes": {}, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {},
    "HostConfig": {
        "Binds": null, "ContainerIDFile": "",
        "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default", "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": false, "VolumeDriver": "", "VolumesFrom": null,
        "ConsoleSize": [0, 0], "CapAdd": null, "CapDrop": null, "CgroupnsMode": "",
        "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null, "GroupAdd": null,
        "IpcMode": "", "Cgroup": "", "Links": null, "OomScoreAdj": 0, "PidMode": "",
        "Privileged": false, "PublishAllPorts": false, "ReadonlyRootfs": false,
        "SecurityOpt": null, "UTSMode": "", "UsernsMode": "", "ShmSize": 0, "Isolation": "",
        "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [],
        "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": "", "CpusetMems": "", "Devices": [], "DeviceCgroupRules": null,
        "DeviceRequests": null, "MemoryReservation": 0, "MemorySwap": 0,
        "MemorySwappiness": -1, "OomKillDisable": false, "PidsLimit": 0, "Ulimits": [],
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": null, "ReadonlyPaths": null
    },
    "NetworkingConfig": {"EndpointsConfig": {}}
}"#;

fn docker_run_body() -> Value {
    serde_json::from_str(DOCKER_RUN_BODY).unwrap()
}

/// The `docker run` body with `fields` set in its HostConfig.
fn run_with(fields: Value) -> String {
    let mut body = docker_run_body();
    let host_config = body["HostConfig"].as_object_mut().unwrap();
    for (key, value) in fields.as_object().unwrap() {
        host_config.insert(key.clone(), value.clone());
    }
    body.to_string()
}

/// The `docker run` body with `fields` set at its top level.
fn run_with_top_level(fields: Value) -> String {
    let mut body = docker_run_body();
    let top_level = body.as_object_mut().unwrap();
    for (key, value) in fields.as_object().unwrap() {
        top_level.insert(key.clone(), value.clone());
    }
    body.to_string()
}

/// `docker service create --name web --replicas 2 --endpoint-mode dnsrr
/// --publish mode=host,target=80,published=8080 nginx` as docker CLI 28 sends it.
fn docker_service_create_body() -> Value {
    json!({
        "Name": "web", "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:latest", "Init": false,
                "DNSConfig": {}, "Isolation": "default"
            },
            "Resources": {"Limits": {}, "Reservations": {}},
            "RestartPolicy": {},
            "Placement": {},
            "ForceUpdate": 0,
            "Runtime": "container"
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "EndpointSpec": {
            "Mode": "dnsrr",
            "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]
        }
    })
}

/// The service body with `fields` set in `TaskTemplate.ContainerSpec`.
fn service_with_container_spec(fields: Value) -> String {
    let mut body = docker_service_create_body();
    let spec = body["TaskTemplate"]["ContainerSpec"]
        .as_object_mut()
        .unwrap();
    for (key, value) in fields.as_object().unwrap() {
        spec.insert(key.clone(), value.clone());
    }
    body.to_string()
}

/// The service body with `fields` set in `TaskTemplate`.
fn service_with_task_template(fields: Value) -> String {
    let mut body = docker_service_create_body();
    let task = body["TaskTemplate"].as_object_mut().unwrap();
    for (key, value) in fields.as_object().unwrap() {
        task.insert(key.clone(), value.clone());
    }
    body.to_string()
}
