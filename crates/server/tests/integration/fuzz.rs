//! A bounded, seeded fuzzing campaign of the whole v1 API: random methods, paths (real and
//! made-up identifiers, escapes), query arguments, microversions, callers, content types and
//! JSON bodies shaped like the resources' own (with hostile values), against a real magnumd
//! on every engine. Every answer must be below 500; the process's memory must stay bounded.
//! `MAGNUM_FUZZ_REQUESTS` (default 1,500 per engine) and `MAGNUM_FUZZ_SEED` replay or widen it.

use magnum_test_support::{engine_tests, Engine};
use serde_json::{json, Map, Value};

use crate::support::{Caller, TestApp, ADMIN, ALICE, BOB, READER};

/// xorshift64*: enough randomness for test inputs, and replayable from its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &[
    "name",
    "uuid",
    "cluster_template_id",
    "cluster_template",
    "node_count",
    "master_count",
    "min_node_count",
    "max_node_count",
    "labels",
    "merge_labels",
    "node_labels",
    "node_taints",
    "flavor_id",
    "master_flavor_id",
    "image_id",
    "keypair",
    "keypair_id",
    "docker_volume_size",
    "create_timeout",
    "coe",
    "server_type",
    "public",
    "hidden",
    "tls_disabled",
    "health_status",
    "health_status_reason",
    "nodegroup",
    "nodes_to_remove",
    "max_batch_size",
    "role",
    "csr",
    "cluster_uuid",
    "ca_cert_type",
    "project_id",
    "resource",
    "hard_limit",
    "external_network_id",
    "network_driver",
    "driver",
];

fn string(random: &mut Random) -> String {
    match random.below(12) {
        0 => String::new(),
        1 => "x".repeat(5000),
        2 => "\u{0}".to_owned(),
        3 => "\\N{BOGUS}".to_owned(),
        4 => "{'a': 'b', 'c': [1, 2]}".to_owned(),
        5 => "[{'key': 'k', 'value': 'v', 'effect': 'NoSchedule'}]".to_owned(),
        6 => "ünïcødé ☃ 𝄞".to_owned(),
        7 => "../../etc/passwd".to_owned(),
        8 => "swarm-mode".to_owned(),
        9 => "local-node".to_owned(),
        10 => "-1".to_owned(),
        _ => format!("n{}", random.next() % 1000),
    }
}

fn number(random: &mut Random) -> Value {
    match random.below(9) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MAX),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!(1e308),
        6 => json!(9_007_199_254_740_993_i64),
        7 => json!(0.5),
        _ => json!(random.below(12)),
    }
}

fn value(random: &mut Random, depth: usize) -> Value {
    let kinds = if depth >= 4 { 4 } else { 7 };
    match random.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(random.chance(50)),
        2 => number(random),
        3 => Value::String(string(random)),
        4 => Value::Array(
            (0..random.below(4))
                .map(|_| value(random, depth + 1))
                .collect(),
        ),
        _ => object(random, depth + 1),
    }
}

fn object(random: &mut Random, depth: usize) -> Value {
    let mut fields = Map::new();
    for _ in 0..random.below(6) {
        let key = if random.chance(85) {
            (*random.pick(KEYS)).to_owned()
        } else {
            string(random)
        };
        fields.insert(key, value(random, depth));
    }
    Value::Object(fields)
}

/// A JSON-patch document: mostly well-formed operations on plausible paths.
fn patch(random: &mut Random) -> Value {
    let operations = (0..1 + random.below(3))
        .map(|_| {
            let mut operation = Map::new();
            operation.insert(
                "op".to_owned(),
                json!(random.pick(&["replace", "add", "remove", "move", "test", "bogus"])),
            );
            let path = format!("/{}", random.pick(KEYS));
            let path = if random.chance(20) {
                format!("{path}/{}", string(random))
            } else {
                path
            };
            operation.insert("path".to_owned(), json!(path));
            if random.chance(80) {
                operation.insert("value".to_owned(), value(random, 2));
            }
            Value::Object(operation)
        })
        .collect();
    Value::Array(operations)
}

