//! `/v1/certificates` (a cluster's CA, signing CSRs, CA rotation) and `/v1/credentials`
//! (rotating the credentials a cluster's nodes use, from 1.12).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::cluster::{Cluster, ClusterStatus};
use magnum_domain::event::Cause;
use magnum_domain::operation::OperationKind;
use magnum_domain::policy::Target;
use magnum_driver::Action;
use magnum_driver::Driver;
use magnum_keystone::KeystoneError;
use magnum_keystore::{ca_kind, KeystoreError};
use magnum_store::{ClusterScope, StoredCredential};
use serde_json::{json, Value};

use super::{respond, sorted_object};
use crate::context::RequestContext;
use crate::error::{ApiError, ChangeError};
use crate::input::{attribute, body_object, mandatory, parse_object, Attribute, Kind};
use crate::lookup::{change_request, driver_for, resolve_cluster as resolve, template_of};
use crate::routing::ResourceRequest;
use crate::AppState;

pub(crate) const SIGN_SCHEMA: &[Attribute] = &[
    mandatory("cluster_uuid", Kind::Text { min: 1, max: 255 }),
    mandatory("csr", Kind::Text { min: 1, max: 65536 }),
    attribute("ca_cert_type", Kind::Text { min: 0, max: 255 }),
    attribute("pem", Kind::ReadOnly),
    attribute("links", Kind::ReadOnly),
    attribute("created_at", Kind::Timestamp),
    attribute("updated_at", Kind::Timestamp),
];

fn links(base_url: &str, cluster: &Cluster) -> Value {
    serde_json::to_value(magnum_types::Link::self_and_bookmark(
        base_url,
        &format!("certificates/{}", cluster.uuid),
    ))
    .unwrap_or(Value::Null)
}

fn target(cluster: &Cluster) -> Target {
    Target::owned_by(&cluster.project_id, &cluster.user_id)
}

fn keystore_error(cluster: &Cluster, error: KeystoreError) -> ApiError {
    match error {
        KeystoreError::NotReady => ApiError::conflict(format!(
            "The certificate authority of cluster {} is not ready yet; it is made when the cluster starts building.",
            cluster.display_name()
        )),
        KeystoreError::Certificate(error) => ApiError::bad_request(error.to_string()),
        other => ApiError::internal(other),
    }
}

pub(crate) async fn show(
    request: &ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&["ca_cert_type"])?;
    let identity = &context.identity;
    // No all-projects reach for admins here, as upstream.
    let cluster = resolve(state, ident, ClusterScope::Project(&identity.project_id)).await?;
    state
        .policy
        .enforce("certificate:get", identity, &target(&cluster))?;
    let pem = state
        .certificates
        .certificate(cluster.uuid, ca_kind(query.get("ca_cert_type")))
        .await
        .map_err(|error| keystore_error(&cluster, error))?;
    let mut document = BTreeMap::new();
    document.insert("cluster_uuid", json!(cluster.uuid.to_string()));
    document.insert("pem", json!(pem));
    document.insert("links", links(&context.base_url, &cluster));
    Ok(respond(context, StatusCode::OK, &sorted_object(document)))
}

pub(crate) async fn sign(request: ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let object = body_object(body, "certificate")?;
    let attributes = parse_object("certificate", &object, SIGN_SCHEMA)?;
    let ident = attributes.text("cluster_uuid").unwrap_or_default();
    let cluster = match resolve(state, &ident, ClusterScope::Project(&identity.project_id)).await {
        Ok(cluster) => cluster,
        // Upstream answers 400 for an unknown cluster here.
        Err(error) if error.status == StatusCode::NOT_FOUND => {
            return Err(ApiError::bad_request(error.detail))
        }
        Err(error) => return Err(error),
    };
    state
        .policy
        .enforce("certificate:create", identity, &target(&cluster))?;
    let csr = attributes.text("csr").unwrap_or_default();
    let ca_cert_type = attributes.text("ca_cert_type");
    let pem = state
        .certificates
        .sign(cluster.uuid, ca_kind(ca_cert_type.as_deref()), &csr)
        .await
        .map_err(|error| keystore_error(&cluster, error))?;
    tracing::info!(cluster.id = %cluster.uuid, user.id = %identity.user_id, "certificate signed");
    let mut document = BTreeMap::new();
    document.insert("cluster_uuid", json!(cluster.uuid.to_string()));
    document.insert("csr", json!(csr));
    document.insert("pem", json!(pem));
    document.insert("links", links(&context.base_url, &cluster));
    if let Some(kind) = ca_cert_type {
        document.insert("ca_cert_type", json!(kind));
    }
    Ok(respond(
        context,
        StatusCode::CREATED,
        &sorted_object(document),
    ))
}

