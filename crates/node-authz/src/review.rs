//! The decision for one Docker API request.

use crate::json::parse_strict;
use crate::refusal::Refusal;
use crate::routes::{plan, BodyRule};
use crate::rules::{container, objects, swarm};
use crate::uri::RequestTarget;

/// Who sent a Docker API request, as dockerd tells the plugin (`UserAuthNMethod`, `User`).
///
/// dockerd (pkg/authorization/middleware.go) sets the method to `"TLS"` and the user to the
/// client certificate's common name whenever the connection carries peer certificates, and
/// leaves both empty otherwise. A local node's dockerd listens on its unix socket, which only
/// magnumd reaches, and, on managers, on TCP with `--tlsverify` for the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// `UserAuthNMethod`: `"TLS"` for a client certificate, empty on the unix socket.
    pub authentication_method: &'a str,
    /// `User`: the certificate's common name. For the log only: a tenant can have any name
    /// signed, an empty one included, so no decision depends on it.
    pub user: &'a str,
}

impl<'a> Caller<'a> {
    /// A request on the node's unix socket (magnumd): dockerd names no authentication method.
    pub const UNIX_SOCKET: Caller<'static> = Caller {
        authentication_method: "",
        user: "",
    };

    /// A request over TLS from a client whose certificate names `user`.
    pub const fn tls(user: &'a str) -> Self {
        Self {
            authentication_method: "TLS",
            user,
        }
    }

    /// Whether dockerd named no authentication method: the node's unix socket (or a plain-TCP
    /// listener, which a local node has only when its cluster template disables TLS). Any
    /// method at all, `TLS` or one a later dockerd adds, counts as a tenant's client.
    pub fn is_unix_socket(&self) -> bool {
        self.authentication_method.is_empty()
    }
}

/// Reviews one Docker API request as dockerd forwards it to an authorization plugin.
///
/// * `caller`: `UserAuthNMethod` and `User` of the AuthZReq.
/// * `method`, `request_uri`: `RequestMethod` and `RequestUri` (raw, with `/vX.Y` and query).
/// * `body`: the decoded `RequestBody`, or `None` when dockerd did not forward one. dockerd
///   forwards a body only when its Content-Type is `application/json` and it is under 1 MiB
///   (pkg/authorization/authz.go). Upstream v20.10.24 also requires a Content-Length above 0
///   and skips URIs ending in `/auth`; Debian's 20.10.24+dfsg1 carries the CVE-2024-41110
///   fix, which forwards chunked bodies too. The rules do not depend on which: a body that
///   needs inspecting and was not forwarded is refused.
///
/// `RequestHeaders` are not an input: no rule may depend on them, since dockerd hands the
/// plugin only one value of a repeated header while its handlers may read another.
///
/// Pure: no I/O, no logging.
pub fn review(
    caller: &Caller<'_>,
    method: &str,
    request_uri: &str,
    body: Option<&[u8]>,
) -> Result<(), Refusal> {
    review_with_path(caller, method, request_uri, body).1
}

/// [`review`], also returning the normalised path (for the log) when the URI could be read.
pub(crate) fn review_with_path(
    caller: &Caller<'_>,
    method: &str,
    request_uri: &str,
    body: Option<&[u8]>,
) -> (Option<String>, Result<(), Refusal>) {
    let target = match RequestTarget::parse(request_uri) {
        Ok(target) => target,
        Err(refusal) => return (None, Err(refusal)),
    };
    let path = target.display_path();
    let decision = review_target(caller, method, &target, &path, body);
    (Some(path), decision)
}

fn review_target(
    caller: &Caller<'_>,
    method: &str,
    target: &RequestTarget,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(), Refusal> {
    let plan = plan(method, target)?;
    if let Some(route) = plan.swarm_membership_route {
        // A node moved to a swarm manager the tenant runs would take tasks that no plugin
        // checks (workers never ask theirs); magnumd alone changes membership, over the socket.
        if !caller.is_unix_socket() {
            return Err(Refusal::new(format!(
                "joining, leaving or creating a swarm is reserved to magnum-rs on a local cluster \
                 ({route}); resize the cluster through the Magnum API instead"
            )));
        }
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