fn identifier(random: &mut Random, known: &[String]) -> String {
    match random.below(10) {
        0..=3 => random.pick(known).clone(),
        4 => uuid::Uuid::new_v4().to_string(),
        5 => "%00".to_owned(),
        6 => "%ff%fe".to_owned(),
        7 => "x".repeat(300),
        8 => "99999999999999999999".to_owned(),
        _ => "-1".to_owned(),
    }
}

fn path(random: &mut Random, known: &[String]) -> String {
    let id = identifier(random, known);
    let other = identifier(random, known);
    let base = match random.below(16) {
        0 => "/v1/clustertemplates".to_owned(),
        1 => format!("/v1/clustertemplates/{id}"),
        2 => "/v1/clusters".to_owned(),
        3 => format!("/v1/clusters/{id}"),
        4 => format!("/v1/clusters/{id}/actions/resize"),
        5 => format!("/v1/clusters/{id}/actions/upgrade"),
        6 => format!("/v1/clusters/{id}/nodegroups"),
        7 => format!("/v1/clusters/{id}/nodegroups/{other}"),
        8 => "/v1/certificates".to_owned(),
        9 => format!("/v1/certificates/{id}"),
        10 => "/v1/quotas".to_owned(),
        11 => format!("/v1/quotas/{id}/Cluster"),
        12 => "/v1/stats".to_owned(),
        13 => format!("/v1/credentials/{id}"),
        14 => "/v1/mservices".to_owned(),
        _ => format!(
            "/{}",
            random.pick(&["", "v1", "v1/", "v2", "v1/clusters/detail"])
        ),
    };
    if !random.chance(40) {
        return base;
    }
    let arguments: Vec<String> = (0..1 + random.below(3))
        .map(|_| {
            let key = random.pick(&[
                "limit",
                "marker",
                "sort_key",
                "sort_dir",
                "detail",
                "rollback",
                "force",
                "role",
                "project_id",
                "name",
            ]);
            let value = match random.below(6) {
                0 => "-5".to_owned(),
                1 => "99999999999999999999".to_owned(),
                2 => "%00".to_owned(),
                3 => identifier(random, known),
                4 => {
                    (*random.pick(&["asc", "desc", "name", "id", "uuid", "true", "yes"])).to_owned()
                }
                _ => String::new(),
            };
            format!("{key}={value}")
        })
        .collect();
    format!("{base}?{}", arguments.join("&"))
}

/// A request the API would accept as it is: method, path and body.
fn plausible(random: &mut Random, known: &[String]) -> (&'static str, String, Value) {
    let cluster = &known[1];
    let name = format!("f{}", random.below(1000));
    match random.below(7) {
        0 => (
            "POST",
            "/v1/clusters".to_owned(),
            json!({"cluster_template_id": "t", "name": name, "node_count": 1 + random.below(3)}),
        ),
        1 => (
            "POST",
            format!("/v1/clusters/{cluster}/actions/resize"),
            json!({"node_count": random.below(4)}),
        ),
        2 => (
            "POST",
            format!("/v1/clusters/{cluster}/nodegroups"),
            json!({"name": name, "node_count": 1}),
        ),
        3 => (
            "PATCH",
            format!("/v1/clusters/{cluster}"),
            json!([{"op": "replace", "path": "/node_count", "value": 1 + random.below(3)}]),
        ),
        4 => (
            "POST",
            "/v1/clustertemplates".to_owned(),
            json!({"name": name, "coe": "swarm-mode", "image_id": "scripted-image"}),
        ),
        5 => (
            "POST",
            format!("/v1/clusters/{cluster}/actions/upgrade"),
            json!({"cluster_template": "t"}),
        ),
        _ => (
            "PATCH",
            format!("/v1/clusters/{cluster}/nodegroups/default-worker"),
            json!([{"op": "replace", "path": "/max_node_count", "value": 5}]),
        ),
    }
}

/// Resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

