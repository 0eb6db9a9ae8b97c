//! The route table: every resource's paths and methods, and the microversions that gate
//! them, in one place. Handlers are reached only from here.

use axum::body::Body;
use axum::http::{Method, Response};

use crate::error::ApiError;
use crate::handlers::{
    certificates, cluster_templates, clusters, nodegroups, quotas, services, stats,
};
use crate::microversion::Version;
use crate::routing::{ResourceRequest, Routed};

/// Every path the table below serves, as the `route` label of request metrics
/// (`crate::metrics`): `{name}` stands for one segment, literals come before the template
/// they would also match. A route added below is added here too (else its requests are
/// counted as `unmatched`).
pub(crate) const ROUTE_TEMPLATES: &[&str] = &[
    "/",
    "/v1",
    "/v1/clustertemplates",
    "/v1/clustertemplates/detail",
    "/v1/clustertemplates/{ident}",
    "/v1/clusters",
    "/v1/clusters/detail",
    "/v1/clusters/{ident}",
    "/v1/clusters/{ident}/actions/resize",
    "/v1/clusters/{ident}/actions/upgrade",
    "/v1/clusters/{cluster}/nodegroups",
    "/v1/clusters/{cluster}/nodegroups/{ident}",
    "/v1/certificates",
    "/v1/certificates/{ident}",
    "/v1/credentials/{ident}",
    "/v1/quotas",
    "/v1/quotas/{project}/{resource}",
    "/v1/stats",
    "/v1/mservices",
];

pub(crate) async fn route(
    collection: &str,
    request: ResourceRequest<'_>,
) -> Result<Response<Body>, Routed> {
    match collection {
        "clustertemplates" => cluster_templates_routes(request).await,
        "certificates" => certificates_routes(request).await,
        "clusters" if request.rest.get(1).map(String::as_str) == Some("nodegroups") => {
            nodegroups_of_clusters(request).await
        }
        "clusters" => clusters_routes(request).await,
        "credentials" => credentials_routes(request).await,
        "mservices" => services_routes(request).await,
        "quotas" => quotas_routes(request).await,
        "stats" => stats_routes(request).await,
        _ => Err(Routed::NotFound),
    }
}

/// `/v1/clusters/{cluster}/nodegroups…`, from 1.9.
async fn nodegroups_of_clusters(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let version = request.context.version;
    if version < Version::new(1, 9) {
        let api = match *request.method {
            // Upstream's router names every GET this way.
            Method::GET => "get_one",
            Method::POST => "post",
            Method::PATCH => "patch",
            _ => "delete",
        };
        return Err(Routed::NotAcceptable(unsupported_api(version, api)));
    }
    nodegroups_routes(request).await
}

