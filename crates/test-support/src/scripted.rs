//! A test double of the Driver contract whose behaviour each cluster scripts through its
//! labels, so that black-box tests (in-process or across a killed and restarted process)
//! can make steps slow, failing or endless:
//!
//! * `test_step_ms`: milliseconds each node takes to converge (default 20);
//! * `test_fail_on`: comma list of `create`, `scale`, `upgrade`, `nodegroup`, `delete`:
//!   those actions fail with a clear reason;
//! * `test_fail_times`: fail only that many times per cluster (default: always);
//! * `test_hang_on`: same list: those actions never finish (timeouts, deletes that overtake).
//! * `test_propose_scale_out`: once a create succeeded, the driver proposes (as the local
//!   driver's autoscaler would, again at every look until its world has them) that many more
//!   nodes for the default worker nodegroup.
//!
//! A double built [`ScriptedDriver::holding_deletes`] holds every delete once it reported
//! removing the nodes: a test that kills its process there knows the delete was running
//! (a label would not do: it would hold the delete the restarted process resumes too).
//!
//! It builds nothing: it keeps an in-memory picture of the nodes it "runs".
//!
//! Its references are fixed (`scripted-image`, flavor `s.small`, network `public`, keypair
//! `testkey`) unless it is given a [`ScriptedCloud`]: the images, flavors, networks and
//! keypairs of a Glance/Nova/Neutron stand-in, so that a client which picks them from those
//! services (Horizon's forms) names references the driver knows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magnum_domain::cluster::{ClusterStatus, HealthStatus};
use magnum_domain::cluster_template::{Coe, ServerType};
use magnum_driver::{
    Action, ClusterSpec, ClusterType, Converge, Driver, DriverError, DriverEvent, Image, Observed,
    ObservedNodeGroup, Progress, ReferenceError, References,
};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

pub const SCRIPTED_DRIVER: &str = "scripted";
pub const SCRIPTED_IMAGE: &str = "scripted-image";
pub const SCRIPTED_FLAVOR: &str = "s.small";
pub const SCRIPTED_NETWORK: &str = "public";

/// What the double was asked to do, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub action: Action,
    pub cluster: Uuid,
    pub nodes_to_remove: Vec<String>,
}

type World = BTreeMap<Uuid, BTreeMap<Uuid, Vec<String>>>;
/// A cloud's references as the scripted driver accepts them, each by id or by name. Images
/// carry their `os_distro`, which the driver then provides (for swarm-mode and Kubernetes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScriptedCloud {
    pub images: Vec<Image>,
    /// (id, name) of each flavor, external network, private network and subnet.
    pub flavors: Vec<(String, String)>,
    pub external_networks: Vec<(String, String)>,
    pub fixed_networks: Vec<(String, String)>,
    pub fixed_subnets: Vec<(String, String)>,
    pub keypairs: Vec<String>,
}

impl ScriptedCloud {
    /// Reads the JSON form `{"images": [{"id", "name", "os_distro"}], "flavors": [{"id",
    /// "name"}], "external_networks": [...], "fixed_networks": [...], "fixed_subnets": [...],
    /// "keypairs": ["name"]}` (every key optional).
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let text = |item: &Value, key: &str| -> Result<String, String> {
            item[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{key} must be a string in {item}"))
        };
        let list = |key: &str| -> Result<Vec<Value>, String> {
            match &value[key] {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => Ok(items.clone()),
                other => Err(format!("{key} must be a list, not {other}")),
            }
        };
        let pairs = |key: &str| -> Result<Vec<(String, String)>, String> {
            list(key)?
                .iter()
                .map(|item| Ok((text(item, "id")?, text(item, "name")?)))
                .collect()
        };
        Ok(Self {
            images: list("images")?
                .iter()
                .map(|item| {
                    Ok(Image {
                        id: text(item, "id")?,
                        name: text(item, "name")?,
                        os_distro: Some(text(item, "os_distro")?),
                    })
                })
                .collect::<Result<_, String>>()?,
            flavors: pairs("flavors")?,
            external_networks: pairs("external_networks")?,
            fixed_networks: pairs("fixed_networks")?,
            fixed_subnets: pairs("fixed_subnets")?,
            keypairs: list("keypairs")?
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("keypairs must be names, not {item}"))
                })
                .collect::<Result<_, String>>()?,
        })
    }
}

