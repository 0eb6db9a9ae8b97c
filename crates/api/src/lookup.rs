//! Lookups and checks that several resources share: a cluster or template as the caller
//! may address it, the template and driver of a cluster, capacity, and who asks. Handlers
//! use these; no handler module imports another.

use std::sync::Arc;

use magnum_domain::aggregate::Request;
use magnum_domain::cluster::Cluster;
use magnum_domain::cluster_template::ClusterTemplate;
use magnum_domain::operation::Initiator;
use magnum_domain::policy::Target;
use magnum_domain::time::Timestamp;
use magnum_domain::Identity;
use magnum_driver::{Action, Driver};
use magnum_store::{ClusterScope, TemplateScope};

use crate::error::ApiError;
use crate::AppState;

pub(crate) fn template_not_found(ident: &str) -> ApiError {
    ApiError::not_found(format!("ClusterTemplate {ident} could not be found."))
}

pub(crate) fn cluster_not_found(ident: &str) -> ApiError {
    ApiError::not_found(format!("Cluster {ident} could not be found."))
}

pub(crate) fn cluster_target(cluster: &Cluster) -> Target {
    Target::owned_by(&cluster.project_id, &cluster.user_id)
}

/// Whether the admin rule lets the caller reach every project's clusters.
pub(crate) fn cluster_scope<'a>(
    state: &AppState,
    identity: &'a Identity,
    all_projects_rule: Option<&str>,
) -> ClusterScope<'a> {
    match all_projects_rule {
        Some(rule)
            if state.policy.is_admin(identity)
                && state
                    .policy
                    .allows(rule, identity, &Target::caller(identity)) =>
        {
            ClusterScope::All
        }
        _ => ClusterScope::Project(&identity.project_id),
    }
}

/// A cluster by uuid or exact name within `scope`.
pub(crate) async fn resolve_cluster(
    state: &AppState,
    ident: &str,
    scope: ClusterScope<'_>,
) -> Result<Cluster, ApiError> {
    if let Some(uuid) = magnum_domain::parse_uuid_like(ident) {
        return match state.store.cluster_by_uuid(uuid).await? {
            Some(cluster)
                if matches!(scope, ClusterScope::All)
                    || matches!(scope, ClusterScope::Project(project) if project == cluster.project_id) =>
            {
                Ok(cluster)
            }
            _ => Err(cluster_not_found(ident)),
        };
    }
    let project = match scope {
        ClusterScope::All => None,
        ClusterScope::Project(project) => Some(project),
    };
    let mut found = state.store.clusters_by_name(ident, project, 2).await?;
    match found.len() {
        0 => Err(cluster_not_found(ident)),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::conflict(
            "Multiple clusters exist with same name. Please use the cluster uuid instead.",
        )),
    }
}

/// A cluster as the given caller may address it, for the nodegroup endpoints.
pub(crate) async fn resolve_cluster_for(
    state: &AppState,
    identity: &Identity,
    ident: &str,
    all_projects_rule: Option<&str>,
) -> Result<Cluster, ApiError> {
    resolve_cluster(
        state,
        ident,
        cluster_scope(state, identity, all_projects_rule),
    )
    .await
}

/// The template a stored cluster was built from (the foreign key keeps it present).
pub(crate) async fn template_of(
    state: &AppState,
    cluster: &Cluster,
) -> Result<ClusterTemplate, ApiError> {
    state
        .store
        .cluster_template_by_uuid(cluster.cluster_template_id, TemplateScope::All)
        .await?
        .ok_or_else(|| ApiError::internal("a cluster's template is missing"))
}

/// The driver that serves clusters of `template`, refusing `action` when it cannot do it.
pub(crate) fn driver_for(
    state: &AppState,
    template: &ClusterTemplate,
    action: Action,
) -> Result<Arc<dyn Driver>, ApiError> {
    let name = template.driver.clone().unwrap_or_default();
    let driver = state
        .drivers
        .by_name(&name)
        .ok_or_else(|| ApiError::bad_request(format!("Cluster driver ({name}) not supported.")))?;
    if !driver.supports(action) {
        return Err(refused_action(&*driver, action));
    }
    Ok(driver)
}

/// Refuses a change that adds nodes for a project the driver does not build for, or that
/// needs more nodes than a bounded driver has room for.
pub(crate) fn check_capacity(
    driver: &dyn Driver,
    project_id: &str,
    additional_nodes: i64,
) -> Result<(), ApiError> {
    if additional_nodes > 0 {
        driver
            .permits_project(project_id)
            .map_err(ApiError::forbidden)?;
    }
    match driver.nodes_available() {
        Some(available) if additional_nodes > available => Err(ApiError::bad_request(format!(
            "The {} driver has room for {} more nodes on this host; this request needs {}.",
            driver.name(),
            available.max(0),
            additional_nodes
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn refused_action(driver: &dyn Driver, action: Action) -> ApiError {
    let message = match action {
        Action::ScaleMasters => {
            "Resizing the master nodegroup is not supported by this driver.".to_owned()
        }
        Action::RotateCredentials => "Credential rotation is not supported by driver.".to_owned(),
        _ => format!(
            "{} is not supported by the {} driver.",
            action.describe(),
            driver.name()
        ),
    };
    ApiError::bad_request(message)
}

pub(crate) fn initiator(identity: &Identity) -> Initiator {
    Initiator {
        user_id: identity.user_id.clone(),
        project_id: identity.project_id.clone(),
    }
}

pub(crate) fn nodegroup_not_found(ident: &str) -> ApiError {
    ApiError::not_found(format!("Nodegroup {ident} could not be found."))
}

/// Who asks, and now: what every use case of the aggregate records.
pub(crate) fn change_request(identity: &Identity) -> Request {
    Request {
        initiator: initiator(identity),
        now: Timestamp::now(),
    }
}

/// A copy of a refusal computed once before a change, for each time the change is decided.
pub(crate) fn copy_error(error: &ApiError) -> ApiError {
    ApiError::new(error.status, error.detail.clone())
}

/// A template by uuid (when the identifier looks like one) or by exact name.
pub(crate) async fn resolve_template(
    state: &AppState,
    ident: &str,
    scope: TemplateScope<'_>,
) -> Result<ClusterTemplate, ApiError> {
    if let Some(uuid) = magnum_domain::parse_uuid_like(ident) {
        return state
            .store
            .cluster_template_by_uuid(uuid, scope)
            .await?
            .ok_or_else(|| template_not_found(ident));
    }
    let mut found = state
        .store
        .cluster_templates_by_name(ident, scope, 2)
        .await?;
    match found.len() {
        0 => Err(template_not_found(ident)),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::conflict(
            "Multiple ClusterTemplates exist with same name. Please use the ClusterTemplate uuid instead.",
        )),
    }
}
