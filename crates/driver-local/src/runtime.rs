//! Nodes as network namespaces on this host, each with its own dockerd, joined into a
//! swarm-mode cluster (the recipe of spec/local-infra.md). Every step checks what exists
//! before acting, so converging again after a crash continues where the last run stopped;
//! what the driver made is recorded under its state directory, so a restarted magnumd adopts
//! running nodes instead of duplicating them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use magnum_driver::{
    Action, ClusterSpec, Converge, DriverError, Observed, ObservedNodeGroup, Progress,
};
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use uuid::Uuid;

use crate::sandbox::{self, write_private, HostClaims, Limits, NodeSandbox};

/// The image every node gets, made from busybox-static.
pub const NODE_IMAGE: &str = "magnum/local-node:1";
const SWARM_PORT: u16 = 2377;
const TLS_PORT: u16 = 2376;
const PLAIN_PORT: u16 = 2375;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub nodegroup: Uuid,
    pub role: String,
    pub address: String,
    pub swarm_id: Option<String>,
    /// The node's slot of host uids (see `sandbox::UidRanges`).
    #[serde(default)]
    pub uid_slot: Option<u32>,
    /// Its nodegroup's flavor when it was added: the limits it restarts with.
    #[serde(default)]
    pub flavor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterState {
    /// The third octet of the cluster's /24 in the pool.
    pub subnet: u8,
    pub next_node: u32,
    pub nodes: Vec<NodeState>,
    /// What the health monitor needs to restart a node on its own.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub auto_healing: bool,
}

/// Where the driver keeps its records and how it numbers networks.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub state_dir: PathBuf,
    /// The first two octets of the private pool, e.g. [10, 77]: clusters get x.y.N.0/24.
    pub pool: [u8; 2],
    pub max_nodes: usize,
    /// (vCPUs, MiB) per flavor name or id: the limits of a node's containers.
    pub flavors: std::collections::HashMap<String, (u32, u64)>,
    /// One lock per cluster, held while an operation (converge, delete) or the health
    /// monitor's healing changes its nodes, so that they never act on one node together.
    pub locks: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Uuid, ClusterLock>>>,
    /// The `magnum-node-authz` binary every node runs as its Docker authorization plugin.
    pub authz_binary: PathBuf,
    /// Processes a node's containers may run together (pids.max of their cgroup).
    pub max_pids_per_node: u32,
    pub claims: std::sync::Arc<HostClaims>,
}

pub type ClusterLock = std::sync::Arc<tokio::sync::Mutex<()>>;

fn failed(message: impl Into<String>) -> DriverError {
    DriverError::Failed(message.into())
}

/// How long any one command may take (the slowest, `docker import` of the node image and
/// `swarm join`, take about a second): a hung command fails its operation instead of holding
/// the cluster in progress.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long every node of a cluster gets to be Ready in its managers' view.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A worker not Ready this long into the wait gets its dockerd restarted, once.
const NODE_REJOIN_NUDGE: Duration = Duration::from_secs(40);

