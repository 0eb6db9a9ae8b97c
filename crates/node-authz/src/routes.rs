//! Which Docker API requests are allowed at all, which of them need their body inspected, and
//! which only magnumd may make.
//!
//! Reads (GET, HEAD) are allowed; writes (POST, PUT, DELETE) only on the routes listed here,
//! taken from the route tables of moby v20.10 (api/server/router/*/…go). dockerd matches names
//! with `{name:.*}` patterns, so container, image, exec and network names may contain `/`: the
//! action is the last segment and everything between is the name.

use crate::refusal::{quoted, Refusal, NOT_ALLOWED};
use crate::uri::RequestTarget;

/// A request body that must be inspected, and by which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyRule {
    ContainerCreate,
    ContainerUpdate,
    ContainerStart,
    ExecCreate,
    ServiceSpec,
    VolumeCreate,
    NetworkCreate,
    SecretSpec,
    ConfigSpec,
    SwarmInit,
    SwarmUpdate,
}

/// What remains to check once the route itself is allowed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) body: Option<BodyRule>,
    /// `Some("POST /swarm/join")` (the route, for the message) for the requests that change
    /// the node's swarm membership, which only magnumd may make.
    pub(crate) swarm_membership_route: Option<&'static str>,
}

impl Plan {
    fn body(rule: BodyRule) -> Self {
        Self {
            body: Some(rule),
            swarm_membership_route: None,
        }
    }

    fn swarm_membership(route: &'static str, body: Option<BodyRule>) -> Self {
        Self {
            body,
            swarm_membership_route: Some(route),
        }
    }
}

pub(crate) fn plan(method: &str, target: &RequestTarget) -> Result<Plan, Refusal> {
    let segments: Vec<&str> = target.segments.iter().map(String::as_str).collect();
    let path = target.display_path();
    match method {
        "GET" | "HEAD" => plan_read(method, &segments, &path),
        "POST" => plan_post(&segments, &path),
        "PUT" => plan_put(&segments, &path),
        "DELETE" => plan_delete(&segments, &path),
        // gorilla/mux matches methods exactly, so `post` or `OPTIONS` never reaches a write
        // handler; refusing them costs nothing.
        other => Err(Refusal::new(format!(
            "HTTP method {} is {NOT_ALLOWED}",
            quoted(other)
        ))),
    }
}

fn plan_read(method: &str, segments: &[&str], path: &str) -> Result<Plan, Refusal> {
    match segments {
        // dockerd registers /debug/* (pprof, expvar) without a method restriction; nothing a
        // tenant needs, and a CPU profile or trace keeps dockerd busy for its duration.
        ["debug", ..] => Err(Refusal::new(format!(
            "the dockerd debug endpoints are {NOT_ALLOWED} ({method} {})",
            quoted(path)
        ))),
        _ => Ok(Plan::default()),
    }
}

fn plan_post(segments: &[&str], path: &str) -> Result<Plan, Refusal> {
    use BodyRule::*;
    let plan = match segments {
        ["plugins", ..] => return Err(plugin_refusal("POST", path)),
        ["session"] | ["grpc"] => {
            return Err(buildkit_refusal(path));
        }

        ["containers", "create"] => Plan::body(ContainerCreate),
        ["containers", "prune"] => Plan::default(),
        ["containers", name @ .., action] if !name.is_empty() => match *action {
            "start" => Plan::body(ContainerStart),
            "update" => Plan::body(ContainerUpdate),
            "exec" => Plan::body(ExecCreate),
            "kill" | "pause" | "unpause" | "restart" | "stop" | "wait" | "resize" | "attach"
            | "rename" => Plan::default(),
            _ => return Err(unknown_write("POST", path)),
        },
        ["exec", name @ .., "start" | "resize"] if !name.is_empty() => Plan::default(),

        ["images", "create" | "load" | "prune"] => Plan::default(),
        ["images", name @ .., "push" | "tag"] if !name.is_empty() => Plan::default(),
        ["build"] => return Err(build_refusal()),
        ["build", "prune" | "cancel"] | ["commit"] | ["auth"] => Plan::default(),

        ["networks", "create"] => Plan::body(NetworkCreate),
        ["networks", "prune"] => Plan::default(),
        ["networks", id @ .., "connect" | "disconnect"] if !id.is_empty() => Plan::default(),
        ["volumes", "create"] => Plan::body(VolumeCreate),
        ["volumes", "prune"] => Plan::default(),

        ["swarm", "init"] => Plan::swarm_membership("POST /swarm/init", Some(SwarmInit)),
        ["swarm", "join"] => Plan::swarm_membership("POST /swarm/join", None),
        ["swarm", "leave"] => Plan::swarm_membership("POST /swarm/leave", None),
        ["swarm", "update"] => Plan::body(SwarmUpdate),
        ["swarm", "unlock"] => Plan::default(),
        ["services", "create"] | ["services", _, "update"] => Plan::body(ServiceSpec),
        ["nodes", _, "update"] => Plan::default(),
        ["secrets", "create"] | ["secrets", _, "update"] => Plan::body(SecretSpec),
        ["configs", "create"] | ["configs", _, "update"] => Plan::body(ConfigSpec),

        _ => return Err(unknown_write("POST", path)),
    };
    Ok(plan)
}

fn plan_put(segments: &[&str], path: &str) -> Result<Plan, Refusal> {
    match segments {
        ["plugins", ..] => Err(plugin_refusal("PUT", path)),
        ["containers", name @ .., "archive"] if !name.is_empty() => Ok(Plan::default()),
        _ => Err(unknown_write("PUT", path)),
    }
}

fn plan_delete(segments: &[&str], path: &str) -> Result<Plan, Refusal> {
    match segments {
        ["plugins", ..] => Err(plugin_refusal("DELETE", path)),
        ["containers" | "images" | "networks" | "volumes", name @ ..] if !name.is_empty() => {
            Ok(Plan::default())
        }
        ["services" | "nodes" | "secrets" | "configs", _] => Ok(Plan::default()),
        _ => Err(unknown_write("DELETE", path)),
    }
}

fn unknown_write(method: &str, path: &str) -> Refusal {
    Refusal::new(format!(
        "{method} {} is {NOT_ALLOWED} (it is not on the list of allowed Docker API requests)",
        quoted(path)
    ))
}

fn plugin_refusal(method: &str, path: &str) -> Refusal {
    Refusal::new(format!(
        "plugin installation and management is {NOT_ALLOWED} ({method} {} / docker plugin …)",
        quoted(path)
    ))
}

fn buildkit_refusal(path: &str) -> Refusal {
    Refusal::new(format!(
        "BuildKit is {NOT_ALLOWED} (POST {}); build the image elsewhere and docker load it",
        quoted(path)
    ))
}

/// `POST /build` (the classic builder). Its options (cgroupparent, ulimits, networkmode,
/// remote…) are read with Go's `r.FormValue`, which prefers a form-encoded body to the query;
/// Go parses the form by the first `Content-Type` header while dockerd hands the plugin only
/// one value of a repeated header, so the plugin cannot tell which options dockerd will use.
fn build_refusal() -> Refusal {
    Refusal::new(format!(
        "image builds are {NOT_ALLOWED} (POST /build / docker build: build options can reach \
         dockerd in a form body the plugin cannot see); build the image elsewhere and docker \
         load it"
    ))
}
