//! The driver's records of its clusters (`cluster.json`, written atomically) and the host-wide
//! allocation of a cluster's subnet and short name.

use super::*;

impl Runtime {
    pub(super) fn load(&self, cluster: Uuid) -> Option<ClusterState> {
        let text = std::fs::read_to_string(self.cluster_dir(cluster).join("cluster.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub(super) fn save(&self, cluster: Uuid, state: &ClusterState) -> Result<(), DriverError> {
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
    pub(super) fn allocate(
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

    pub(super) fn address(&self, state: &ClusterState, index: u32) -> String {
        format!(
            "{}.{}.{}.{}",
            self.pool[0],
            self.pool[1],
            state.subnet,
            10 + index
        )
    }

    pub(super) fn gateway(&self, state: &ClusterState) -> String {
        format!("{}.{}.{}.1", self.pool[0], self.pool[1], state.subnet)
    }

    /// Records a node's uid range the moment it is claimed, so that a crash cannot lose it.
    pub(super) fn record_uid_slot(
        &self,
        cluster: Uuid,
        node: &str,
        slot: u32,
    ) -> Result<(), DriverError> {
        let Some(mut state) = self.load(cluster) else {
            return Ok(());
        };
        if let Some(stored) = state.nodes.iter_mut().find(|stored| stored.name == node) {
            stored.uid_slot = Some(slot);
        }
        self.save(cluster, &state)
    }

    /// Nodes of every cluster on this host.
    pub fn nodes_on_host(&self) -> usize {
        self.known_clusters()
            .into_iter()
            .filter_map(|cluster| self.load(cluster))
            .map(|state| state.nodes.len())
            .sum()
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
}