/// Stores the cluster in UPDATE_IN_PROGRESS with the operation that carries `kind` out.
async fn start_operation(
    request: &ResourceRequest<'_>,
    cluster: &Cluster,
    kind: OperationKind,
    reason: &str,
) -> Result<(), ApiError> {
    let state = request.state;
    let change = change_request(&request.context.identity);
    state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&request.context.request_id),
            |aggregate| -> Result<(), ChangeError> {
                Ok(aggregate.start_rotation(kind, reason, &change)?)
            },
        )
        .await
        .map_err(|error| {
            error.answer(|| {
                ApiError::not_found(format!("Cluster {} could not be found.", cluster.uuid))
            })
        })?;
    state.operations_enqueued.notify_one();
    Ok(())
}

pub(crate) async fn rotate_ca(
    request: ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    request.query.allow_only(&[])?;
    if let Some(body) = &request.body {
        if !body.is_object() {
            return Err(ApiError::bad_request("Request must be a JSON dict"));
        }
    }
    let state = request.state;
    let identity = &request.context.identity;
    let cluster = resolve(state, ident, ClusterScope::Project(&identity.project_id)).await?;
    state
        .policy
        .enforce("certificate:rotate_ca", identity, &target(&cluster))?;
    let template = template_of(state, &cluster).await?;
    if template.tls_disabled {
        return Err(ApiError::bad_request(
            "Rotating the CA certificate on a non-TLS cluster is not supported",
        ));
    }
    if !cluster.status.is_complete() {
        return Err(ApiError::bad_request(format!(
            "Updating a cluster when status is \"{}\" is not supported.",
            cluster.status
        )));
    }
    driver_for(state, &template, Action::RotateCa)?;
    state
        .certificates
        .rotate(cluster.uuid, &cluster.display_name())
        .await
        .map_err(|error| keystore_error(&cluster, error))?;
    start_operation(
        &request,
        &cluster,
        OperationKind::RotateCa,
        "Rotating the certificate authority: new node certificates are being issued.",
    )
    .await?;
    tracing::info!(cluster.id = %cluster.uuid, "CA rotation accepted");
    Ok(respond(
        request.context,
        StatusCode::ACCEPTED,
        &json!({"uuid": cluster.uuid.to_string()}),
    ))
}

/// How long a credential whose request ended without recording it is left alone before it is
/// revoked: a commit whose answer was lost may still have recorded it.
const UNRECORDED_CREDENTIAL_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// A credential made for a request and not recorded yet. Unless [`PendingDelegation::recorded`]
/// says it was, dropping it — a refused write, an error, a request cancelled by a client
/// that went away — revokes it in the background once the store shows it was not recorded
/// after all, so that no credential outlives its request unrecorded.
pub(crate) struct PendingDelegation {
    credential: StoredCredential,
    release: Option<Release>,
}

struct Release {
    authenticator: std::sync::Arc<dyn crate::Authenticator>,
    store: magnum_store::Store,
    token: Option<String>,
}

impl PendingDelegation {
    pub(crate) fn credential(&self) -> &StoredCredential {
        &self.credential
    }

    /// The credential is in the store: it lives with its cluster now.
    pub(crate) fn recorded(mut self) {
        self.release = None;
    }
}

impl Drop for PendingDelegation {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        let credential = self.credential.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(credential.id = %credential.credential_id, user.id = %credential.user_id,
                "an unrecorded application credential cannot be revoked: it stays in Keystone");
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(UNRECORDED_CREDENTIAL_DELAY).await;
            match release.store.cluster_credentials(credential.cluster_uuid).await {
                Ok(recorded)
                    if recorded
                        .iter()
                        .any(|kept| kept.credential_id == credential.credential_id) => {}
                Ok(_) => {
                    if let Err(error) = release
                        .authenticator
                        .revoke_credential(
                            release.token.as_deref(),
                            &credential.user_id,
                            &credential.credential_id,
                        )
                        .await
                    {
                        tracing::error!(credential.id = %credential.credential_id, user.id = %credential.user_id,
                            %error, "cannot revoke the application credential of a refused request: it stays in Keystone");
                    }
                }
                Err(error) => {
                    tracing::error!(credential.id = %credential.credential_id, user.id = %credential.user_id,
                        %error, "cannot tell whether an application credential was recorded: it stays in Keystone");
                }
            }
        });
    }
}