engine_tests!(
    random_requests_never_get_a_5xx_and_memory_stays_bounded,
    multi_thread
);
async fn random_requests_never_get_a_5xx_and_memory_stays_bounded(engine: Engine) {
    let seed: u64 = std::env::var("MAGNUM_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0 | 1);
    let requests: usize = std::env::var("MAGNUM_FUZZ_REQUESTS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1500);
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    let template = app
        .create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let cluster = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": "c", "node_count": 1})),
        )
        .await;
    assert_eq!(cluster.status, 202, "{}", cluster.body);
    let known = vec![
        template["uuid"].as_str().unwrap().to_owned(),
        cluster.body["uuid"].as_str().unwrap().to_owned(),
        "t".to_owned(),
        "c".to_owned(),
        "default-worker".to_owned(),
        "p-0001".to_owned(),
    ];
    let callers: [Option<Caller>; 5] = [Some(ALICE), Some(BOB), Some(ADMIN), Some(READER), None];
    let versions = [
        "latest",
        "1.1",
        "1.8",
        "1.10",
        "1.14",
        "1.15",
        "2.0",
        "1.x",
        "",
        "latest latest",
    ];
    let mut random = Random(seed);
    let before = resident_kib();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for number in 0..requests {
        let mut method = *random.pick(&[
            "GET", "GET", "GET", "POST", "POST", "POST", "PATCH", "PATCH", "DELETE", "PUT", "HEAD",
        ]);
        let mut path = path(&mut random, &known);
        let caller = *random.pick(&callers);
        // Mostly versions the API serves, so that requests get past negotiation.
        let version = if random.chance(80) {
            format!(
                "container-infra {}",
                random.pick(&["latest", "1.14", "1.10", "1.9"])
            )
        } else {
            format!("container-infra {}", random.pick(&versions))
        };
        let mut headers = vec![("OpenStack-API-Version", version.as_str())];
        let content_type = *random.pick(&[
            "application/json",
            "application/json",
            "application/json",
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
        ]);
        headers.push(("Content-Type", content_type));
        let body = match random.below(10) {
            0 => None,
            // A request that would be accepted, with one attribute made hostile: reaches the
            // deeper checks and the commit path.
            4 | 5 => {
                let (plausible_method, plausible_path, mut valid) = plausible(&mut random, &known);
                method = plausible_method;
                path = plausible_path;
                if random.chance(70) {
                    if let Some(fields) = valid.as_object_mut() {
                        let key = (*random.pick(KEYS)).to_owned();
                        fields.insert(key, value(&mut random, 1));
                    }
                }
                Some(valid)
            }
            1 => Some(Value::String(
                random
                    .pick(&[
                        "{",
                        "[1,",
                        "null",
                        "\"x\"",
                        "{\"a\":1,\"a\":2}",
                        "\u{0}",
                        "{}}",
                    ])
                    .to_string(),
            )),
            2 | 3 => Some(patch(&mut random)),
            _ => Some(object(&mut random, 0)),
        };
        let shown = body.as_ref().map(Value::to_string).unwrap_or_default();
        let reply = app.send(method, &path, caller, &headers, body).await;
        *statuses.entry(reply.status).or_default() += 1;
        assert!(
            reply.status < 500,
            "request {number} of seed {seed} ({}): {method} {path} {version} {content_type} \
             body {} → {} {}; replay with MAGNUM_FUZZ_SEED={seed}",
            engine.name(),
            &shown[..shown.len().min(2000)],
            reply.status,
            String::from_utf8_lossy(&reply.raw)
        );
    }
    let grown_mib = resident_kib().saturating_sub(before) / 1024;
    eprintln!(
        "fuzz {}: seed {seed}, {requests} requests, statuses {statuses:?}, RSS +{grown_mib} MiB",
        engine.name()
    );
    assert!(
        grown_mib < 512,
        "the process grew by {grown_mib} MiB over {requests} requests (seed {seed})"
    );
    // The service still answers as usual afterwards.
    let listed = app
        .send_at("latest", "GET", "/v1/clusters", ALICE, None)
        .await;
    assert_eq!(listed.status, 200);
    app.stop().await;
}