async fn cluster_templates_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), request.method) {
        ([], &Method::GET) => Ok(cluster_templates::list(&request, "clustertemplates").await?),
        ([], &Method::POST) => Ok(cluster_templates::create(request).await?),
        ([], _) => Err(Routed::MethodNotAllowed),
        (["detail"], &Method::GET) => {
            Ok(cluster_templates::list(&request, "clustertemplates/detail").await?)
        }
        ([ident], &Method::GET) => Ok(cluster_templates::get(&request, ident).await?),
        ([ident], &Method::PATCH) => Ok(cluster_templates::update(request, ident).await?),
        ([ident], &Method::DELETE) => Ok(cluster_templates::delete(&request, ident).await?),
        ([_], _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn clusters_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    let version = request.context.version;
    match (rest.as_slice(), request.method) {
        ([], &Method::GET) => Ok(clusters::list(&request, false).await?),
        ([], &Method::POST) => Ok(clusters::create(request).await?),
        ([], _) => Err(Routed::MethodNotAllowed),
        (["detail"], &Method::GET) => Ok(clusters::list(&request, true).await?),
        ([ident], &Method::GET) => Ok(clusters::get(&request, ident).await?),
        ([ident], &Method::PATCH) => Ok(clusters::update(request, ident).await?),
        ([ident], &Method::DELETE) => Ok(clusters::delete(&request, ident).await?),
        ([_], _) => Err(Routed::MethodNotAllowed),
        ([_, "detail"], _) => Err(Routed::Error(ApiError::not_found(
            "The %(name)s resource %(id)s could not be found.",
        ))),
        ([ident, "actions", "resize"], &Method::POST) => {
            if version < Version::new(1, 7) {
                return Err(Routed::NotAcceptable(unsupported_api(version, "resize")));
            }
            Ok(clusters::resize(request, ident).await?)
        }
        ([ident, "actions", "upgrade"], &Method::POST) => {
            if version < Version::new(1, 7) {
                return Err(Routed::NotAcceptable(unsupported_api(version, "upgrade")));
            }
            if version < Version::new(1, 8) {
                return Err(Routed::Error(ApiError::bad_request(
                    "Cluster upgrade is not supported in the provided microversion.",
                )));
            }
            Ok(clusters::upgrade(request, ident).await?)
        }
        ([_, "actions", ..], _) => Err(Routed::UnknownAction),
        _ => Err(Routed::NotFound),
    }
}

async fn nodegroups_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), request.method) {
        ([cluster, "nodegroups"], &Method::GET) => Ok(nodegroups::list(&request, cluster).await?),
        ([cluster, "nodegroups"], &Method::POST) => Ok(nodegroups::create(request, cluster).await?),
        ([_, "nodegroups"], _) => Err(Routed::MethodNotAllowed),
        ([cluster, "nodegroups", ident], &Method::GET) => {
            Ok(nodegroups::get(&request, cluster, ident).await?)
        }
        ([cluster, "nodegroups", ident], &Method::PATCH) => {
            Ok(nodegroups::update(request, cluster, ident).await?)
        }
        ([cluster, "nodegroups", ident], &Method::DELETE) => {
            Ok(nodegroups::delete(&request, cluster, ident).await?)
        }
        ([_, "nodegroups", _], _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn certificates_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), request.method) {
        ([], &Method::POST) => Ok(certificates::sign(request).await?),
        ([], _) => Err(Routed::MethodNotAllowed),
        ([ident], &Method::GET) => Ok(certificates::show(&request, ident).await?),
        ([ident], &Method::PATCH) => Ok(certificates::rotate_ca(request, ident).await?),
        ([_], _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn credentials_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), request.method) {
        ([ident], &Method::PATCH) => {
            if request.context.version < Version::new(1, 12) {
                return Err(Routed::NotAcceptable(format!(
                    "Version {} was requested but the requested API patch is not supported for this version.",
                    request.context.version
                )));
            }
            Ok(certificates::rotate_credentials(request, ident).await?)
        }
        ([_], _) | ([], _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn quotas_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let rest: Vec<&str> = request.rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), request.method) {
        ([], &Method::GET) => Ok(quotas::list(&request).await?),
        ([], &Method::POST) => Ok(quotas::create(request).await?),
        ([], _) => Err(Routed::MethodNotAllowed),
        ([project, resource], &Method::GET) => Ok(quotas::get(&request, project, resource).await?),
        ([project, resource], &Method::PATCH) => {
            Ok(quotas::update(request, project, resource).await?)
        }
        ([project, resource], &Method::DELETE) => {
            Ok(quotas::delete(&request, project, resource).await?)
        }
        ([_, _], _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn stats_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    match (request.rest.len(), request.method) {
        (0, &Method::GET) => Ok(stats::get(&request).await?),
        (0, _) => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

async fn services_routes(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    if !request.rest.is_empty() {
        return Err(Routed::NotFound);
    }
    if request.method != Method::GET {
        return Err(Routed::MethodNotAllowed);
    }
    services::list(request).await
}

/// Upstream's refusal of an API a microversion does not have.
pub(crate) fn unsupported_api(version: Version, api: &str) -> String {
    format!("Version {version} was requested but the requested API {api} is not supported for this version.")
}