/// A Keystone application credential for `cluster`, created in the caller's name with the
/// caller's token and sealed for storage, when the cluster's driver acts with one (and the
/// service has Keystone to delegate with): `None` otherwise.
pub(crate) async fn delegate_credential(
    state: &AppState,
    context: &RequestContext,
    driver: &dyn Driver,
    cluster: uuid::Uuid,
) -> Result<Option<PendingDelegation>, ApiError> {
    if !driver.delegates_credentials() {
        return Ok(None);
    }
    let token = context.auth_token.as_ref().map(|token| token.0.as_str());
    let delegated = state
        .authenticator
        .delegate_credential(
            token,
            &context.identity,
            &driver.delegated_roles(),
            // Unique per user, as Keystone wants, across a cluster's rotations.
            &format!(
                "magnum-rs-{cluster}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            &format!(
                "Created by magnum-rs for cluster {cluster}: the cluster's nodes and Cluster API act with it. Revoked when the cluster is deleted or its credentials rotated."
            ),
        )
        .await
        .map_err(|error| match error {
            KeystoneError::Refused(reason) => ApiError::forbidden(reason),
            KeystoneError::InvalidToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            ),
            KeystoneError::Unavailable(reason) => {
                tracing::warn!(%reason, "cannot create a cluster's application credential: answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The identity service is unavailable. Retry later.",
                )
            }
            KeystoneError::Setup(reason) => ApiError::internal(reason),
        })?;
    let Some(delegated) = delegated else {
        return Ok(None);
    };
    let sealed = state
        .certificates
        .seal_credential(cluster, &delegated.id, &delegated.secret)
        .await;
    let stored = |sealed_secret| StoredCredential {
        cluster_uuid: cluster,
        credential_id: delegated.id.clone(),
        user_id: delegated.user_id.clone(),
        sealed_secret,
        created_at: magnum_domain::time::Timestamp::now(),
        revoke_after: None,
    };
    // From here on, whatever happens to the request, the credential is recorded or revoked
    // (with the caller's own token first: a user may delete their own credentials).
    let pending = |sealed_secret| PendingDelegation {
        credential: stored(sealed_secret),
        release: Some(Release {
            authenticator: state.authenticator.clone(),
            store: state.store.clone(),
            token: token.map(str::to_owned),
        }),
    };
    match sealed {
        Ok(sealed_secret) => Ok(Some(pending(sealed_secret))),
        Err(error) => {
            drop(pending(None));
            Err(ApiError::internal(error))
        }
    }
}

pub(crate) async fn rotate_credentials(
    request: ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    request.query.allow_only(&[])?;
    let state = request.state;
    let identity = &request.context.identity;
    let cluster = resolve(state, ident, ClusterScope::Project(&identity.project_id)).await?;
    state
        .policy
        .enforce("credential:rotate", identity, &Target::caller(identity))?;
    let allowed = cluster.status.is_complete()
        || matches!(
            cluster.status,
            ClusterStatus::UpdateInProgress | ClusterStatus::UpdateFailed
        );
    if !allowed {
        return Err(ApiError::bad_request(format!(
            "Updating a cluster when status is \"{}\" is not supported.",
            cluster.status
        )));
    }
    let template = template_of(state, &cluster).await?;
    let driver = driver_for(state, &template, Action::RotateCredentials)?;
    // A rotation the cluster's status refuses makes no credential: the operation start below
    // gives the refusal.
    let would_start = cluster
        .status
        .apply(magnum_domain::cluster::StatusEvent::UpdateStarted)
        .is_ok();
    let credential = if would_start {
        delegate_credential(state, request.context, &*driver, cluster.uuid).await?
    } else {
        None
    };
    // Recorded before the operation that applies it; the converge puts it in place and the
    // conductor schedules the revocation of the ones before it. Should the operation be
    // refused after all (another change started in between), the credential stays recorded
    // and the cluster's next change puts it in place: revoking it now could pull it from
    // under a converge that already read it.
    if let Some(pending) = credential {
        if let Err(error) = state
            .store
            .add_cluster_credential(pending.credential())
            .await
        {
            return Err(match error {
                magnum_store::StoreError::NotFound => {
                    ApiError::not_found(format!("Cluster {} could not be found.", cluster.uuid))
                }
                other => other.into(),
            });
        }
        pending.recorded();
    }
    start_operation(
        &request,
        &cluster,
        OperationKind::RotateCredentials,
        "Rotating the credentials of the cluster's nodes.",
    )
    .await?;
    Ok(respond(
        request.context,
        StatusCode::ACCEPTED,
        &json!({"uuid": cluster.uuid.to_string()}),
    ))
}
