//! The `capi` driver: converge = render, check, apply, then follow the watched objects until
//! the cluster is ready, failed, or the conductor's deadline ends the wait.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use magnum_domain::cluster::HealthStatus;
use magnum_domain::cluster_template::{Coe, ServerType};
use magnum_driver::{
    Action, ClusterSpec, ClusterType, Converge, Driver, DriverError, DriverEvent, Image, LiveState,
    Observed, ObservedNodeGroup, Progress, ReferenceError, References,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::addons;
use crate::cache::ObjectCache;
use crate::catalog::{Catalog, Lookups};
use crate::class;
use crate::lookup::CloudLookups;
use crate::management::{Kind, Management, ManagementError};
use crate::names::{self, label, CaPurpose};
use crate::render::{self, ApplicationCredential, ClusterInput, KeyPair, Resolved};
use crate::rotation::{self, LiveAuthority};
use crate::schema::ClassVariables;
use crate::settings::Settings;
use crate::status::{self, Assessment, Desired, Objects, Phase};

pub const DRIVER_NAME: &str = "capi";

/// The annotation on a cluster's credential secret naming the application credential in it,
/// so that a rotation or a delete revokes the right one.
const CREDENTIAL_ID: &str = "magnum-rs.openstack.org/application-credential-id";
/// Beside it, the user it was issued to (the cluster's owner), who must revoke it.
const CREDENTIAL_OWNER: &str = "magnum-rs.openstack.org/application-credential-owner";
/// On everything of a cluster whose records an admin force-deleted: the label the reaper
/// selects by, and when (RFC 3339).
const ABANDONED: &str = "magnum-rs.openstack.org/abandoned";
const ABANDONED_AT: &str = "magnum-rs.openstack.org/abandoned-at";
/// On the marker secret (`<cluster>-abandoned`) a force delete leaves: the reaper's record.
const ABANDONED_MARKER: &str = "magnum-rs.openstack.org/abandoned-marker";
/// How long a delete waits for the cloud provider's load balancers to go.
const LOAD_BALANCER_WAIT: Duration = Duration::from_secs(600);
/// How often a delete looks for load balancers again while Cluster API tears the cluster down.
const LOAD_BALANCER_REPASS: Duration = Duration::from_secs(20);
/// How long a delete keeps trying a cloud it cannot reach before it goes on without it.
const CLOUD_UNREACHABLE_WAIT: Duration = Duration::from_secs(120);
/// How long the start-up check of the management cluster's kinds may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the reaper looks for force-deleted clusters.
const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// The annotation on a cluster's CA secret holding the rollout time of the last CA rotation
/// step written to it, so that a converge resumed after a crash waits for the same roll.
const CA_ROLLOUT_AFTER: &str = "magnum-rs.openstack.org/ca-rollout-after";
/// Beside it, the number of that step.
const CA_ROTATION_STEP: &str = "magnum-rs.openstack.org/ca-rotation-step";

/// A rollout the cluster's machines must go through, owned.
#[derive(Debug, Clone)]
struct PendingRollout {
    after: String,
    purpose: String,
}

impl PendingRollout {
    fn of_ca_secret(secret: &Value) -> Option<Self> {
        let annotations = &secret["metadata"]["annotations"];
        let after = annotations[CA_ROLLOUT_AFTER].as_str()?;
        let step = annotations[CA_ROTATION_STEP].as_str().unwrap_or("?");
        Some(Self {
            after: after.to_owned(),
            purpose: format!("CA rotation step {step} of {}", rotation::STEPS),
        })
    }

    fn as_desired(&self) -> status::Rollout<'_> {
        status::Rollout {
            after: &self.after,
            purpose: &self.purpose,
        }
    }
}
/// How long the admin certificate of a kubeconfig rewritten during a CA rotation is valid
/// (CAPI's own is a year, renewed before it ends).
const KUBECONFIG_VALIDITY_DAYS: i64 = 365;
/// How long the generated etcd and front-proxy CAs are valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// The longest pause between two tries while the management cluster is away.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);
/// A waiter re-reads its cluster at least this often, even without a watch event.
const SAFETY_NET: Duration = Duration::from_secs(2);
/// Health events queued for the conductor.
const EVENT_QUEUE: usize = 1024;

/// Where each cluster's OpenStack credential comes from.
#[async_trait::async_trait]
pub trait CredentialIssuer: Send + Sync {
    /// The credential `cluster` acts with now, good for CAPO and the cloud provider: the
    /// same one until it is rotated (its lifetime, revocation included, is the conductor's).
    async fn issue(&self, spec: &ClusterSpec) -> Result<ApplicationCredential, String>;
}