impl ScriptedCloud {
    /// The JSON form [`ScriptedCloud::from_json`] reads.
    pub fn to_json(&self) -> Value {
        let pairs = |items: &[(String, String)]| -> Vec<Value> {
            items
                .iter()
                .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
                .collect()
        };
        serde_json::json!({
            "images": self.images.iter().map(|image| serde_json::json!({
                "id": image.id, "name": image.name, "os_distro": image.os_distro,
            })).collect::<Vec<_>>(),
            "flavors": pairs(&self.flavors),
            "external_networks": pairs(&self.external_networks),
            "fixed_networks": pairs(&self.fixed_networks),
            "fixed_subnets": pairs(&self.fixed_subnets),
            "keypairs": self.keypairs,
        })
    }
}

/// Whether `reference` is the id or the name of one of `known`.
fn names_one(known: &[(String, String)], reference: &str) -> bool {
    known
        .iter()
        .any(|(id, name)| id == reference || name == reference)
}

pub struct ScriptedDriver {
    cloud: Option<ScriptedCloud>,
    /// Nodes per nodegroup per cluster: the "world".
    world: Arc<Mutex<World>>,
    calls: Mutex<Vec<Call>>,
    events: broadcast::Sender<DriverEvent>,
    next_address: Mutex<u32>,
    failures: Mutex<BTreeMap<Uuid, u32>>,
    hold_deletes: bool,
}

impl Default for ScriptedDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedDriver {
    pub fn new() -> Self {
        Self::with_cloud(None)
    }

    /// A double whose references are `cloud`'s (the fixed ones when `None`).
    pub fn with_cloud(cloud: Option<ScriptedCloud>) -> Self {
        Self {
            cloud,
            world: Arc::new(Mutex::new(BTreeMap::new())),
            calls: Mutex::new(Vec::new()),
            events: broadcast::channel(64).0,
            next_address: Mutex::new(10),
            failures: Mutex::new(BTreeMap::new()),
            hold_deletes: false,
        }
    }

    /// This double, holding every delete for good once it reported "Removing every node.".
    pub fn holding_deletes(self) -> Self {
        Self {
            hold_deletes: true,
            ..self
        }
    }

    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Nodes the double runs for a cluster.
    pub fn node_count(&self, cluster: Uuid) -> usize {
        self.world
            .lock()
            .unwrap()
            .get(&cluster)
            .map_or(0, |groups| groups.values().map(Vec::len).sum())
    }

    pub fn has_cluster(&self, cluster: Uuid) -> bool {
        self.world.lock().unwrap().contains_key(&cluster)
    }

    /// Pushes a health change, as a driver watching its nodes would.
    pub fn report_health(&self, cluster: Uuid, status: HealthStatus, reason: Map<String, Value>) {
        let _ = self.events.send(DriverEvent::Health {
            cluster,
            status,
            reason,
        });
    }

    fn address(&self) -> String {
        let mut next = self.next_address.lock().unwrap();
        *next += 1;
        format!("10.0.{}.{}", *next / 250, *next % 250)
    }
}

fn label_lists(spec: &ClusterSpec, label: &str) -> Vec<String> {
    spec.cluster
        .labels
        .get(label)
        .unwrap_or_default()
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn script_name(action: Action) -> &'static str {
    match action {
        Action::CreateCluster => "create",
        Action::ScaleWorkers | Action::ScaleMasters => "scale",
        Action::UpgradeCluster => "upgrade",
        Action::DeleteCluster => "delete",
        Action::CreateNodegroup | Action::UpdateNodegroup | Action::DeleteNodegroup => "nodegroup",
        Action::RotateCa | Action::RotateCredentials => "rotate",
    }
}

