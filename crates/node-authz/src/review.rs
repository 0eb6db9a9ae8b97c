//! The decision for one Docker API request.

use std::collections::BTreeMap;

use crate::json::parse_strict;
use crate::refusal::{not_allowed, Refusal};
use crate::routes::{buildkit_refusal, plan, BodyRule};
use crate::rules::{container, objects, swarm};
use crate::uri::RequestTarget;

/// Reviews one Docker API request as dockerd forwards it to an authorization plugin.
///
/// * `method`, `request_uri`: `RequestMethod` and `RequestUri` (raw, with `/vX.Y` and query).
/// * `headers`: `RequestHeaders` (dockerd keeps the last value of a repeated header).
/// * `body`: the decoded `RequestBody`, or `None` when dockerd did not forward one. dockerd
///   forwards a body only when its Content-Type is `application/json` and it is under 1 MiB
///   (pkg/authorization/authz.go). Upstream v20.10.24 also requires a Content-Length above 0
///   and skips URIs ending in `/auth`; Debian's 20.10.24+dfsg1 carries the CVE-2024-41110
///   fix, which forwards chunked bodies too. The rules do not depend on which: a body that
///   needs inspecting and was not forwarded is refused.
///
/// Pure: no I/O, no logging.
pub fn review(
    method: &str,
    request_uri: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&[u8]>,
) -> Result<(), Refusal> {
    review_with_path(method, request_uri, headers, body).1
}

/// [`review`], also returning the normalised path (for the log) when the URI could be read.
pub(crate) fn review_with_path(
    method: &str,
    request_uri: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&[u8]>,
) -> (Option<String>, Result<(), Refusal>) {
    let target = match RequestTarget::parse(request_uri) {
        Ok(target) => target,
        Err(refusal) => return (None, Err(refusal)),
    };
    let path = target.display_path();
    let decision = review_target(method, &target, &path, headers, body);
    (Some(path), decision)
}

fn review_target(
    method: &str,
    target: &RequestTarget,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&[u8]>,
) -> Result<(), Refusal> {
    let plan = plan(method, target)?;
    if plan.build {
        check_build(target, headers)?;
    }
    match plan.body {
        Some(rule) => check_body(rule, method, path, body),
        None => Ok(()),
    }
}

fn check_body(
    rule: BodyRule,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(), Refusal> {
    let body = body.filter(|bytes| !bytes.is_empty());
    let Some(bytes) = body else {
        // Container start legitimately has no body; everything else must be seen, or a body
        // sent as text/plain, over 1 MiB (or, on some dockerd builds, chunked or to a URI
        // ending in /auth) would reach dockerd unchecked (bypass 4).
        if rule == BodyRule::ContainerStart {
            return Ok(());
        }
        return Err(Refusal::new(format!(
            "the request body could not be inspected (it must be application/json under 1 MiB); \
             it is required for {method} {path} on a magnum-rs local cluster"
        )));
    };
    let json = parse_strict(bytes).map_err(|error| {
        Refusal::new(format!("the request body is not acceptable JSON: {error}"))
    })?;
    match rule {
        BodyRule::ContainerCreate => container::check_create(&json),
        BodyRule::ContainerUpdate => container::check_update(&json),
        BodyRule::ContainerStart => container::check_start(&json),
        BodyRule::ExecCreate => container::check_exec(&json),
        BodyRule::ServiceSpec => swarm::check_service_spec(&json),
        BodyRule::VolumeCreate => objects::check_volume_create(&json),
        BodyRule::NetworkCreate => objects::check_network_create(&json),
        BodyRule::SecretSpec => objects::check_secret_spec(&json),
        BodyRule::ConfigSpec => objects::check_config_spec(&json),
        BodyRule::SwarmInit => swarm::check_swarm_init(&json),
        BodyRule::SwarmUpdate => swarm::check_swarm_update(&json),
    }
}

/// `POST /build` (classic builder). Its options are query parameters read with Go's
/// `r.FormValue` (api/server/router/build/build_routes.go), which also reads a form-encoded
/// body, and prefers it. So: no form bodies, no remote context (with the context in the body,
/// a form body would leave the build without one), and the query checked.
fn check_build(target: &RequestTarget, headers: &BTreeMap<String, String>) -> Result<(), Refusal> {
    for version in target.query_values("version")? {
        if !(version.is_empty() || version == "1") {
            return Err(buildkit_refusal("build?version=2"));
        }
    }
    for cgroup_parent in target.query_values("cgroupparent")? {
        if !cgroup_parent.is_empty() {
            return Err(not_allowed(
                "choosing the cgroup parent is",
                "build?cgroupparent / docker build --cgroup-parent",
            ));
        }
    }
    for network_mode in target.query_values("networkmode")? {
        let kind = network_mode.split(':').next().unwrap_or(&network_mode);
        if kind.eq_ignore_ascii_case("host") {
            return Err(not_allowed(
                "sharing the node's network namespace is",
                "build?networkmode=host / docker build --network host",
            ));
        }
    }
    for remote in target.query_values("remote")? {
        if !remote.is_empty() {
            return Err(not_allowed(
                "remote build contexts are",
                "build?remote=…; send the build context in the request body",
            ));
        }
    }
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Content-Type"))
        .map(|(_, value)| value.as_str())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type == "application/x-www-form-urlencoded" || media_type == "multipart/form-data" {
        return Err(not_allowed(
            "build options in a form-encoded body are",
            "Content-Type on POST /build; give build options in the query string",
        ));
    }
    Ok(())
}