pub struct CapiDriver {
    settings: Settings,
    cloud: crate::openstack::Cloud,
    catalog: Catalog,
    management: Management,
    cache: Arc<ObjectCache>,
    credentials: Arc<dyn CredentialIssuer>,
    class_variables: ClassVariables,
    events: broadcast::Sender<DriverEvent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The OpenStack ids of what the cluster refers to, as `lookups` give them.
async fn resolve_with(
    lookups: &dyn Lookups,
    spec: &ClusterSpec,
) -> Result<Resolved, ReferenceError> {
    let mut resolved = Resolved::default();
    let mut image_references: Vec<&str> = vec![&spec.template.image_id];
    image_references.extend(
        spec.nodegroups
            .iter()
            .filter_map(|group| group.image_id.as_deref()),
    );
    for reference in image_references {
        // Each reference once: the cloud is asked at most once per name.
        if resolved.images.contains_key(reference) {
            continue;
        }
        let image = lookups
            .image(reference)
            .await?
            .ok_or_else(|| ReferenceError::ImageNotFound(reference.to_owned()))?;
        if reference == spec.template.image_id {
            resolved.os_distro = image.os_distro.clone().unwrap_or_default();
        }
        resolved
            .images
            .insert(reference.to_owned(), image.id.clone());
    }
    let cluster = &spec.cluster;
    let template = &spec.template;
    let flavors = [
        cluster.flavor_id.as_deref(),
        cluster.master_flavor_id.as_deref(),
        template.flavor_id.as_deref(),
        template.master_flavor_id.as_deref(),
    ];
    for reference in flavors.into_iter().flatten().chain(
        spec.nodegroups
            .iter()
            .filter_map(|group| group.flavor_id.as_deref()),
    ) {
        if resolved.flavors.contains_key(reference) {
            continue;
        }
        let flavor = lookups
            .flavor(reference)
            .await?
            .ok_or_else(|| ReferenceError::FlavorNotFound(reference.to_owned()))?;
        resolved
            .flavors
            .insert(reference.to_owned(), flavor.name.clone());
    }
    if let Some(reference) = template.external_network_id.as_deref() {
        let network = lookups
            .external_network(reference)
            .await?
            .ok_or_else(|| ReferenceError::ExternalNetworkNotFound(reference.to_owned()))?;
        resolved.external_network_id = Some(network.id.clone());
    }
    let fixed_network = cluster
        .fixed_network
        .as_deref()
        .or(template.fixed_network.as_deref());
    if let Some(reference) = fixed_network {
        let network = lookups
            .fixed_network(reference)
            .await?
            .ok_or_else(|| ReferenceError::FixedNetworkNotFound(reference.to_owned()))?;
        resolved.fixed_network_id = Some(network.id.clone());
    }
    let fixed_subnet = cluster
        .fixed_subnet
        .as_deref()
        .or(template.fixed_subnet.as_deref());
    if let Some(reference) = fixed_subnet {
        let subnet = lookups
            .fixed_subnet(reference)
            .await?
            .ok_or_else(|| ReferenceError::FixedSubnetNotFound(reference.to_owned()))?;
        resolved.fixed_subnet_id = Some(subnet.id.clone());
    }
    Ok(resolved)
}

impl Drop for CapiDriver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A secret's base64 value as text (empty when absent or not text).
fn decode(value: &Value) -> String {
    use base64::Engine;
    value
        .as_str()
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

fn failed(error: impl std::fmt::Display) -> DriverError {
    DriverError::Failed(error.to_string())
}

impl CapiDriver {
    /// Connects to the management cluster and, when `follow`, starts watching it (a process
    /// that only serves the API validates templates and needs no watch). Must run on the
    /// runtime.
    pub async fn connect(
        settings: Settings,
        catalog: Catalog,
        kubeconfig: &Path,
        credentials: Arc<dyn CredentialIssuer>,
        follow: bool,
    ) -> Result<Self, ManagementError> {
        let cloud = crate::openstack::Cloud::new(&settings.cloud)
            .map_err(ManagementError::Configuration)?;
        let management = Management::connect(kubeconfig, &settings.namespace).await?;
        // A management cluster without CAPI, CAPO or CAAPH (or with older versions) is a
        // configuration error worth refusing to start for; one that is away is not: the
        // watches report it and wait.
        match tokio::time::timeout(DISCOVERY_TIMEOUT, management.unserved_kinds()).await {
            Ok(Ok(missing)) if !missing.is_empty() => {
                let names: Vec<String> = missing
                    .iter()
                    .map(|kind| {
                        let (group, version, name, _) = kind.coordinates();
                        format!("{name} ({group}/{version})")
                    })
                    .collect();
                return Err(ManagementError::Unserved(format!(
                    "it does not serve {}: install Cluster API v1.13, its OpenStack provider v0.14 and the Helm addon provider v0.6 (docs/CAPI.md)",
                    names.join(", ")
                )));
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot check what the management cluster serves yet")
            }
            Err(_) => tracing::warn!("the management cluster did not answer discovery in time"),
        }
        let class_variables = ClassVariables::from_cluster_class(&class::cluster_class(&settings))
            .map_err(|error| ManagementError::Configuration(error.to_string()))?;
        let cache = ObjectCache::new();
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let mut tasks = Vec::new();
        if follow {
            tasks = cache.start(&management);
            tasks.push(tokio::spawn(follow_health(
                cache.clone(),
                events.clone(),
                settings.resync_interval,
            )));
            tasks.push(tokio::spawn(reap_abandoned(
                management.clone(),
                settings.force_delete_grace,
            )));
        }
        Ok(Self {
            settings,
            cloud,
            catalog,
            management,
            cache,
            credentials,
            class_variables,
            events,
            tasks,
        })
    }

    /// The cloud as the API's caller sees it.
    async fn caller_lookups(
        &self,
        caller_token: Option<&str>,
    ) -> Result<CloudLookups<'_>, ReferenceError> {
        let token = caller_token.ok_or_else(|| {
            ReferenceError::DriverUnavailable(
                "The capi driver looks references up in the cloud with the caller's Keystone token, and this request has none (configure [drivers.capi.catalog] without Keystone auth).".to_owned(),
            )
        })?;
        CloudLookups::of_token(&self.cloud, token).await
    }

    /// The OpenStack ids of what the cluster refers to: from the configured catalog, or from
    /// the cloud as the cluster's own credential sees it (what CAPO will act with).
    async fn resolve(
        &self,
        spec: &ClusterSpec,
        progress: &dyn Progress,
    ) -> Result<Resolved, DriverError> {
        if !self.catalog.is_empty() {
            return resolve_with(&self.catalog, spec).await.map_err(failed);
        }
        let credential = self.credentials.issue(spec).await.map_err(failed)?;
        // A cloud that is away for a while fails nothing: the conductor's deadline bounds
        // the wait, as it does for the management cluster.
        let mut pause = Duration::from_millis(500);
        loop {
            let attempt = async {
                let lookups = CloudLookups::of_credential(&self.cloud, &credential).await?;
                resolve_with(&lookups, spec).await
            };
            match attempt.await {
                Ok(resolved) => return Ok(resolved),
                Err(ReferenceError::CloudUnavailable(reason)) => {
                    progress.report(reason).await;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(refused) => return Err(failed(refused)),
            }
        }
    }

    /// Runs `attempt` until it succeeds or is refused; while the management cluster is away
    /// it says so and tries again (the conductor's deadline bounds the whole).
    async fn retrying<T, F, Fut>(
        &self,
        progress: &dyn Progress,
        mut attempt: F,
    ) -> Result<T, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ManagementError>>,
    {
        let mut pause = Duration::from_millis(200);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() => {
                    progress.report(error.to_string()).await;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => return Err(failed(error)),
            }
        }
    }

    async fn apply(&self, progress: &dyn Progress, object: &Value) -> Result<(), DriverError> {
        self.retrying(progress, || self.management.apply(object))
            .await
            .map(|_| ())
    }

    /// The etcd, front-proxy and service-account keys: made once and never replaced (the
    /// cluster CA follows the keystore through [`Self::follow_cluster_ca`]).
    async fn ensure_authorities(
        &self,
        spec: &ClusterSpec,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        for purpose in [
            CaPurpose::Etcd,
            CaPurpose::FrontProxy,
            CaPurpose::ServiceAccount,
        ] {
            let secret_name = names::ca_secret(&name, purpose);
            let existing = self
                .retrying(progress, || self.management.get(Kind::Secret, &secret_name))
                .await?;
            if existing.is_some() {
                continue;
            }
            let pair = match purpose {
                CaPurpose::ServiceAccount => {
                    let (public, private) = magnum_certs::generate_signing_key().map_err(failed)?;
                    KeyPair {
                        cert_pem: public,
                        key_pem: private,
                    }
                }
                _ => {
                    let common_name = format!("{name}-{}", purpose.suffix());
                    let generated = magnum_certs::generate_ca(&common_name, CA_VALIDITY_DAYS)
                        .map_err(failed)?;
                    KeyPair {
                        cert_pem: generated.cert_pem,
                        key_pem: generated.key_pem,
                    }
                }
            };
            let secret = render::render_ca_secret(&self.settings, &spec.cluster, purpose, &pair);
            self.retrying(progress, || self.management.create_if_absent(&secret))
                .await?;
        }
        Ok(())
    }

    /// The credential the cluster's machines and cloud provider act with, from its
    /// `clouds.yaml` secret; None when none was ever written.
    async fn cluster_credential(
        &self,
        name: &str,
        progress: &dyn Progress,
    ) -> Option<ApplicationCredential> {
        let secret_name = names::cloud_config_secret(name);
        let secret = self
            .retrying(progress, || self.management.get(Kind::Secret, &secret_name))
            .await
            .ok()??;
        crate::openstack::credential_of_clouds_yaml(&decode(&secret["data"]["clouds.yaml"]))
    }

    /// One pass over the cluster's load balancers: those found (of its name prefix, in the
    /// credential's project), deleted unless already going.
    async fn load_balancer_pass(
        &self,
        name: &str,
        credential: &ApplicationCredential,
    ) -> Result<Vec<crate::openstack::LoadBalancer>, crate::openstack::CloudError> {
        let prefix = crate::openstack::load_balancer_prefix(name);
        let session = self.cloud.authenticate(credential).await?;
        let Some(endpoint) = self.cloud.endpoint(&session, "load-balancer") else {
            // A cloud without Octavia: the cloud provider made none.
            return Ok(Vec::new());
        };
        let found = self
            .cloud
            .load_balancers(&session, &endpoint, &prefix)
            .await?;
        for lb in &found {
            if lb.provisioning_status == "ACTIVE" || lb.provisioning_status == "ERROR" {
                self.cloud
                    .delete_load_balancer(&session, &endpoint, &lb.id)
                    .await?;
            }
        }
        Ok(found)
    }

    /// Removes the load balancers the cluster's cloud provider made for its `LoadBalancer`
    /// Services, with the cluster's own credential, and waits until they are gone: CAPO cannot
    /// delete the cluster's network under them. Never fails the delete: what it cannot do is
    /// reported, and the delete goes on.
    async fn release_load_balancers(
        &self,
        name: &str,
        credential: &ApplicationCredential,
        progress: &dyn Progress,
    ) {
        use crate::openstack::CloudError;
        let deadline = tokio::time::Instant::now() + LOAD_BALANCER_WAIT;
        let mut pause = Duration::from_secs(1);
        let mut reported = String::new();
        let mut unreachable_since = None;
        loop {
            let message = match self.load_balancer_pass(name, credential).await {
                Ok(left) if left.is_empty() => return,
                Ok(left) => {
                    unreachable_since = None;
                    let names: Vec<&str> = left.iter().take(5).map(|lb| lb.name.as_str()).collect();
                    format!(
                        "Deleting {} load balancers the cloud provider made for the cluster's services ({}).",
                        left.len(),
                        names.join(", ")
                    )
                }
                Err(CloudError::Refused(error)) => {
                    progress
                        .report(format!(
                            "Could not remove the load balancers the cloud provider made ({error}); Cluster API may be unable to delete the cluster's network."
                        ))
                        .await;
                    return;
                }
                Err(CloudError::Unavailable(error)) => {
                    let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= CLOUD_UNREACHABLE_WAIT {
                        progress
                            .report(format!(
                                "Could not reach the cloud to remove the cluster's load balancers for {} s ({error}); Cluster API may be unable to delete the cluster's network.",
                                CLOUD_UNREACHABLE_WAIT.as_secs()
                            ))
                            .await;
                        return;
                    }
                    format!("Waiting for the cloud to remove the cluster's load balancers: {error}")
                }
            };
            if tokio::time::Instant::now() >= deadline {
                progress
                    .report(format!(
                        "Gave up waiting for the cluster's load balancers after {} s; Cluster API may be unable to delete the cluster's network.",
                        LOAD_BALANCER_WAIT.as_secs()
                    ))
                    .await;
                return;
            }
            if message != reported {
                progress.report(message.clone()).await;
                reported = message;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Brings the CA secret to the keystore's CA: written at once for a new cluster, or, after
    /// a rotation, through the three steps of [`crate::rotation`], each rolled out across the
    /// cluster before the next. Returns the rollout time the final apply must carry.
    async fn follow_cluster_ca(
        &self,
        spec: &ClusterSpec,
        rendered: &mut Value,
        progress: &dyn Progress,
    ) -> Result<Option<PendingRollout>, DriverError> {
        let authority = spec
            .authority
            .as_ref()
            .ok_or_else(|| failed("The cluster has no CA yet."))?;
        let current = KeyPair {
            cert_pem: authority.cert_pem.clone(),
            key_pem: authority.key_pem.clone(),
        };
        let name = names::cluster_name(spec.cluster.uuid);
        let secret_name = names::ca_secret(&name, CaPurpose::Cluster);
        loop {
            let live = self
                .retrying(progress, || self.management.get(Kind::Secret, &secret_name))
                .await?;
            let rollout = live.as_ref().and_then(PendingRollout::of_ca_secret);
            let authority = live.as_ref().map(|secret| {
                LiveAuthority::parse(
                    &decode(&secret["data"]["tls.crt"]),
                    &decode(&secret["data"]["tls.key"]),
                )
            });
            let signs = |certificate: &str, key: &str| {
                magnum_certs::key_matches_certificate(certificate, key).unwrap_or(false)
            };
            let (pair, step) = match rotation::next_step(authority.as_ref(), &current, signs) {
                rotation::NextStep::Settled => return Ok(rollout),
                rotation::NextStep::Create(pair) => (pair, None),
                rotation::NextStep::Step {
                    number,
                    pair,
                    after_previous,
                } => {
                    if after_previous {
                        let Some(previous) = rollout.as_ref() else {
                            // A step is in the secret without its rollout time (edited by
                            // hand, restored from a backup): roll it out before going on,
                            // or the next step would take trust from machines never given it.
                            let live = authority.as_ref().map(|live| KeyPair {
                                cert_pem: live.certificates.join("\n") + "\n",
                                key_pem: live.key_pem.clone(),
                            });
                            if let Some(live) = live {
                                let mut secret = render::render_ca_secret(
                                    &self.settings,
                                    &spec.cluster,
                                    CaPurpose::Cluster,
                                    &live,
                                );
                                secret["metadata"]["annotations"] = json!({
                                    CA_ROLLOUT_AFTER: rotation::rollout_time(chrono::Utc::now()),
                                    CA_ROTATION_STEP: (number - 1).to_string(),
                                });
                                self.apply(progress, &secret).await?;
                            }
                            continue;
                        };
                        // The machines of the step applied earlier must all be there first.
                        self.apply_and_wait(spec, rendered, Some(previous), progress)
                            .await?;
                    }
                    progress
                        .report(format!(
                            "Rotating the CA, step {number} of {}: {}.",
                            rotation::STEPS,
                            rotation::describe(number)
                        ))
                        .await;
                    (pair, Some(number))
                }
            };
            let mut secret =
                render::render_ca_secret(&self.settings, &spec.cluster, CaPurpose::Cluster, &pair);
            if let Some(number) = step {
                secret["metadata"]["annotations"] = json!({
                    CA_ROLLOUT_AFTER: rotation::rollout_time(chrono::Utc::now()),
                    CA_ROTATION_STEP: number.to_string(),
                });
            }
            self.apply(progress, &secret).await?;
            if step.is_none() {
                return Ok(None);
            }
            self.follow_kubeconfig(spec, &pair, progress).await?;
        }
    }

    /// Rewrites CAPI's `<name>-kubeconfig` (how KCP and the other controllers reach the
    /// workload cluster) for a rotation step: the step's whole trust bundle, and an admin
    /// client certificate of the step's signer, so that the controllers can talk to the API
    /// servers of both generations while the machines roll. CAPI writes it once and rewrites
    /// it only when its certificate nears expiry; nothing to do before it has made one.
    async fn follow_kubeconfig(
        &self,
        spec: &ClusterSpec,
        pair: &KeyPair,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        let secret_name = names::kubeconfig_secret(&name);
        let existing = self
            .retrying(progress, || self.management.get(Kind::Secret, &secret_name))
            .await?;
        let live_cluster = self
            .retrying(progress, || self.management.get(Kind::Cluster, &name))
            .await?;
        let (Some(_), Some(cluster)) = (existing, live_cluster) else {
            return Ok(());
        };
        let Some(server) = status::api_address(&cluster) else {
            return Ok(());
        };
        let signer = rotation::split_bundle(&pair.cert_pem)
            .into_iter()
            .next()
            .ok_or_else(|| failed("The CA secret holds no certificate."))?;
        let client = magnum_certs::client_key_and_csr("kubernetes-admin", Some("system:masters"))
            .map_err(failed)?;
        let certificate = magnum_certs::sign_csr(
            &magnum_certs::CaMaterial {
                cert_pem: signer,
                key_pem: pair.key_pem.clone(),
            },
            &client.cert_pem,
            KUBECONFIG_VALIDITY_DAYS,
        )
        .map_err(failed)?;
        let secret = render::render_kubeconfig_secret(
            &self.settings,
            &name,
            &server,
            &pair.cert_pem,
            &certificate,
            &client.key_pem,
        );
        self.apply(progress, &secret).await
    }

    /// Applies the cluster, rolling every machine made before `rollout`, and follows it
    /// until it is ready.
    async fn apply_and_wait(
        &self,
        spec: &ClusterSpec,
        rendered: &mut Value,
        rollout: Option<&PendingRollout>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        if let Some(rollout) = rollout {
            render::set_rollout_after(rendered, &rollout.after);
        }
        progress.report("Applying the cluster.".to_owned()).await;
        let applied = self
            .retrying(progress, || self.management.apply(rendered))
            .await?;
        let generation = applied["metadata"]["generation"].as_i64().unwrap_or(0);
        self.wait_until_ready(spec, rendered, generation, rollout, progress)
            .await
    }

    /// The cluster's OpenStack credential: issued once, kept across converges, replaced (and
    /// the old one revoked) on a rotation.
    async fn ensure_credentials(
        &self,
        spec: &ClusterSpec,
        rotate: bool,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        let secret_name = names::cloud_config_secret(&name);
        let existing = self
            .retrying(progress, || self.management.get(Kind::Secret, &secret_name))
            .await?;
        let previous = existing
            .as_ref()
            .and_then(|secret| secret["metadata"]["annotations"][CREDENTIAL_ID].as_str())
            .map(str::to_owned);
        // The credential to use is the newest delegated one (or the shared one): applied
        // whenever it is not the one in place, whatever the action, so that a rotation
        // accepted while another change ran is put in place by whichever converge comes.
        let credential = match self.credentials.issue(spec).await {
            Ok(credential) if previous.as_deref() == Some(credential.id.as_str()) => return Ok(()),
            Ok(credential) => credential,
            // A cluster from before delegated credentials keeps the one it has until rotated.
            Err(_) if existing.is_some() && !rotate => return Ok(()),
            Err(reason) => return Err(failed(reason)),
        };
        let mut objects =
            render::render_cloud_credentials(&self.settings, &spec.cluster, &credential);
        objects[0]["metadata"]["annotations"] =
            json!({CREDENTIAL_ID: credential.id, CREDENTIAL_OWNER: spec.cluster.user_id});
        for object in &objects {
            self.apply(progress, object).await?;
        }
        // The one replaced is revoked by the conductor, after its grace: what in the workload
        // cluster read it at its start still acts with it until restarted.
        Ok(())
    }

    /// Marks the machines the tenant named (by machine, node or server id) so that CAPI
    /// deletes them first when their deployment shrinks.
    async fn mark_for_removal(
        &self,
        spec: &ClusterSpec,
        nodes: &[String],
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        // Live, and only workers: a control plane machine is never removed this way, and a
        // machine the cache has not seen yet is still found.
        let selector = format!("{}={name}", label::CAPI_CLUSTER_NAME);
        let machines: Vec<Value> = self
            .retrying(progress, || self.management.list(Kind::Machine, &selector))
            .await?
            .into_iter()
            .filter(|machine| {
                machine["metadata"]["labels"]
                    .get(label::CAPI_CONTROL_PLANE)
                    .is_none()
            })
            .collect();
        for node in nodes {
            let machine = machines.iter().find(|machine| {
                let provider = machine["spec"]["providerID"].as_str().unwrap_or_default();
                machine["metadata"]["name"].as_str() == Some(node)
                    || machine["status"]["nodeRef"]["name"].as_str() == Some(node)
                    || (!provider.is_empty() && provider.ends_with(&format!("/{node}")))
            });
            let Some(machine) = machine else {
                return Err(failed(format!(
                    "Node {node} of nodes_to_remove is not a machine of this cluster."
                )));
            };
            let machine_name = machine["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let patch = json!({"metadata": {"annotations": {label::DELETE_MACHINE: "yes"}}});
            self.retrying(progress, || {
                self.management.merge(Kind::Machine, &machine_name, &patch)
            })
            .await?;
        }
        Ok(())
    }

    /// What the rendered Cluster asks for: its version, control plane size, and each worker
    /// deployment with its replicas (None when the autoscaler owns them).
    fn desired_of(
        rendered: &Value,
        spec: &ClusterSpec,
    ) -> (String, i64, Vec<(String, Option<i64>)>) {
        let topology = &rendered["spec"]["topology"];
        let workers = topology["workers"]["machineDeployments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|deployment| {
                (
                    deployment["name"].as_str().unwrap_or_default().to_owned(),
                    deployment["replicas"].as_i64(),
                )
            })
            .collect();
        let masters = spec
            .nodegroups
            .iter()
            .filter(|group| group.is_master())
            .map(|group| group.node_count)
            .sum();
        (
            topology["version"].as_str().unwrap_or_default().to_owned(),
            masters,
            workers,
        )
    }

    /// Follows the cluster's objects until they are ready or failed.
    async fn wait_until_ready(
        &self,
        spec: &ClusterSpec,
        rendered: &Value,
        generation: i64,
        rollout: Option<&PendingRollout>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        let (version, masters, workers) = Self::desired_of(rendered, spec);
        let cni = render::Cni::from_network_driver(spec.template.network_driver.as_deref())
            .map_err(failed)?;
        let cinder = spec.template.volume_driver.as_deref() == Some("cinder");
        let charts: Vec<String> = addons::addons_of(cni, cinder)
            .into_iter()
            .map(|addon| addon.chart(&self.settings).name.clone())
            .collect();
        let desired = Desired {
            version: &version,
            control_plane_replicas: masters,
            workers: &workers,
            addons: &charts,
            generation,
            rollout: rollout.map(PendingRollout::as_desired),
        };
        let mut changes = self.cache.subscribe_cluster(&name);
        let mut reported = String::new();
        loop {
            let (objects, synced) = self.cache.snapshot(&name);
            let message = if let Some(trouble) = self.cache.trouble() {
                trouble
            } else if !synced {
                "Waiting for the first view of the management cluster.".to_owned()
            } else {
                let assessment = assess(&objects, desired);
                match assessment.phase {
                    Phase::Ready => return Ok(observed(&name, spec, &assessment)),
                    Phase::Failed => return Err(DriverError::Failed(assessment.reason)),
                    Phase::Absent => "Waiting for Cluster API to take the cluster up.".to_owned(),
                    Phase::Progressing | Phase::Deleting => assessment.reason,
                }
            };
            if message != reported {
                progress.report(message.clone()).await;
                reported = message;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(SAFETY_NET) => {}
            }
        }
    }
}

fn assess(objects: &crate::cache::ClusterObjects, desired: Desired<'_>) -> Assessment {
    let deployments = objects.all(Kind::MachineDeployment);
    let machines = objects.all(Kind::Machine);
    let addons = objects.all(Kind::HelmReleaseProxy);
    status::assess(
        Objects {
            cluster: objects.first(Kind::Cluster),
            control_plane: objects.first(Kind::KubeadmControlPlane),
            infrastructure: objects.first(Kind::OpenStackCluster),
            machine_deployments: &deployments,
            machines: &machines,
            addons: &addons,
        },
        desired,
    )
}

fn observed(name: &str, spec: &ClusterSpec, assessment: &Assessment) -> Observed {
    let mut nodegroups = Vec::new();
    for group in &spec.nodegroups {
        let addresses = if group.is_master() {
            assessment.control_plane.addresses.clone()
        } else {
            let deployment = names::machine_deployment_name(&group.name, group.uuid);
            assessment
                .workers
                .iter()
                .find(|worker| worker.name == deployment)
                .map(|worker| worker.addresses.clone())
                .unwrap_or_default()
        };
        nodegroups.push(ObservedNodeGroup {
            uuid: group.uuid,
            node_addresses: addresses,
            coe_version: assessment.coe_version.clone(),
        });
    }
    Observed {
        stack_id: Some(name.to_owned()),
        api_address: assessment.api_address.clone(),
        coe_version: assessment.coe_version.clone(),
        container_version: None,
        nodegroups,
    }
}

/// The health last pushed for a cluster, and its reason.
type ReportedHealth = (HealthStatus, serde_json::Map<String, Value>);

/// What the conductor records between operations: the endpoint, and the replicas of each
/// MachineDeployment the cluster autoscaler owns (its annotations are on it), by nodegroup.
fn live_state(cluster: &Value, deployments: &[Value]) -> LiveState {
    let autoscaled = deployments
        .iter()
        .filter(|deployment| {
            deployment["metadata"]["annotations"]
                .get(label::AUTOSCALER_MIN)
                .is_some()
        })
        .filter_map(|deployment| {
            let uuid = deployment["metadata"]["labels"][label::NODEGROUP_UUID]
                .as_str()
                .and_then(|text| uuid::Uuid::parse_str(text).ok())?;
            Some((uuid, deployment["spec"]["replicas"].as_i64()?))
        })
        .collect();
    LiveState {
        api_address: status::api_address(cluster),
        autoscaled,
    }
}

/// Health and live state as the watches see them, pushed to the conductor when they change.
async fn follow_health(
    cache: Arc<ObjectCache>,
    events: broadcast::Sender<DriverEvent>,
    resync_interval: Duration,
) {
    /// What was last pushed for a cluster.
    struct Reported {
        uuid: uuid::Uuid,
        health: ReportedHealth,
        live: LiveState,
    }
    let mut changes = cache.subscribe();
    let mut last: HashMap<String, Reported> = HashMap::new();
    let mut resync = tokio::time::interval(resync_interval);
    resync.tick().await;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = resync.tick() => {
                // A conductor that fell behind the queue lost events for good: everything is
                // said again now and then (recording what did not change writes nothing),
                // paced so that the resync itself never overflows the queue.
                for reported in last.values() {
                    while events.len() > EVENT_QUEUE / 2 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = events.send(DriverEvent::Health {
                        cluster: reported.uuid,
                        status: reported.health.0,
                        reason: reported.health.1.clone(),
                    });
                    if reported.live != LiveState::default() {
                        let _ = events.send(DriverEvent::Live {
                            cluster: reported.uuid,
                            state: reported.live.clone(),
                        });
                    }
                }
                continue;
            }
        }
        for name in cache.take_changed() {
            let (objects, synced) = cache.snapshot(&name);
            let Some(cluster) = objects.first(Kind::Cluster).filter(|_| synced) else {
                // Gone (or not yet seen whole): nothing to report, nothing to remember.
                if synced {
                    last.remove(&name);
                }
                continue;
            };
            let Some(uuid) = cluster["metadata"]["labels"][label::CLUSTER_UUID]
                .as_str()
                .and_then(|text| uuid::Uuid::parse_str(text).ok())
            else {
                continue;
            };
            let (healthy, reason) = status::health(cluster, &objects.all(Kind::Machine));
            let health = match healthy {
                Some(true) => HealthStatus::Healthy,
                Some(false) => HealthStatus::Unhealthy,
                None => HealthStatus::Unknown,
            };
            let live = live_state(cluster, &objects.all(Kind::MachineDeployment));
            let previous = last.get(&name);
            let health_changed =
                previous.map(|reported| &reported.health) != Some(&(health, reason.clone()));
            let live_changed = previous.map(|reported| &reported.live) != Some(&live);
            last.insert(
                name,
                Reported {
                    uuid,
                    health: (health, reason.clone()),
                    live: live.clone(),
                },
            );
            // Nobody listening yet is not an error: the conductor subscribes when it starts.
            if live_changed && live != LiveState::default() {
                let _ = events.send(DriverEvent::Live {
                    cluster: uuid,
                    state: live,
                });
            }
            if health_changed {
                let _ = events.send(DriverEvent::Health {
                    cluster: uuid,
                    status: health,
                    reason,
                });
            }
        }
    }
}

/// What a force-deleted cluster may have left in OpenStack, as CAPO's objects name it:
/// servers, the API load balancer, the network and router CAPO made.
pub fn openstack_leftovers(kind: Kind, object: &Value) -> Vec<String> {
    let status = &object["status"];
    let mut found = Vec::new();
    match kind {
        Kind::OpenStackMachine => {
            let server = status["instanceID"]
                .as_str()
                .or_else(|| object["spec"]["providerID"].as_str())
                .filter(|id| !id.is_empty());
            if let Some(server) = server {
                found.push(format!(
                    "server {}",
                    server.trim_start_matches("openstack:///")
                ));
            }
        }
        Kind::OpenStackCluster => {
            for (what, value) in [
                ("load balancer", &status["apiServerLoadBalancer"]["id"]),
                ("network", &status["network"]["id"]),
                ("router", &status["router"]["id"]),
                ("bastion server", &status["bastion"]["id"]),
            ] {
                if let Some(id) = value.as_str().filter(|id| !id.is_empty()) {
                    found.push(format!("{what} {id}"));
                }
            }
        }
        _ => {}
    }
    found
}

/// The name of the marker secret a force delete leaves for a cluster.
fn abandoned_marker(cluster_name: &str) -> String {
    format!("{cluster_name}-abandoned")
}

/// Labels everything the driver made for a force-deleted cluster (by its uuid) as abandoned
/// and asks for its Cluster to go.
async fn mark_abandoned(
    management: &Management,
    name: &str,
    uuid: &str,
    at: &str,
) -> Result<(), ManagementError> {
    let mark = json!({"metadata": {
        "labels": {ABANDONED: "true"},
        "annotations": {ABANDONED_AT: at},
    }});
    let ours = format!("{}={uuid},{ABANDONED}!=true", label::CLUSTER_UUID);
    for kind in [Kind::Secret, Kind::ClusterResourceSet] {
        for object in management.list(kind, &ours).await? {
            if object["metadata"]["labels"].get(ABANDONED_MARKER).is_some() {
                continue;
            }
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            management
                .merge_if_present(kind, object_name, &mark)
                .await?;
        }
    }
    if let Some(cluster) = management.get(Kind::Cluster, name).await? {
        if cluster["metadata"]["labels"].get(ABANDONED).is_none() {
            management
                .merge_if_present(Kind::Cluster, name, &mark)
                .await?;
        }
        if cluster["metadata"]["deletionTimestamp"].is_null() {
            management.delete(Kind::Cluster, name).await?;
        }
    }
    Ok(())
}

/// Finishes the deletes an admin forced (see [`Driver::abandon`]), from the marker secrets
/// they left: everything of the cluster is marked again (a converge that was still running
/// may have written more), a Cluster still there past the grace is released from its
/// finalizers and deleted with everything CAPI made for it (what it may have left in
/// OpenStack is logged), and once nothing of it is left its secrets go and the marker goes
/// (its credential is the conductor's to revoke, after the longest grace). Everything it needs is on the management cluster, so a
/// restart loses nothing; one cluster's trouble never holds up another's.
async fn reap_abandoned(management: Management, grace: Duration) {
    loop {
        tokio::time::sleep(REAP_INTERVAL.min(grace)).await;
        if let Err(error) = reap_once(&management, grace).await {
            tracing::warn!(%error, "cannot list the force-deleted clusters yet");
        }
    }
}

/// One pass of the reaper over every marker.
pub async fn reap_once(management: &Management, grace: Duration) -> Result<(), ManagementError> {
    for marker in management
        .list(Kind::Secret, &format!("{ABANDONED_MARKER}=true"))
        .await?
    {
        let name = marker["metadata"]["labels"][label::CAPI_CLUSTER_NAME]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Err(error) = reap_cluster(management, grace, &marker).await {
            tracing::warn!(cluster = %name, %error, "cannot finish a force-deleted cluster's cleanup yet");
        }
    }
    Ok(())
}

async fn reap_cluster(
    management: &Management,
    grace: Duration,
    marker: &Value,
) -> Result<(), ManagementError> {
    let labels = &marker["metadata"]["labels"];
    let name = labels[label::CAPI_CLUSTER_NAME]
        .as_str()
        .unwrap_or_default();
    let uuid = labels[label::CLUSTER_UUID].as_str().unwrap_or_default();
    if name.is_empty() || uuid.is_empty() {
        return Ok(());
    }
    let at = marker["metadata"]["annotations"][ABANDONED_AT]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    mark_abandoned(management, name, uuid, &at).await?;
    let due = chrono::DateTime::parse_from_rfc3339(&at)
        .ok()
        .is_none_or(|at| {
            chrono::Utc::now()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default()
                >= grace
        });
    let children = format!("{}={name}", label::CAPI_CLUSTER_NAME);
    let mut left = 0;
    let mut leftovers = Vec::new();
    for kind in Kind::OF_A_CLUSTER {
        let objects = if kind == Kind::Cluster {
            management
                .get(Kind::Cluster, name)
                .await?
                .into_iter()
                .collect()
        } else {
            management.list(kind, &children).await?
        };
        for object in objects {
            left += 1;
            if !due {
                continue;
            }
            // Past the grace: what CAPI could not finish is released and deleted (what the
            // garbage collector would do for the children once the Cluster is gone).
            leftovers.extend(openstack_leftovers(kind, &object));
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            let has_finalizers = object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|finalizers| !finalizers.is_empty());
            if has_finalizers {
                management.drop_finalizers(kind, object_name).await?;
            }
            management.delete(kind, object_name).await?;
        }
    }
    if due && !leftovers.is_empty() {
        tracing::warn!(
            cluster = %name,
            may_have_leaked = %leftovers.join(", "),
            "a force-deleted cluster was released from Cluster API's finalizers after its grace: check OpenStack for what it may have left"
        );
    }
    if left > 0 {
        // CAPO still needs the credential to tear the machines down.
        return Ok(());
    }
    let abandoned = format!("{}={uuid},{ABANDONED}=true", label::CLUSTER_UUID);
    for kind in [Kind::Secret, Kind::ClusterResourceSet] {
        for object in management.list(kind, &abandoned).await? {
            // The credential itself is the conductor's to revoke (the force delete scheduled
            // it for after the longest grace).
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            management.delete(kind, object_name).await?;
        }
    }
    management
        .delete(Kind::Secret, &abandoned_marker(name))
        .await?;
    tracing::info!(cluster = %name, "a force-deleted cluster's cleanup is finished");
    Ok(())
}

#[async_trait::async_trait]
impl Driver for CapiDriver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    fn provides(&self) -> Vec<ClusterType> {
        self.settings
            .os_distros
            .iter()
            .map(|os_distro| ClusterType {
                server_type: ServerType::Vm,
                os_distro: os_distro.clone(),
                coe: Coe::Kubernetes,
            })
            .collect()
    }

