//! A cluster's bridge behind its firewall table, and each node's network namespace and veth.

use super::*;

impl Runtime {
    /// The cluster's bridge, behind its firewall table (installed first, so that no node is
    /// ever on the bridge without it).
    pub(super) async fn ensure_bridge(
        &self,
        cluster: Uuid,
        state: &ClusterState,
    ) -> Result<(), DriverError> {
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

    pub(super) async fn create_network(
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
            if present {
                continue;
            }
            // A delete removes the table before the cluster's records: one under way (it
            // holds the cluster's lock, or has marked the cluster) must not get it back.
            let Some(_held) = self.try_hold_cluster(cluster) else {
                continue;
            };
            if self.load(cluster).is_none() || self.cluster_dir(cluster).join("deleting").exists() {
                continue;
            }
            tracing::warn!(cluster.id = %cluster, "the cluster's firewall table was gone; installing it again");
            if let Err(error) = sandbox::install_firewall(&table, &Self::bridge(cluster)).await {
                tracing::error!(cluster.id = %cluster, %error, "cannot restore the cluster's firewall table");
            }
        }
    }
}
