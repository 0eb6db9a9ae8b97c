//! `magnum-node-authz`: the Docker authorization plugin (`magnum-authz`) of a magnum-rs local
//! cluster node.
//!
//! Each node of a local cluster is a sandboxed dockerd (private root, PID namespace,
//! userns-remap) whose API a hostile tenant reaches over TLS. dockerd is started with
//! `--authorization-plugin=magnum-authz` and asks this plugin, over the legacy plugin
//! protocol on `/run/docker/plugins/magnum-authz.sock`, before executing every API request.
//! The plugin refuses whatever could escape the sandbox. It fails closed: an unknown write
//! route, a body it could not see, JSON it does not read exactly as dockerd will, or an
//! unreadable AuthZReq is a refusal.
//!
//! # API
//!
//! * [`review`]`(caller, method, request_uri, body) -> Result<(), Refusal>`: the pure
//!   decision for one Docker API request ([`Refusal::message`] is what the tenant sees, after
//!   `authorization denied by plugin magnum-authz: `). [`Caller`]`{ authentication_method,
//!   user }` is the AuthZReq's `UserAuthNMethod` and `User`: `"TLS"` and the certificate's
//!   common name for a TLS client, both empty on the node's unix socket
//!   ([`Caller::UNIX_SOCKET`], [`Caller::tls`]); `user` is only logged.
//! * [`handle_plugin_call`]`(path, body) -> (u16, Vec<u8>)`: one plugin protocol call
//!   (`/Plugin.Activate`, `/AuthZPlugin.AuthZReq`, `/AuthZPlugin.AuthZRes`; others 404).
//! * [`serve`]`(listener, `[`ServeLimits`]`) -> io::Result<Infallible>`: the HTTP/1.1 server
//!   for the plugin socket, bounded by [`ServeLimits`] (64 connections, 64 KiB heads, 8 MiB
//!   bodies, 120 s idle by default). It logs refusals to stderr (a file on the host), at most
//!   20 lines per 10 s per process, then `N refusals not logged in the last 10 s` once
//!   logging resumes.
//! * [`main_from_args`]`() -> ExitCode`: `magnum-node-authz --socket PATH`, for a 3-line binary.
//!
//! # Rules
//!
//! The URI is normalised as dockerd routes it: query split off, path percent-decoded once
//! (invalid encoding, control characters refused), `.`/`..`/empty segments resolved, a leading
//! `/vMAJOR.MINOR` stripped; API versions below 1.24 are refused (they accept a HostConfig
//! on container start).
//!
//! * GET and HEAD are allowed, except `/debug/*`.
//! * POST, PUT and DELETE are allowed only on the Docker API 1.41 routes listed in
//!   `routes.rs`; all writes under `/plugins` are refused. Other methods are refused.
//! * Image builds are refused: `POST /build` (the classic builder; its options can reach
//!   dockerd in a form-encoded body the plugin never sees, because dockerd hands the plugin
//!   one value of a repeated `Content-Type` while Go parses the form by the first) and
//!   BuildKit (`/session`, `/grpc`). `build/prune` and `build/cancel` stay allowed.
//! * `POST /swarm/init`, `/swarm/join` and `/swarm/leave` are reserved to the node's unix
//!   socket (magnumd; dockerd sends an empty `UserAuthNMethod` there) and refused to TLS
//!   clients, whatever their certificate's name: a node moved to a swarm manager the tenant
//!   runs would take tasks no plugin checks. Swarm update and unlock stay allowed. (A local
//!   cluster whose template disables TLS gives its tenant plain TCP, which dockerd reports
//!   like the socket.)
//! * Bodies are inspected for containers create / update / exec / start, services create /
//!   update, volumes, networks, secrets and configs create (and update), swarm init / update.
//!   An inspected body dockerd did not forward (not `application/json`, 1 MiB and over, or
//!   chunked on upstream 20.10) is refused; only container start may come without one.
//! * Inspected bodies are parsed strictly: keys compared ignoring ASCII case, non-ASCII keys,
//!   keys repeated after case folding, invalid JSON and invalid UTF-8 refused.
//! * Containers (the `HostConfig` object and the HostConfig fields dockerd also reads at the
//!   top level of the create body): no `Privileged`; no `host` PID, IPC, UTS, cgroup or
//!   network namespace; no `UsernsMode` at all; `CapAdd` only within Docker's default set; no
//!   `Devices`, `DeviceCgroupRules`, `DeviceRequests`, `CgroupParent`; `SecurityOpt` only
//!   `no-new-privileges`; no `MaskedPaths`/`ReadonlyPaths`; `Binds` only named volumes;
//!   `Mounts` only `volume` (without driver config) and `tmpfs`; `VolumeDriver` only
//!   `local`; `LogConfig.Type` only `json-file`, `local`, `none`; no negative `OomScoreAdj`;
//!   `Runtime` only `runc`; no `Ulimits` entry named `rtprio`, `rttime` or `nice` (ignoring
//!   ASCII case; runc sets rlimits from the host's root, so they give real-time scheduling),
//!   nor one whose name is not ASCII (dockerd upper-cases by Unicode rules). Container update:
//!   the device, cgroup-parent and ulimit fields. Exec: no `Privileged`. Start: no body
//!   beyond `null` or `{}`.
//! * Services: `ContainerSpec` mounts and `Ulimits` as above, `CapabilityAdd` within the
//!   default set, `Privileges` only `NoNewPrivileges` (and default seccomp / AppArmor
//!   modes), default `Isolation`; no `PluginSpec`; `Runtime` only `container`; local log
//!   drivers; no `host` network target by name. Swarm init / update: local default log
//!   driver.
//! * Volumes: local driver, no `DriverOpts`. Networks: bridge, overlay or null driver,
//!   default IPAM. Secrets and configs: no `Driver`, templating only `golang`.

mod cli;
mod fields;
mod json;
mod log_limit;
mod protocol;
mod refusal;
mod review;
mod routes;
mod rules;
mod server;
mod uri;

#[cfg(test)]
mod tests;

pub use cli::main_from_args;
pub use protocol::{handle_plugin_call, PLUGIN_CONTENT_TYPE};
pub use refusal::Refusal;
pub use review::{review, Caller};
pub use server::{serve, ServeLimits};
