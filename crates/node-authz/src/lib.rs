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
//! * [`review`]`(method, request_uri, headers, body) -> Result<(), Refusal>`: the pure
//!   decision for one Docker API request ([`Refusal::message`] is what the tenant sees, after
//!   `authorization denied by plugin magnum-authz: `).
//! * [`handle_plugin_call`]`(path, body) -> (u16, Vec<u8>)`: one plugin protocol call
//!   (`/Plugin.Activate`, `/AuthZPlugin.AuthZReq`, `/AuthZPlugin.AuthZRes`; others 404).
//! * [`serve`]`(listener, `[`ServeLimits`]`) -> io::Result<Infallible>`: the HTTP/1.1 server
//!   for the plugin socket, bounded by [`ServeLimits`] (64 connections, 64 KiB heads, 8 MiB
//!   bodies, 120 s idle by default).
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
//!   `routes.rs`; all writes under `/plugins` are refused, as is BuildKit (`/session`,
//!   `/grpc`, `/build?version=2`). Other methods are refused.
//! * `POST /build`: no `cgroupparent`, no `networkmode=host`, no `remote` context, no
//!   form-encoded body (Go reads build options from one).
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
//!   `Runtime` only `runc`. Container update: the device and cgroup-parent fields. Exec: no
//!   `Privileged`. Start: no body beyond `null` or `{}`.
//! * Services: `ContainerSpec` mounts as above, `CapabilityAdd` within the default set,
//!   `Privileges` only `NoNewPrivileges` (and default seccomp / AppArmor modes), default
//!   `Isolation`; no `PluginSpec`; `Runtime` only `container`; local log drivers; no `host`
//!   network target by name. Swarm init / update: local default log driver.
//! * Volumes: local driver, no `DriverOpts`. Networks: bridge, overlay or null driver,
//!   default IPAM. Secrets and configs: no `Driver`, templating only `golang`.

mod cli;
mod fields;
mod json;
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
pub use review::review;
pub use server::{serve, ServeLimits};