async fn run(program: &str, arguments: &[&str]) -> Result<String, DriverError> {
    let running = Command::new(program)
        .args(arguments)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, running)
        .await
        .map_err(|_| {
            failed(format!(
                "{program} {} did not finish within {} s",
                arguments.join(" "),
                COMMAND_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|error| failed(format!("cannot run {program}: {error}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(failed(format!(
            "{program} {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs and ignores failure: teardown of what may already be gone.
async fn run_quietly(program: &str, arguments: &[&str]) {
    let _ = run(program, arguments).await;
}

/// Removes a directory tree that should go; what cannot be removed is logged (the tests'
/// leftover checks find it too), and a tree already gone is fine.
fn remove_tree(directory: &std::path::Path) {
    match std::fs::remove_dir_all(directory) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(directory = %directory.display(), %error, "cannot remove");
        }
        _ => {}
    }
}

/// A node's host name: `<cluster>-<node>`, cut to the 63 bytes a host name may have.
fn node_hostname(cluster_name: &str, node: &str) -> String {
    let suffix = format!("-{node}");
    let room = 63usize.saturating_sub(suffix.len());
    let mut name: String = cluster_name.chars().take(room).collect();
    while name.len() > room {
        name.pop();
    }
    name + &suffix
}

fn short(cluster: Uuid) -> String {
    cluster.simple().to_string()[..8].to_owned()
}

impl Runtime {
    fn cluster_dir(&self, cluster: Uuid) -> PathBuf {
        self.state_dir.join("clusters").join(cluster.to_string())
    }

    fn node_dir(&self, cluster: Uuid, node: &str) -> PathBuf {
        self.cluster_dir(cluster).join(node)
    }

    fn bridge(cluster: Uuid) -> String {
        format!("mb{}", short(cluster))
    }

    fn netns(cluster: Uuid, node: &str) -> String {
        format!("mc{}-{node}", short(cluster))
    }

    fn veth(cluster: Uuid, node: &str) -> String {
        format!("v{}{node}", &short(cluster)[..6])
    }

    fn cgroup(cluster: Uuid, node: &str) -> String {
        format!("magnum-{}-{node}", short(cluster))
    }

    fn firewall_table(cluster: Uuid) -> String {
        format!("magnum_{}", short(cluster))
    }

    fn sandbox(&self, cluster: Uuid, node: &str, hostname: &str) -> NodeSandbox {
        NodeSandbox {
            directory: self.node_dir(cluster, node),
            run_directory: Self::run_dir(cluster, node),
            netns: Self::netns(cluster, node),
            cgroup: Self::cgroup(cluster, node),
            hostname: hostname.to_owned(),
        }
    }

    /// The node's docker.sock as the host reaches it: unix socket paths must stay short.
    fn run_dir(cluster: Uuid, node: &str) -> PathBuf {
        PathBuf::from("/run/magnum-local").join(format!("{}-{node}", short(cluster)))
    }

    fn socket(&self, cluster: Uuid, node: &str) -> String {
        format!(
            "unix://{}",
            Self::run_dir(cluster, node).join("docker.sock").display()
        )
    }

    fn load(&self, cluster: Uuid) -> Option<ClusterState> {
        let text = std::fs::read_to_string(self.cluster_dir(cluster).join("cluster.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, cluster: Uuid, state: &ClusterState) -> Result<(), DriverError> {
        let directory = self.cluster_dir(cluster);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let temporary = directory.join("cluster.json.tmp");
        std::fs::write(
            &temporary,
            serde_json::to_vec_pretty(state).unwrap_or_default(),
        )
        .and_then(|()| std::fs::rename(&temporary, directory.join("cluster.json")))
        .map_err(|error| failed(format!("cannot record the cluster's nodes: {error}")))
    }

    /// A new cluster's subnet and short name, claimed host-wide (other clusters of any
    /// magnumd on this host, and subnets the host already routes, are avoided), and its first
    /// record, written before the claims are let go.
    fn allocate(
        &self,
        cluster: Uuid,
        mut state: ClusterState,
    ) -> Result<ClusterState, DriverError> {
        let directory = self.cluster_dir(cluster);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let lock = self.claims.lock()?;
        // Bridge, namespaces, cgroups and the firewall table are named after the first 8 hex
        // digits of the cluster's id: two clusters sharing them would share those too.
        let name = short(cluster);
        if let Some(owner) = self.claims.holder(&lock, "names", &name) {
            if owner != directory {
                return Err(failed(format!(
                    "Cluster {cluster} cannot be built on this host: another cluster's id starts \
                     with {name} too ({}); create it again to get another id.",
                    owner.display()
                )));
            }
        }
        let host = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        let prefix = format!("{}.{}.", self.pool[0], self.pool[1]);
        let subnet = (1..=250u8)
            .find(|candidate| {
                let key = format!("{prefix}{candidate}");
                let held = self
                    .claims
                    .holder(&lock, "subnets", &key)
                    .is_some_and(|owner| owner != directory);
                !held && !host.contains(&format!("{key}."))
            })
            .ok_or_else(|| failed("No free subnet is left in the local driver's network pool."))?;
        self.claims.take(&lock, "names", &name, &directory)?;
        self.claims
            .take(&lock, "subnets", &format!("{prefix}{subnet}"), &directory)?;
        state.subnet = subnet;
        self.save(cluster, &state)?;
        Ok(state)
    }

    fn address(&self, state: &ClusterState, index: u32) -> String {
        format!(
            "{}.{}.{}.{}",
            self.pool[0],
            self.pool[1],
            state.subnet,
            10 + index
        )
    }

    fn gateway(&self, state: &ClusterState) -> String {
        format!("{}.{}.{}.1", self.pool[0], self.pool[1], state.subnet)
    }

    /// The cluster's bridge, behind its firewall table (installed first, so that no node is
    /// ever on the bridge without it).
    async fn ensure_bridge(&self, cluster: Uuid, state: &ClusterState) -> Result<(), DriverError> {
        let bridge = Self::bridge(cluster);
        sandbox::install_firewall(&Self::firewall_table(cluster), &bridge).await?;
        if run("ip", &["link", "show", &bridge]).await.is_err() {
            run("ip", &["link", "add", &bridge, "type", "bridge"]).await?;
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", self.gateway(state)),
                    "dev",
                    &bridge,
                ],
            )
            .await?;
        }
        run("ip", &["link", "set", &bridge, "up"]).await?;
        Ok(())
    }

    /// busybox-static as a root filesystem tarball, made once.
    async fn node_rootfs(&self) -> Result<PathBuf, DriverError> {
        let tarball = self.state_dir.join("images").join("local-node-rootfs.tar");
        if tarball.exists() {
            return Ok(tarball);
        }
        let root = self.state_dir.join("images").join("rootfs");
        // The scratch tree of an interrupted earlier build, if any; absent is the usual case.
        let _ = std::fs::remove_dir_all(&root);
        for directory in ["bin", "etc", "www", "tmp"] {
            std::fs::create_dir_all(root.join(directory))
                .map_err(|error| failed(format!("cannot build the node image: {error}")))?;
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|error| {
            failed(format!("cannot build the node image from /bin/busybox (apt-get install busybox-static): {error}"))
        })?;
        let applets = run("/bin/busybox", &["--list"]).await?;
        let image_error =
            |error: std::io::Error| failed(format!("cannot build the node image: {error}"));
        for applet in applets.lines().filter(|applet| *applet != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .map_err(image_error)?;
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
            .map_err(image_error)?;
        std::fs::write(root.join("www/index.html"), "magnum-rs local node\n")
            .map_err(image_error)?;
        let partial = tarball.with_extension("partial");
        run(
            "tar",
            &[
                "-C",
                &root.display().to_string(),
                "-cf",
                &partial.display().to_string(),
                ".",
            ],
        )
        .await?;
        std::fs::rename(&partial, &tarball)
            .map_err(|error| failed(format!("cannot build the node image: {error}")))?;
        // The image is made; a scratch tree left behind is removed by the next build.
        let _ = std::fs::remove_dir_all(&root);
        Ok(tarball)
    }

    async fn create_network(
        &self,
        cluster: Uuid,
        node: &str,
        address: &str,
    ) -> Result<(), DriverError> {
        let netns = Self::netns(cluster, node);
        let veth = Self::veth(cluster, node);
        if run("ip", &["netns", "pids", &netns]).await.is_err() {
            run("ip", &["netns", "add", &netns]).await?;
        }
        if run("ip", &["link", "show", &veth]).await.is_err() {
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            )
            .await?;
        }
        run(
            "ip",
            &["link", "set", &veth, "master", &Self::bridge(cluster), "up"],
        )
        .await?;
        run("ip", &["-n", &netns, "link", "set", "lo", "up"]).await?;
        let current = run("ip", &["-n", &netns, "-4", "addr", "show", "eth0"]).await?;
        if !current.contains(&format!("{address}/")) {
            run(
                "ip",
                &[
                    "-n",
                    &netns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    "eth0",
                ],
            )
            .await?;
        }
        // Deliberately no default route: nothing leaves the host.
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"]).await?;
        Ok(())
    }

    /// The host PID of the node's sandbox while it runs.
    fn node_pid(&self, cluster: Uuid, node: &str) -> Option<i32> {
        self.sandbox(cluster, node, "").pid()
    }

    async fn docker(
        &self,
        cluster: Uuid,
        node: &str,
        arguments: &[&str],
    ) -> Result<String, DriverError> {
        let socket = self.socket(cluster, node);
        let mut all = vec!["-H", socket.as_str()];
        all.extend_from_slice(arguments);
        run("docker", &all).await
    }

    /// Writes the node's server certificate from the cluster CA (managers, TLS clusters).
    fn write_server_certificates(
        &self,
        spec: &ClusterSpec,
        node: &NodeState,
    ) -> Result<(), DriverError> {
        if node.role != "master" || spec.template.tls_disabled {
            return Ok(());
        }
        let directory = self.node_dir(spec.cluster.uuid, &node.name).join("tls");
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let authority = spec
            .authority
            .as_ref()
            .ok_or_else(|| failed("The cluster's certificate authority is missing."))?;
        let server = magnum_certs::issue_server_certificate(
            authority,
            &node.name,
            &[node.address.clone(), "127.0.0.1".to_owned()],
            3650,
        )
        .map_err(|error| failed(error.to_string()))?;
        write_private(&directory.join("ca.pem"), authority.cert_pem.as_bytes())?;
        write_private(&directory.join("cert.pem"), server.cert_pem.as_bytes())?;
        write_private(&directory.join("key.pem"), server.key_pem.as_bytes())
    }

    async fn start_dockerd(&self, spec: &ClusterSpec, node: &NodeState) -> Result<(), DriverError> {
        self.write_server_certificates(spec, node)?;
        let hostname = node_hostname(&spec.cluster.display_name(), &node.name);
        self.launch_dockerd(
            spec.cluster.uuid,
            node,
            !spec.template.tls_disabled,
            &hostname,
        )
        .await
    }

    /// Starts the node's sandbox and waits until its dockerd answers.
    async fn launch_dockerd(
        &self,
        cluster: Uuid,
        node: &NodeState,
        tls: bool,
        hostname: &str,
    ) -> Result<(), DriverError> {
        let sandbox = self.sandbox(cluster, &node.name, hostname);
        // Nothing else may run in the node's network namespace: a dockerd that outlived its
        // record, or one of a version before the sandbox, would hold the node's ports.
        if let Ok(pids) = run("ip", &["netns", "pids", &Self::netns(cluster, &node.name)]).await {
            for pid in pids.split_whitespace() {
                run_quietly("kill", &["-KILL", pid]).await;
            }
        }
        // Paths as the node sees them, inside its private root.
        let mut arguments: Vec<String> = vec![
            "-H".into(),
            "unix:///run/magnum/docker.sock".into(),
            "--storage-driver".into(),
            "overlay2".into(),
            "--exec-opt".into(),
            "native.cgroupdriver=cgroupfs".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if node.role == "master" {
            if tls {
                arguments.extend([
                    "-H".into(),
                    format!("tcp://{}:{TLS_PORT}", node.address),
                    "--tlsverify".into(),
                    "--tlscacert".into(),
                    "/etc/docker/tls/ca.pem".into(),
                    "--tlscert".into(),
                    "/etc/docker/tls/cert.pem".into(),
                    "--tlskey".into(),
                    "/etc/docker/tls/key.pem".into(),
                ]);
            } else {
                arguments.extend(["-H".into(), format!("tcp://{}:{PLAIN_PORT}", node.address)]);
            }
        }
        let uid_slot = self
            .claims
            .claim_uid_slot(&sandbox.directory, node.uid_slot)?;
        if node.uid_slot != Some(uid_slot) {
            self.record_uid_slot(cluster, &node.name, uid_slot)?;
        }
        let (vcpus, ram_mib) = node
            .flavor
            .as_deref()
            .and_then(|flavor| self.flavors.get(flavor))
            .map_or((None, None), |(vcpus, ram_mib)| {
                (Some(*vcpus), Some(*ram_mib))
            });
        let limits = Limits {
            vcpus,
            ram_mib,
            pids: self.max_pids_per_node,
        };
        // Files, cgroups and a short-lived setsid: blocking work, kept off the async runtime.
        let launched = {
            let sandbox = sandbox.clone();
            let authz_binary = self.authz_binary.clone();
            tokio::task::spawn_blocking(move || {
                sandbox.launch(&authz_binary, uid_slot, limits, &arguments)
            })
            .await
        };
        launched.map_err(|error| failed(format!("cannot start node {}: {error}", node.name)))??;
        let started = Instant::now();
        loop {
            if self
                .docker(cluster, &node.name, &["info", "--format", "{{.ID}}"])
                .await
                .is_ok()
            {
                return Ok(());
            }
            // A sandbox that could not be built ends at once: say why without waiting.
            let gone = sandbox.pid().is_none() && started.elapsed() > Duration::from_secs(2);
            if gone || started.elapsed() > Duration::from_secs(30) {
                return Err(failed(format!(
                    "dockerd of node {} did not start{}: {}",
                    node.name,
                    if gone { "" } else { " within 30 s" },
                    sandbox.log_tail(3)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records a node's uid range the moment it is claimed, so that a crash cannot lose it.
    fn record_uid_slot(&self, cluster: Uuid, node: &str, slot: u32) -> Result<(), DriverError> {
        let Some(mut state) = self.load(cluster) else {
            return Ok(());
        };
        if let Some(stored) = state.nodes.iter_mut().find(|stored| stored.name == node) {
            stored.uid_slot = Some(slot);
        }
        self.save(cluster, &state)
    }

    async fn stop_dockerd(&self, cluster: Uuid, node: &str) {
        self.stop_node(cluster, node, sandbox::STOP_GRACE).await;
    }

    /// Stops the node's sandbox, giving its dockerd `grace` to shut down cleanly.
    async fn stop_node(&self, cluster: Uuid, node: &str, grace: Duration) {
        self.sandbox(cluster, node, "").stop(grace).await;
        // Whatever is left in the node's network namespace (a sandbox from before its record
        // was written) goes by PID.
        let netns = Self::netns(cluster, node);
        if let Ok(pids) = run("ip", &["netns", "pids", &netns]).await {
            for pid in pids.split_whitespace() {
                run_quietly("kill", &["-KILL", pid]).await;
            }
        }
    }

    async fn teardown_node(&self, cluster: Uuid, node: &str) {
        self.teardown_node_within(cluster, node, sandbox::STOP_GRACE)
            .await;
    }

    /// Tears the node down; its dockerd gets `grace` to stop (none for a node that never
    /// joined: it holds nothing worth a clean shutdown).
    async fn teardown_node_within(&self, cluster: Uuid, node: &str, grace: Duration) {
        self.stop_node(cluster, node, grace).await;
        run_quietly("ip", &["link", "del", &Self::veth(cluster, node)]).await;
        run_quietly("ip", &["netns", "del", &Self::netns(cluster, node)]).await;
        let sandbox = self.sandbox(cluster, node, "");
        sandbox.remove_cgroups();
        self.claims.release(&sandbox.directory);
        for directory in [&sandbox.directory, &sandbox.run_directory] {
            remove_tree(directory);
        }
    }

    fn manager(state: &ClusterState) -> Option<&NodeState> {
        state
            .nodes
            .iter()
            .find(|node| node.role == "master" && node.swarm_id.is_some())
    }

    async fn add_node(
        &self,
        spec: &ClusterSpec,
        state: &mut ClusterState,
        nodegroup: &magnum_domain::cluster::NodeGroup,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let cluster = spec.cluster.uuid;
        if self.nodes_on_host() >= self.max_nodes {
            return Err(failed(format!(
                "This host already runs the {} nodes the local driver allows (drivers.local.max_nodes).",
                self.max_nodes
            )));
        }
        let index = state.next_node;
        state.next_node += 1;
        let role = if nodegroup.is_master() {
            "master"
        } else {
            "worker"
        };
        let node = NodeState {
            name: format!("n{index}"),
            nodegroup: nodegroup.uuid,
            role: role.to_owned(),
            address: self.address(state, index),
            swarm_id: None,
            uid_slot: None,
            flavor: nodegroup.flavor_id.clone(),
        };
        progress
            .report(format!(
                "Starting node {} ({}) of nodegroup {}.",
                node.name, node.address, nodegroup.name
            ))
            .await;
        // A claim whose node directory does not exist counts as stale: make it first.
        let directory = self.node_dir(cluster, &node.name);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let mut node = node;
        node.uid_slot = Some(self.claims.claim_uid_slot(&directory, None)?);
        state.nodes.push(node.clone());
        self.save(cluster, state)?;
        self.create_network(cluster, &node.name, &node.address)
            .await?;
        self.start_dockerd(spec, &node).await?;
        let rootfs = self.node_rootfs().await?;
        self.docker(
            cluster,
            &node.name,
            &[
                "import",
                "-c",
                "CMD [\"/bin/sh\"]",
                &rootfs.display().to_string(),
                NODE_IMAGE,
            ],
        )
        .await?;
        let swarm_id = self.join(spec, state, &node).await?;
        if let Some(stored) = state
            .nodes
            .iter_mut()
            .find(|stored| stored.name == node.name)
        {
            stored.swarm_id = Some(swarm_id);
        }
        self.save(cluster, state)
    }

    async fn join(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        node: &NodeState,
    ) -> Result<String, DriverError> {
        let cluster = spec.cluster.uuid;
        let listen = format!("{}:{SWARM_PORT}", node.address);
        match Self::manager(state) {
            None => {
                self.docker(
                    cluster,
                    &node.name,
                    &[
                        "swarm",
                        "init",
                        "--advertise-addr",
                        &node.address,
                        "--listen-addr",
                        &listen,
                        "--dispatcher-heartbeat",
                        "1s",
                    ],
                )
                .await?;
            }
            Some(manager) => {
                let kind = if node.role == "master" {
                    "manager"
                } else {
                    "worker"
                };
                let token = self
                    .docker(cluster, &manager.name, &["swarm", "join-token", "-q", kind])
                    .await?;
                self.docker(
                    cluster,
                    &node.name,
                    &[
                        "swarm",
                        "join",
                        "--token",
                        &token,
                        "--advertise-addr",
                        &node.address,
                        "--listen-addr",
                        &listen,
                        &format!("{}:{SWARM_PORT}", manager.address),
                    ],
                )
                .await?;
            }
        }
        let id = self
            .docker(
                cluster,
                &node.name,
                &["info", "--format", "{{.Swarm.NodeID}}"],
            )
            .await?;
        let manager =
            Self::manager(state).map_or(node.name.clone(), |manager| manager.name.clone());
        let nodegroup = spec
            .nodegroups
            .iter()
            .find(|group| group.uuid == node.nodegroup);
        let mut labels = Vec::new();
        if let Some(group) = nodegroup {
            for (key, value) in &group.node_labels {
                labels.push(format!("{key}={}", value.as_str().unwrap_or_default()));
            }
        }
        // The driver's own labels come last: a user's node label of the same name cannot
        // take their place.
        labels.push(format!(
            "magnum.nodegroup={}",
            nodegroup.map_or("", |group| group.name.as_str())
        ));
        labels.push(format!("magnum.role={}", node.role));
        let mut arguments = vec!["node".to_owned(), "update".to_owned()];
        for label in labels {
            arguments.push("--label-add".to_owned());
            arguments.push(label);
        }
        arguments.push(id.clone());
        let references: Vec<&str> = arguments.iter().map(String::as_str).collect();
        self.docker(cluster, &manager, &references).await?;
        Ok(id)
    }

    async fn remove_node(
        &self,
        cluster: Uuid,
        state: &mut ClusterState,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        progress.report(format!("Removing node {name}.")).await;
        let node = state.nodes.iter().find(|node| node.name == name).cloned();
        let manager = Self::manager(state)
            .filter(|manager| manager.name != name)
            .cloned();
        if let (Some(node), Some(manager)) = (&node, &manager) {
            if let Some(id) = &node.swarm_id {
                // Each step is a courtesy to the swarm: the node is torn down below whatever
                // they answer, and `node rm --force` drops a node that could not leave.
                let _ = self
                    .docker(
                        cluster,
                        &manager.name,
                        &["node", "update", "--availability", "drain", id],
                    )
                    .await;
                let _ = self
                    .docker(cluster, name, &["swarm", "leave", "--force"])
                    .await;
                if node.role == "master" {
                    let _ = self
                        .docker(cluster, &manager.name, &["node", "demote", id])
                        .await;
                }
                let _ = self
                    .docker(cluster, &manager.name, &["node", "rm", "--force", id])
                    .await;
            }
        }
        self.teardown_node(cluster, name).await;
        state.nodes.retain(|node| node.name != name);
        self.save(cluster, state)
    }

    fn cluster_lock(&self, cluster: Uuid) -> ClusterLock {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(cluster).or_default().clone()
    }

    fn forget_lock(&self, cluster: Uuid) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.remove(&cluster);
    }

    /// A cluster whose deletion started: nothing may bring its nodes back, even after a crash.
    fn is_being_deleted(&self, cluster: Uuid) -> bool {
        self.cluster_dir(cluster).join("deleting").exists()
    }

    /// Nodes of every cluster on this host.
    pub fn nodes_on_host(&self) -> usize {
        self.known_clusters()
            .into_iter()
            .filter_map(|cluster| self.load(cluster))
            .map(|state| state.nodes.len())
            .sum()
    }

    /// Puts back the firewall table of every cluster that lost it (a host `nft flush
    /// ruleset`, a firewall service reloaded): one `nft list tables` per call.
    pub async fn restore_firewalls(&self) {
        let Ok(tables) = run("nft", &["list", "tables"]).await else {
            return;
        };
        for cluster in self.known_clusters() {
            let table = Self::firewall_table(cluster);
            let present = tables
                .lines()
                .any(|line| line.trim() == format!("table inet {table}"));
            if present || self.load(cluster).is_none() {
                continue;
            }
            tracing::warn!(cluster.id = %cluster, "the cluster's firewall table was gone; installing it again");
            if let Err(error) = sandbox::install_firewall(&table, &Self::bridge(cluster)).await {
                tracing::error!(cluster.id = %cluster, %error, "cannot restore the cluster's firewall table");
            }
        }
    }

    /// Clusters the driver has records of.
    pub fn known_clusters(&self) -> Vec<Uuid> {
        std::fs::read_dir(self.state_dir.join("clusters"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cluster's health from its managers' view and its node processes, restarting
    /// nodes whose dockerd died when the cluster asked for auto-healing. `None` while an
    /// operation changes the cluster or it has no nodes yet.
    pub async fn check_health(
        &self,
        cluster: Uuid,
    ) -> Option<(
        magnum_domain::cluster::HealthStatus,
        serde_json::Map<String, serde_json::Value>,
    )> {
        use magnum_domain::cluster::HealthStatus;
        use serde_json::Value;
        // An operation changing the cluster has the lock: its nodes are in flux.
        let _lock = self.cluster_lock(cluster).try_lock_owned().ok()?;
        if self.is_being_deleted(cluster) {
            return None;
        }
        let state = self.load(cluster)?;
        if state.nodes.is_empty() || state.nodes.iter().any(|node| node.swarm_id.is_none()) {
            return None;
        }
        for node in &state.nodes {
            self.sandbox(cluster, &node.name, "").trim_log();
        }
        let mut reason = serde_json::Map::new();
        let manager = state
            .nodes
            .iter()
            .find(|node| node.role == "master" && self.node_pid(cluster, &node.name).is_some());
        let listing = match manager {
            Some(manager) => self
                .docker(
                    cluster,
                    &manager.name,
                    &["node", "ls", "--format", "{{.ID}} {{.Status}}"],
                )
                .await
                .map_err(|error| error.to_string()),
            None => Err("no manager is running".to_owned()),
        };
        let api_ok = listing.is_ok();
        reason.insert(
            "api".to_owned(),
            Value::String(match &listing {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.clone(),
            }),
        );
        let listing = listing.unwrap_or_default();
        let mut all_ready = true;
        for node in &state.nodes {
            let id = node.swarm_id.as_deref().unwrap_or("-");
            let ready = self.node_pid(cluster, &node.name).is_some()
                && listing.lines().any(|line| line == format!("{id} Ready"));
            all_ready &= ready;
            reason.insert(
                format!("{}-{}.Ready", state.name, node.name),
                Value::String(if ready { "True" } else { "False" }.to_owned()),
            );
        }
        let status = if api_ok && all_ready {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        // Healing comes after the report, so that what was seen is what is published.
        if state.auto_healing && status == HealthStatus::Unhealthy {
            for node in &state.nodes {
                if self.node_pid(cluster, &node.name).is_none() {
                    tracing::warn!(cluster.id = %cluster, node = %node.name, "node dockerd is down; restarting it (auto-healing)");
                    let hostname = node_hostname(&state.name, &node.name);
                    let restarted = async {
                        self.create_network(cluster, &node.name, &node.address)
                            .await?;
                        self.launch_dockerd(cluster, node, state.tls, &hostname)
                            .await
                    };
                    if let Err(error) = restarted.await {
                        tracing::warn!(cluster.id = %cluster, node = %node.name, %error, "auto-healing failed");
                    }
                }
            }
        }
        Some((status, reason))
    }

    pub async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let spec = request.spec;
        let cluster = spec.cluster.uuid;
        let _lock = self.cluster_lock(cluster).lock_owned().await;
        let mut state = match self.load(cluster) {
            Some(state) => state,
            None => self.allocate(
                cluster,
                ClusterState {
                    subnet: 0,
                    next_node: 1,
                    nodes: Vec::new(),
                    name: spec.cluster.display_name(),
                    tls: !spec.template.tls_disabled,
                    auto_healing: false,
                },
            )?,
        };
        state.name = spec.cluster.display_name();
        state.tls = !spec.template.tls_disabled;
        state.auto_healing = spec.cluster.labels.get("auto_healing_enabled") == Some("true");
        self.save(cluster, &state)?;
        self.ensure_bridge(cluster, &state).await?;
        // Nodes whose dockerd died (a host restart, a kill) are started again on their data.
        for node in state.nodes.clone() {
            if node.swarm_id.is_some() && self.node_pid(cluster, &node.name).is_none() {
                progress
                    .report(format!("Restarting the dockerd of node {}.", node.name))
                    .await;
                self.create_network(cluster, &node.name, &node.address)
                    .await?;
                self.start_dockerd(spec, &node).await?;
            } else if node.swarm_id.is_none() {
                // Interrupted while being added: start it over, without waiting for it.
                self.teardown_node_within(cluster, &node.name, Duration::ZERO)
                    .await;
                state.nodes.retain(|stored| stored.name != node.name);
                self.save(cluster, &state)?;
            }
        }
        if request.action == Action::RotateCa {
            progress
                .report("Issuing new server certificates from the new CA.".to_owned())
                .await;
            for node in state.nodes.iter().filter(|node| node.role == "master") {
                self.stop_dockerd(cluster, &node.name).await;
                self.start_dockerd(spec, node).await?;
            }
        }
        // Masters first: workers need a manager to join.
        let mut groups: Vec<&magnum_domain::cluster::NodeGroup> = spec.nodegroups.iter().collect();
        groups.sort_by_key(|group| !group.is_master());
        for group in groups {
            let wanted = if group.status == magnum_domain::cluster::ClusterStatus::DeleteInProgress
            {
                0
            } else {
                usize::try_from(group.node_count).unwrap_or(0)
            };
            loop {
                let members: Vec<NodeState> = state
                    .nodes
                    .iter()
                    .filter(|node| node.nodegroup == group.uuid)
                    .cloned()
                    .collect();
                if members.len() == wanted {
                    break;
                }
                if members.len() < wanted {
                    self.add_node(spec, &mut state, group, progress).await?;
                } else {
                    let victim = members
                        .iter()
                        .find(|node| {
                            request.nodes_to_remove.iter().any(|wanted| {
                                wanted == &node.name
                                    || wanted == &node.address
                                    || Some(wanted) == node.swarm_id.as_ref()
                            })
                        })
                        .or_else(|| members.last())
                        .map(|node| node.name.clone())
                        .unwrap_or_default();
                    self.remove_node(cluster, &mut state, &victim, progress)
                        .await?;
                }
            }
        }
        // Nodegroups that no longer exist lose their nodes too.
        let orphans: Vec<String> = state
            .nodes
            .iter()
            .filter(|node| {
                !spec
                    .nodegroups
                    .iter()
                    .any(|group| group.uuid == node.nodegroup)
            })
            .map(|node| node.name.clone())
            .collect();
        for name in orphans {
            self.remove_node(cluster, &mut state, &name, progress)
                .await?;
        }
        self.wait_until_ready(spec, &state, progress).await?;
        self.observe(spec, &state).await
    }

    /// Done means every node is Ready in the managers' view.
    async fn wait_until_ready(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let cluster = spec.cluster.uuid;
        let Some(manager) = Self::manager(state) else {
            return Ok(());
        };
        // Generous: on a loaded host a restarted manager (CA rotation) and its workers can
        // take a while to find each other again.
        let started = Instant::now();
        let deadline = started + NODES_READY_TIMEOUT;
        let mut reported_ready = None;
        let mut restarted: Vec<String> = Vec::new();
        loop {
            let listing = self
                .docker(
                    cluster,
                    &manager.name,
                    &["node", "ls", "--format", "{{.ID}} {{.Status}}"],
                )
                .await
                .unwrap_or_default();
            let not_ready: Vec<&NodeState> = state
                .nodes
                .iter()
                .filter(|node| {
                    let id = node.swarm_id.as_deref().unwrap_or("-");
                    !listing.lines().any(|line| line == format!("{id} Ready"))
                })
                .collect();
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Say what the manager saw of each node, and leave the node's own account in
                // the operator's log: a reason of just "not Ready" cannot be acted upon.
                let described: Vec<String> = not_ready
                    .iter()
                    .map(|node| {
                        let id = node.swarm_id.as_deref().unwrap_or("-");
                        let seen = listing
                            .lines()
                            .find_map(|line| line.strip_prefix(id)?.strip_prefix(' '))
                            .unwrap_or("absent");
                        let tail = self.sandbox(cluster, &node.name, "").log_tail(8);
                        tracing::warn!(
                            cluster.id = %cluster,
                            node = %node.name,
                            manager_view = seen,
                            dockerd_log_tail = %tail,
                            "node not Ready"
                        );
                        format!("{} ({seen})", node.name)
                    })
                    .collect();
                return Err(failed(format!(
                    "Nodes {} did not become Ready within {} s.",
                    described.join(", "),
                    NODES_READY_TIMEOUT.as_secs()
                )));
            }
            // A node that has not (re)joined long after its manager answers gets its dockerd
            // restarted once: it rejoins from its own swarm state. Seen under load after a
            // manager restart (CA rotation): a worker's agent that never reconnects.
            if started.elapsed() > NODE_REJOIN_NUDGE && !listing.is_empty() {
                for node in not_ready.iter().filter(|node| node.role != "master") {
                    if restarted.contains(&node.name) {
                        continue;
                    }
                    let id = node.swarm_id.as_deref().unwrap_or("-");
                    let seen = listing
                        .lines()
                        .find_map(|line| line.strip_prefix(id)?.strip_prefix(' '))
                        .unwrap_or("absent");
                    let tail = self.sandbox(cluster, &node.name, "").log_tail(8);
                    tracing::warn!(cluster.id = %cluster, node = %node.name, manager_view = seen,
                        dockerd_log_tail = %tail, "node has not rejoined; restarting its dockerd");
                    progress
                        .report(format!(
                            "Node {} did not rejoin the swarm within {} s; restarting its dockerd.",
                            node.name,
                            NODE_REJOIN_NUDGE.as_secs()
                        ))
                        .await;
                    restarted.push(node.name.clone());
                    self.stop_dockerd(cluster, &node.name).await;
                    self.start_dockerd(spec, node).await?;
                }
            }
            // Clients following the cluster (coe --wait) show this count.
            let ready = state.nodes.len() - not_ready.len();
            if reported_ready != Some(ready) {
                progress
                    .report(format!("{ready} of {} nodes Ready.", state.nodes.len()))
                    .await;
                reported_ready = Some(ready);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn observe(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
    ) -> Result<Observed, DriverError> {
        let cluster = spec.cluster.uuid;
        let manager = Self::manager(state);
        let version = match manager {
            Some(manager) => self
                .docker(
                    cluster,
                    &manager.name,
                    &["version", "--format", "{{.Server.Version}}"],
                )
                .await
                .ok(),
            None => None,
        };
        let port = if spec.template.tls_disabled {
            PLAIN_PORT
        } else {
            TLS_PORT
        };
        Ok(Observed {
            stack_id: Some(format!("local-{}", short(cluster))),
            api_address: manager.map(|manager| format!("tcp://{}:{port}", manager.address)),
            coe_version: version.clone(),
            container_version: version.clone(),
            nodegroups: spec
                .nodegroups
                .iter()
                .map(|group| ObservedNodeGroup {
                    uuid: group.uuid,
                    node_addresses: state
                        .nodes
                        .iter()
                        .filter(|node| node.nodegroup == group.uuid)
                        .map(|node| node.address.clone())
                        .collect(),
                    coe_version: version.clone(),
                })
                .collect(),
        })
    }

    pub async fn delete(&self, cluster: Uuid, progress: &dyn Progress) -> Result<(), DriverError> {
        let lock = self.cluster_lock(cluster);
        let _guard = lock.lock().await;
        if let Some(state) = self.load(cluster) {
            write_private(&self.cluster_dir(cluster).join("deleting"), b"")?;
            progress
                .report(format!("Stopping {} nodes.", state.nodes.len()))
                .await;
            // All nodes stop in parallel; each is then torn down.
            let mut stops = tokio::task::JoinSet::new();
            for node in &state.nodes {
                let sandbox = self.sandbox(cluster, &node.name, "");
                stops.spawn(async move { sandbox.stop(sandbox::STOP_GRACE).await });
            }
            stops.join_all().await;
            for node in &state.nodes {
                self.teardown_node(cluster, &node.name).await;
            }
        }
        run_quietly("ip", &["link", "del", &Self::bridge(cluster)]).await;
        sandbox::remove_firewall(&Self::firewall_table(cluster)).await;
        self.claims.release(&self.cluster_dir(cluster));
        remove_tree(&self.cluster_dir(cluster));
        self.forget_lock(cluster);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many clusters allocated at once, as up to 16 operations per conductor (and several
    /// magnumd on one host) may: every one gets its own /24 and short name, by construction
    /// (host-wide claims under one lock), not by timing.
    #[test]
    fn clusters_allocated_concurrently_get_distinct_subnets() {
        let scratch = tempfile::tempdir().unwrap();
        let runtime = Runtime {
            state_dir: scratch.path().join("state"),
            pool: [10, 251],
            max_nodes: 64,
            flavors: std::collections::HashMap::new(),
            locks: std::sync::Arc::default(),
            authz_binary: PathBuf::from("unused"),
            max_pids_per_node: 64,
            claims: std::sync::Arc::new(HostClaims::scratch(scratch.path())),
        };
        let racers: Vec<_> = (0..32)
            .map(|_| {
                let runtime = runtime.clone();
                std::thread::spawn(move || {
                    let cluster = Uuid::new_v4();
                    let state = ClusterState {
                        subnet: 0,
                        next_node: 1,
                        nodes: Vec::new(),
                        name: "c".to_owned(),
                        tls: true,
                        auto_healing: false,
                    };
                    (cluster, runtime.allocate(cluster, state))
                })
            })
            .collect();
        let mut subnets = Vec::new();
        for racer in racers {
            let (cluster, allocated) = racer.join().unwrap();
            let allocated = allocated.unwrap();
            assert!(allocated.subnet >= 1, "{allocated:?}");
            // What was handed out is what the cluster's record says.
            assert_eq!(runtime.load(cluster).unwrap().subnet, allocated.subnet);
            subnets.push(allocated.subnet);
        }
        let mut distinct = subnets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 32, "{subnets:?}");
        let claimed = std::fs::read_dir(scratch.path().join("claims").join("subnets"))
            .unwrap()
            .count();
        assert_eq!(claimed, 32);
    }

    #[test]
    fn node_host_names_fit_in_63_bytes() {
        assert_eq!(node_hostname("web", "n1"), "web-n1");
        let long = "c".repeat(242);
        let name = node_hostname(&long, "n12");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("c-n12"));
    }
}