impl ScriptedDriver {
    async fn scripted_pause(&self, spec: &ClusterSpec, action: Action) -> Result<(), DriverError> {
        let name = script_name(action);
        if label_lists(spec, "test_hang_on")
            .iter()
            .any(|item| item == name)
        {
            std::future::pending::<()>().await;
        }
        if label_lists(spec, "test_fail_on")
            .iter()
            .any(|item| item == name)
        {
            let limit: Option<u32> = spec
                .cluster
                .labels
                .get("test_fail_times")
                .and_then(|value| value.parse().ok());
            let failed_before = {
                let mut failures = self.failures.lock().unwrap();
                let count = failures.entry(spec.cluster.uuid).or_default();
                *count += 1;
                *count - 1
            };
            if limit.is_none_or(|limit| failed_before < limit) {
                tokio::time::sleep(step(spec)).await;
                return Err(DriverError::Failed(format!(
                    "The scripted driver was told to fail on {name}."
                )));
            }
        }
        Ok(())
    }
}

impl ScriptedDriver {
    /// With `test_propose_scale_out`: proposes the default worker's growth every 300 ms (at
    /// most 100 times) until the world has the nodes.
    fn propose_scale_out(&self, spec: &ClusterSpec) {
        let Some(add) = spec
            .cluster
            .labels
            .get("test_propose_scale_out")
            .and_then(|value| value.parse::<i64>().ok())
        else {
            return;
        };
        let Some(worker) = spec
            .nodegroups
            .iter()
            .find(|nodegroup| nodegroup.is_default && !nodegroup.is_master())
        else {
            return;
        };
        let (cluster, nodegroup) = (spec.cluster.uuid, worker.uuid);
        let wanted = usize::try_from(worker.node_count + add).unwrap_or(0);
        let sender = self.events.clone();
        let world = self.world.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let has = world
                    .lock()
                    .unwrap()
                    .get(&cluster)
                    .and_then(|groups| groups.get(&nodegroup))
                    .map_or(0, Vec::len);
                if has >= wanted {
                    return;
                }
                let _ = sender.send(DriverEvent::Proposal {
                    cluster,
                    proposal: magnum_driver::Proposal::ScaleOut {
                        nodegroup,
                        add,
                        why: "the scripted driver was told to ask for more nodes".to_owned(),
                    },
                    policy: magnum_driver::Policy {
                        cool_down_seconds: 0,
                    },
                });
            }
        });
    }
}

/// The checks of [`Driver::validate_references`] against a configured cloud.
fn validate_in(cloud: &ScriptedCloud, references: &References<'_>) -> Result<(), ReferenceError> {
    for flavor in [references.flavor_id, references.master_flavor_id]
        .into_iter()
        .flatten()
    {
        if !names_one(&cloud.flavors, flavor) {
            return Err(ReferenceError::FlavorNotFound(flavor.to_owned()));
        }
    }
    if let Some(network) = references.external_network_id {
        if !names_one(&cloud.external_networks, network) {
            return Err(ReferenceError::ExternalNetworkNotFound(network.to_owned()));
        }
    }
    if let Some(network) = references.fixed_network {
        if !names_one(&cloud.fixed_networks, network) {
            return Err(ReferenceError::FixedNetworkNotFound(network.to_owned()));
        }
    }
    if let Some(subnet) = references.fixed_subnet {
        if !names_one(&cloud.fixed_subnets, subnet) {
            return Err(ReferenceError::FixedSubnetNotFound(subnet.to_owned()));
        }
    }
    if let Some(keypair) = references.keypair {
        if !cloud.keypairs.iter().any(|known| known == keypair) {
            return Err(ReferenceError::KeypairNotFound(keypair.to_owned()));
        }
    }
    Ok(())
}

fn step(spec: &ClusterSpec) -> Duration {
    Duration::from_millis(
        spec.cluster
            .labels
            .get("test_step_ms")
            .and_then(|value| value.parse().ok())
            .unwrap_or(20),
    )
}

#[async_trait::async_trait]
impl Driver for ScriptedDriver {
    fn name(&self) -> &str {
        SCRIPTED_DRIVER
    }

    fn provides(&self) -> Vec<ClusterType> {
        let mut distros = vec!["scripted".to_owned()];
        for image in self.cloud.iter().flat_map(|cloud| &cloud.images) {
            if let Some(distro) = &image.os_distro {
                if !distros.contains(distro) {
                    distros.push(distro.clone());
                }
            }
        }
        distros
            .into_iter()
            .flat_map(|os_distro| {
                [Coe::SwarmMode, Coe::Kubernetes]
                    .into_iter()
                    .map(move |coe| ClusterType {
                        server_type: ServerType::Vm,
                        os_distro: os_distro.clone(),
                        coe,
                    })
            })
            .collect()
    }

    fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError> {
        if let Some(cloud) = &self.cloud {
            return Ok(cloud
                .images
                .iter()
                .find(|image| image.id == reference || image.name == reference)
                .cloned());
        }
        Ok((reference == SCRIPTED_IMAGE).then(|| Image {
            id: SCRIPTED_IMAGE.to_owned(),
            name: SCRIPTED_IMAGE.to_owned(),
            os_distro: Some("scripted".to_owned()),
        }))
    }

    fn validate_references(&self, references: &References<'_>) -> Result<(), ReferenceError> {
        if let Some(cloud) = &self.cloud {
            return validate_in(cloud, references);
        }
        for flavor in [references.flavor_id, references.master_flavor_id]
            .into_iter()
            .flatten()
        {
            if flavor != SCRIPTED_FLAVOR {
                return Err(ReferenceError::FlavorNotFound(flavor.to_owned()));
            }
        }
        if let Some(network) = references.external_network_id {
            if network != SCRIPTED_NETWORK {
                return Err(ReferenceError::ExternalNetworkNotFound(network.to_owned()));
            }
        }
        if let Some(keypair) = references.keypair {
            if keypair != "testkey" {
                return Err(ReferenceError::KeypairNotFound(keypair.to_owned()));
            }
        }
        Ok(())
    }

    fn supports(&self, action: Action) -> bool {
        !matches!(action, Action::ScaleMasters | Action::RotateCredentials)
    }

