//! One node's dockerd: its server certificate, its sandbox started and stopped, and the
//! Docker CLI pointed at it.

use super::*;

impl Runtime {
    /// The host PID of the node's sandbox while it runs.
    pub(crate) fn node_pid(&self, cluster: Uuid, node: &str) -> Option<i32> {
        self.sandbox(cluster, node, "").pid()
    }

    pub(super) async fn docker(
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
    pub(super) fn write_server_certificates(
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

    /// Starts a node's dockerd (timed as the `node_start` step).
    pub(super) async fn start_dockerd(
        &self,
        spec: &ClusterSpec,
        node: &NodeState,
    ) -> Result<(), DriverError> {
        let timer = self.metrics.start(crate::DRIVER_NAME, "node_start");
        let started = async {
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
        .await;
        timer.finish(started.is_ok());
        started
    }

    /// Starts the node's sandbox and waits until its dockerd answers.
    pub(super) async fn launch_dockerd(
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

    pub(super) async fn stop_dockerd(&self, cluster: Uuid, node: &str) {
        self.stop_node(cluster, node, sandbox::STOP_GRACE).await;
    }

    /// Stops the node's sandbox, giving its dockerd `grace` to shut down cleanly.
    pub(super) async fn stop_node(&self, cluster: Uuid, node: &str, grace: Duration) {
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

    /// Tears the node down; its dockerd gets `grace` to stop (none for a node that never
    /// joined, a little for one removed from a cluster: they hold nothing worth a clean
    /// shutdown).
    pub(super) async fn teardown_node_within(&self, cluster: Uuid, node: &str, grace: Duration) {
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
}