    /// Without a configured catalog, images are looked up in the cloud only as a caller sees
    /// it ([`Driver::find_image_as`]).
    fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError> {
        self.catalog.find_image(reference)
    }

    fn looks_up_in_cloud(&self) -> bool {
        self.catalog.is_empty()
    }

    async fn find_image_as(
        &self,
        caller_token: Option<&str>,
        reference: &str,
    ) -> Result<Option<Image>, ReferenceError> {
        if !self.catalog.is_empty() {
            return self.catalog.find_image(reference);
        }
        let lookups = self.caller_lookups(caller_token).await?;
        Ok(lookups.image(reference).await?.map(|image| Image {
            id: image.id,
            name: image.name,
            os_distro: image.os_distro,
        }))
    }

    /// Without a configured catalog this checks nothing: the API checked the references in
    /// the cloud as its caller ([`Driver::validate_references_as`]) before.
    fn validate_references(&self, references: &References<'_>) -> Result<(), ReferenceError> {
        if self.catalog.is_empty() {
            return Ok(());
        }
        self.catalog.validate(references)
    }

    async fn validate_references_as(
        &self,
        caller_token: Option<&str>,
        references: &References<'_>,
    ) -> Result<(), ReferenceError> {
        if !self.catalog.is_empty() {
            return self.catalog.validate(references);
        }
        let lookups = self.caller_lookups(caller_token).await?;
        crate::catalog::validate(&lookups, references).await
    }