    async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let spec = request.spec;
        let cluster = spec.cluster.uuid;
        self.calls.lock().unwrap().push(Call {
            action: request.action,
            cluster,
            nodes_to_remove: request.nodes_to_remove.to_vec(),
        });
        self.scripted_pause(spec, request.action).await?;
        let pause = step(spec);
        for nodegroup in &spec.nodegroups {
            let wanted = if nodegroup.status == ClusterStatus::DeleteInProgress {
                0
            } else {
                usize::try_from(nodegroup.node_count).unwrap_or(0)
            };
            loop {
                let current = self
                    .world
                    .lock()
                    .unwrap()
                    .get(&cluster)
                    .and_then(|groups| groups.get(&nodegroup.uuid))
                    .map_or(0, Vec::len);
                if current == wanted {
                    break;
                }
                tokio::time::sleep(pause).await;
                if current < wanted {
                    progress
                        .report(format!(
                            "Starting node {} of {wanted} in nodegroup {}.",
                            current + 1,
                            nodegroup.name
                        ))
                        .await;
                    let address = self.address();
                    self.world
                        .lock()
                        .unwrap()
                        .entry(cluster)
                        .or_default()
                        .entry(nodegroup.uuid)
                        .or_default()
                        .push(address.clone());
                    progress
                        .event(
                            magnum_driver::ClusterEvent::normal(
                                "NodeStarted",
                                format!("Node {address} started."),
                            )
                            .in_nodegroup(&nodegroup.name)
                            .on_node(&address),
                        )
                        .await;
                } else {
                    progress
                        .report(format!(
                            "Removing a node of nodegroup {} ({current} left).",
                            nodegroup.name
                        ))
                        .await;
                    let mut world = self.world.lock().unwrap();
                    let nodes = world
                        .entry(cluster)
                        .or_default()
                        .entry(nodegroup.uuid)
                        .or_default();
                    let chosen = nodes
                        .iter()
                        .position(|node| request.nodes_to_remove.contains(node))
                        .unwrap_or(nodes.len() - 1);
                    nodes.remove(chosen);
                }
            }
        }
        if request.action == Action::CreateCluster {
            self.propose_scale_out(spec);
        }
        let world = self.world.lock().unwrap();
        let groups = world.get(&cluster).cloned().unwrap_or_default();
        let masters = spec
            .nodegroups
            .iter()
            .find(|nodegroup| nodegroup.is_master())
            .and_then(|nodegroup| groups.get(&nodegroup.uuid))
            .and_then(|nodes| nodes.first().cloned());
        Ok(Observed {
            stack_id: Some(format!("scripted-{}", &cluster.simple().to_string()[..8])),
            api_address: masters.map(|address| format!("tcp://{address}:2376")),
            coe_version: Some("1.0.0".to_owned()),
            container_version: Some("1.0.0".to_owned()),
            nodegroups: spec
                .nodegroups
                .iter()
                .map(|nodegroup| ObservedNodeGroup {
                    uuid: nodegroup.uuid,
                    node_addresses: groups.get(&nodegroup.uuid).cloned().unwrap_or_default(),
                    coe_version: Some("1.0.0".to_owned()),
                })
                .collect(),
        })
    }

    async fn delete(&self, spec: &ClusterSpec, progress: &dyn Progress) -> Result<(), DriverError> {
        self.calls.lock().unwrap().push(Call {
            action: Action::DeleteCluster,
            cluster: spec.cluster.uuid,
            nodes_to_remove: Vec::new(),
        });
        self.scripted_pause(spec, Action::DeleteCluster).await?;
        progress.report("Removing every node.".to_owned()).await;
        if self.hold_deletes {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(step(spec)).await;
        self.world.lock().unwrap().remove(&spec.cluster.uuid);
        Ok(())
    }

    fn events(&self) -> Option<broadcast::Receiver<DriverEvent>> {
        Some(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references<'a>(flavor: &'a str, network: &'a str, keypair: &'a str) -> References<'a> {
        References {
            flavor_id: Some(flavor),
            master_flavor_id: None,
            external_network_id: Some(network),
            fixed_network: None,
            fixed_subnet: None,
            keypair: Some(keypair),
            boot_volume_size: None,
        }
    }

    #[test]
    fn a_cloud_replaces_the_fixed_references_by_id_or_name() {
        let cloud = ScriptedCloud::from_json(&serde_json::json!({
            "images": [{"id": "i-1", "name": "fedora-coreos-40", "os_distro": "fedora-coreos"}],
            "flavors": [{"id": "f-1", "name": "m1.small"}],
            "external_networks": [{"id": "n-1", "name": "public"}],
            "keypairs": ["alpha-key"],
        }))
        .unwrap();
        assert_eq!(ScriptedCloud::from_json(&cloud.to_json()).unwrap(), cloud);
        let driver = ScriptedDriver::with_cloud(Some(cloud));
        for reference in ["i-1", "fedora-coreos-40"] {
            let image = driver.find_image(reference).unwrap().unwrap();
            assert_eq!(image.os_distro.as_deref(), Some("fedora-coreos"));
        }
        assert_eq!(driver.find_image(SCRIPTED_IMAGE).unwrap(), None);
        assert!(driver.provides().contains(&ClusterType {
            server_type: ServerType::Vm,
            os_distro: "fedora-coreos".to_owned(),
            coe: Coe::Kubernetes,
        }));
        assert!(driver
            .validate_references(&references("m1.small", "n-1", "alpha-key"))
            .is_ok());
        assert!(driver
            .validate_references(&references("f-1", "public", "alpha-key"))
            .is_ok());
        assert_eq!(
            driver.validate_references(&references(SCRIPTED_FLAVOR, "public", "alpha-key")),
            Err(ReferenceError::FlavorNotFound(SCRIPTED_FLAVOR.to_owned()))
        );
        assert_eq!(
            driver.validate_references(&references("m1.small", "private", "alpha-key")),
            Err(ReferenceError::ExternalNetworkNotFound(
                "private".to_owned()
            ))
        );
        assert_eq!(
            driver.validate_references(&references("m1.small", "public", "testkey")),
            Err(ReferenceError::KeypairNotFound("testkey".to_owned()))
        );
        // Without a cloud, the fixed references.
        let fixed = ScriptedDriver::new();
        assert!(fixed.find_image(SCRIPTED_IMAGE).unwrap().is_some());
        assert!(fixed
            .validate_references(&references(SCRIPTED_FLAVOR, SCRIPTED_NETWORK, "testkey"))
            .is_ok());
    }

    #[test]
    fn a_malformed_cloud_is_refused_with_the_reason() {
        for (json, reason) in [
            (serde_json::json!({"images": {}}), "images must be a list"),
            (
                serde_json::json!({"flavors": [{"id": "f"}]}),
                "name must be a string",
            ),
            (
                serde_json::json!({"keypairs": [1]}),
                "keypairs must be names",
            ),
        ] {
            let error = ScriptedCloud::from_json(&json).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }
}