    fn delegates_credentials(&self) -> bool {
        self.settings.delegated_credentials
    }

    /// Whatever this process's configuration says: another process (or an earlier
    /// configuration) may have given a cluster its credential.
    fn may_hold_credentials(&self) -> bool {
        true
    }

    fn delegated_roles(&self) -> Vec<String> {
        self.settings.credential_roles.clone()
    }

    fn permits_project(&self, project_id: &str) -> Result<(), String> {
        let allowed = &self.settings.allowed_projects;
        if allowed.is_empty() || allowed.iter().any(|project| project == project_id) {
            Ok(())
        } else {
            Err(format!(
                "The capi driver does not build clusters for project {project_id} (drivers.capi.allowed_projects)."
            ))
        }
    }

    fn supports(&self, action: Action) -> bool {
        // CA rotation is opt-in until its three rolls have been seen on a real management
        // cluster (CAPI.md says what is unverified).
        action != Action::RotateCa || self.settings.ca_rotation
    }

    async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let spec = request.spec;
        let marker = abandoned_marker(&names::cluster_name(spec.cluster.uuid));
        if self
            .retrying(progress, || self.management.get(Kind::Secret, &marker))
            .await?
            .is_some()
        {
            return Err(failed(
                "The cluster was force-deleted: nothing more is done for it.",
            ));
        }
        let resolved = self.resolve(spec, progress).await?;
        let mut rendered = render::render_cluster(
            &self.settings,
            ClusterInput {
                cluster: &spec.cluster,
                template: &spec.template,
                nodegroups: &spec.nodegroups,
                resolved: &resolved,
                rollout_after: None,
            },
        )
        .map_err(failed)?;
        let name = names::cluster_name(spec.cluster.uuid);
        let live_cluster = self
            .retrying(progress, || self.management.get(Kind::Cluster, &name))
            .await?;
        if let Some(live) = &live_cluster {
            // A cluster stays on the class version it was built with until it is upgraded:
            // a magnumd release with a new class never rolls running clusters on a resize.
            if request.action != Action::UpgradeCluster {
                render::keep_class(&mut rendered, live);
            }
            // CAPI refuses to lower a version (an upgrade rolled back after it was applied).
            render::keep_newer_version(&mut rendered, live);
        }
        // Read live, not from the cache: after a restart the cache may not have it yet.
        let selector = format!("{}={name}", label::CAPI_CLUSTER_NAME);
        let live_infrastructure = self
            .retrying(progress, || {
                self.management.list(Kind::OpenStackCluster, &selector)
            })
            .await?;
        if let Some(live) = live_infrastructure.first() {
            let kept = render::keep_immutable(&mut rendered, live);
            if !kept.is_empty() {
                progress
                    .report(format!(
                        "Keeping {} as the cluster was created: OpenStack's Cluster API provider does not allow changing them.",
                        kept.join(", ")
                    ))
                    .await;
            }
        }
        let report = self.class_variables.check_cluster(&rendered);
        if !report.is_valid() {
            let messages: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            return Err(failed(format!(
                "The cluster's settings do not fit the cluster class: {}",
                messages.join("; ")
            )));
        }
        if live_cluster.is_none() || request.action == Action::UpgradeCluster {
            progress
                .report("Applying the cluster class.".to_owned())
                .await;
            for object in class::class_objects(&self.settings)
                .into_iter()
                .chain(addons::chart_proxies(&self.settings))
            {
                self.apply(progress, &object).await?;
            }
        }
        self.ensure_authorities(spec, progress).await?;
        self.ensure_credentials(spec, request.action == Action::RotateCredentials, progress)
            .await?;
        if !request.nodes_to_remove.is_empty() {
            self.mark_for_removal(spec, request.nodes_to_remove, progress)
                .await?;
        }
        let rollout = self
            .follow_cluster_ca(spec, &mut rendered, progress)
            .await?;
        self.apply_and_wait(spec, &mut rendered, rollout.as_ref(), progress)
            .await
    }

    async fn delete(&self, spec: &ClusterSpec, progress: &dyn Progress) -> Result<(), DriverError> {
        let name = names::cluster_name(spec.cluster.uuid);
        let credential = if self.settings.delete_load_balancers {
            self.cluster_credential(&name, progress).await
        } else {
            None
        };
        if let Some(credential) = &credential {
            self.release_load_balancers(&name, credential, progress)
                .await;
        }
        // The Cluster next: CAPO still needs the credential to tear the machines down.
        self.retrying(progress, || self.management.delete(Kind::Cluster, &name))
            .await?;
        let mut changes = self.cache.subscribe_cluster(&name);
        let mut reported = String::new();
        // The cloud provider runs until the control plane is gone and recreates the load
        // balancer of a Service that still exists: until then, another pass now and then.
        let mut last_pass = tokio::time::Instant::now();
        loop {
            if let Some(credential) = &credential {
                if last_pass.elapsed() >= LOAD_BALANCER_REPASS {
                    if let Err(error) = self.load_balancer_pass(&name, credential).await {
                        tracing::debug!(cluster = %name, %error, "a load balancer pass during the delete failed");
                    }
                    last_pass = tokio::time::Instant::now();
                }
            }
            let (objects, synced) = self.cache.snapshot(&name);
            let cluster = objects.first(Kind::Cluster);
            // The cache may never sync (a CRD or a permission missing): the GET decides.
            if !synced || cluster.is_none() {
                let gone = self
                    .retrying(progress, || self.management.get(Kind::Cluster, &name))
                    .await?
                    .is_none();
                if gone {
                    break;
                }
            }
            let message = match cluster {
                Some(cluster) => {
                    let desired = Desired {
                        version: "",
                        control_plane_replicas: 0,
                        workers: &[],
                        addons: &[],
                        generation: 0,
                        rollout: None,
                    };
                    let assessment = status::assess(
                        Objects {
                            cluster: Some(cluster),
                            ..Objects::default()
                        },
                        desired,
                    );
                    assessment.reason
                }
                None => "Waiting for Cluster API to remove the cluster.".to_owned(),
            };
            if message != reported {
                progress.report(message.clone()).await;
                reported = message;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(SAFETY_NET) => {}
            }
        }
        progress
            .report("Removing the cluster's secrets and credential.".to_owned())
            .await;
        let credential_secret_name = names::cloud_config_secret(&name);
        let resource_set_name = names::cloud_config_resource_set(&name);
        let mut secrets: Vec<String> = CaPurpose::ALL
            .iter()
            .map(|purpose| names::ca_secret(&name, *purpose))
            .collect();
        secrets.push(credential_secret_name.clone());
        secrets.push(resource_set_name.clone());
        self.retrying(progress, || {
            self.management
                .delete(Kind::ClusterResourceSet, &resource_set_name)
        })
        .await?;
        for secret in &secrets {
            self.retrying(progress, || self.management.delete(Kind::Secret, secret))
                .await?;
        }
        // The credential is revoked by the conductor once the delete is done.
        Ok(())
    }

    async fn abandon(&self, cluster: &magnum_domain::cluster::Cluster) -> Result<(), DriverError> {
        // The marker first: it is the durable record the reaper works from (and converges
        // check), so whatever a converge still in flight writes afterwards is found and
        // removed too, even if this process dies right after.
        let name = names::cluster_name(cluster.uuid);
        // Milliseconds: the grace is never cut short by a truncated second.
        let at = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let marker = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": abandoned_marker(&name),
                "namespace": self.settings.namespace,
                "labels": {
                    ABANDONED_MARKER: "true",
                    label::CAPI_CLUSTER_NAME: name,
                    label::CLUSTER_UUID: cluster.uuid.to_string(),
                    label::MANAGED_BY: label::MANAGED_BY_VALUE,
                },
                "annotations": {ABANDONED_AT: at},
            },
        });
        self.management
            .create_if_absent(&marker)
            .await
            .map_err(failed)?;
        mark_abandoned(&self.management, &name, &cluster.uuid.to_string(), &at)
            .await
            .map_err(failed)?;
        tracing::warn!(cluster = %name, "force-deleted: Cluster API tears it down; the driver releases what is left after its grace");
        Ok(())
    }

    fn events(&self) -> Option<broadcast::Receiver<DriverEvent>> {
        Some(self.events.subscribe())
    }
}
