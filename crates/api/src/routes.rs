//! The route table: every resource's paths and methods, and the microversions that gate
//! them, in one place. The router dispatches from [`ROUTES`] and nothing else, and the
//! OpenAPI document (`crate::openapi`) is generated from the same table, so a route cannot be
//! served without being documented (`openapi::operation` must name every [`Endpoint`]).
//!
//! Adding a route: a variant of [`Endpoint`], a line in [`ROUTES`], an arm in [`call`] (the
//! handler) and one in `openapi::operation` (its documentation); the compiler asks for both
//! arms, and the tests check that every documented path reaches its endpoint.

use axum::body::Body;
use axum::http::{Method, Response};

use crate::error::ApiError;
use crate::handlers::{
    certificates, cluster_templates, clusters, events, nodegroups, quotas, services, stats,
};
use crate::microversion::Version;
use crate::routing::{ResourceRequest, Routed};

/// What a route does: one handler each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    TemplateList,
    TemplateDetailList,
    TemplateCreate,
    TemplateGet,
    TemplateUpdate,
    TemplateDelete,
    ClusterList,
    ClusterDetailList,
    ClusterCreate,
    ClusterGet,
    ClusterUpdate,
    ClusterDelete,
    ClusterResize,
    ClusterUpgrade,
    ClusterEvents,
    NodegroupList,
    NodegroupCreate,
    NodegroupGet,
    NodegroupUpdate,
    NodegroupDelete,
    CertificateSign,
    CertificateGet,
    CertificateRotate,
    CredentialRotate,
    QuotaList,
    QuotaCreate,
    QuotaGet,
    QuotaUpdate,
    QuotaDelete,
    Stats,
    ServiceList,
    ProjectEvents,
}

/// A method on a path under `/v1/`; `{name}` segments are parameters (one segment each).
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub endpoint: Endpoint,
    /// The microversion that brought the route, and the API name upstream's 406 gives below it.
    pub since: Option<(Version, &'static str)>,
}

const fn entry(method: Method, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
        since: None,
    }
}

const fn gated(
    method: Method,
    path: &'static str,
    endpoint: Endpoint,
    version: Version,
    api: &'static str,
) -> Route {
    Route {
        method,
        path,
        endpoint,
        since: Some((version, api)),
    }
}

const V1_7: Version = Version::new(1, 7);
/// Below 1.9 every method under `…/nodegroups` is refused before routing ([`route`]).
const V1_9: Version = Version::new(1, 9);
const V1_12: Version = Version::new(1, 12);

/// Every route of the v1 API, in matching order (a literal segment before a parameter).
pub(crate) static ROUTES: &[Route] = {
    use Endpoint::*;
    &[
        entry(Method::GET, "clustertemplates", TemplateList),
        entry(Method::POST, "clustertemplates", TemplateCreate),
        entry(Method::GET, "clustertemplates/detail", TemplateDetailList),
        entry(
            Method::GET,
            "clustertemplates/{clustertemplate_ident}",
            TemplateGet,
        ),
        entry(
            Method::PATCH,
            "clustertemplates/{clustertemplate_ident}",
            TemplateUpdate,
        ),
        entry(
            Method::DELETE,
            "clustertemplates/{clustertemplate_ident}",
            TemplateDelete,
        ),
        entry(Method::GET, "clusters", ClusterList),
        entry(Method::POST, "clusters", ClusterCreate),
        entry(Method::GET, "clusters/detail", ClusterDetailList),
        entry(Method::GET, "clusters/{cluster_ident}", ClusterGet),
        entry(Method::PATCH, "clusters/{cluster_ident}", ClusterUpdate),
        entry(Method::DELETE, "clusters/{cluster_ident}", ClusterDelete),
        gated(
            Method::POST,
            "clusters/{cluster_ident}/actions/resize",
            ClusterResize,
            V1_7,
            "resize",
        ),
        gated(
            Method::POST,
            "clusters/{cluster_ident}/actions/upgrade",
            ClusterUpgrade,
            V1_7,
            "upgrade",
        ),
        gated(
            Method::GET,
            "clusters/{cluster_ident}/nodegroups",
            NodegroupList,
            V1_9,
            "get_one",
        ),
        gated(
            Method::POST,
            "clusters/{cluster_ident}/nodegroups",
            NodegroupCreate,
            V1_9,
            "post",
        ),
        gated(
            Method::GET,
            "clusters/{cluster_ident}/nodegroups/{nodegroup_ident}",
            NodegroupGet,
            V1_9,
            "get_one",
        ),
        gated(
            Method::PATCH,
            "clusters/{cluster_ident}/nodegroups/{nodegroup_ident}",
            NodegroupUpdate,
            V1_9,
            "patch",
        ),
        gated(
            Method::DELETE,
            "clusters/{cluster_ident}/nodegroups/{nodegroup_ident}",
            NodegroupDelete,
            V1_9,
            "delete",
        ),
        entry(Method::POST, "certificates", CertificateSign),
        entry(Method::GET, "certificates/{cluster_ident}", CertificateGet),
        entry(
            Method::PATCH,
            "certificates/{cluster_ident}",
            CertificateRotate,
        ),
        gated(
            Method::PATCH,
            "credentials/{cluster_ident}",
            CredentialRotate,
            V1_12,
            "patch",
        ),
        entry(Method::GET, "quotas", QuotaList),
        entry(Method::POST, "quotas", QuotaCreate),
        entry(Method::GET, "quotas/{project_id}/{resource}", QuotaGet),
        entry(Method::PATCH, "quotas/{project_id}/{resource}", QuotaUpdate),
        entry(
            Method::DELETE,
            "quotas/{project_id}/{resource}",
            QuotaDelete,
        ),
        entry(
            Method::GET,
            "clusters/{cluster_ident}/events",
            ClusterEvents,
        ),
        entry(Method::GET, "events", ProjectEvents),
        entry(Method::GET, "stats", Stats),
        entry(Method::GET, "mservices", ServiceList),
    ]
};

/// Every path template served, for metrics labels: `/`, `/v1`, the OpenAPI document, and
/// each route's path under `/v1` (built once from [`ROUTES`], so a new route is labelled).
pub(crate) static ROUTE_TEMPLATES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| {
        let mut templates = vec!["/", "/v1", "/v1/openapi.json"];
        for route in ROUTES {
            let template = format!("/v1/{}", route.path);
            if !templates.iter().any(|known| *known == template) {
                // Leaked once per route, at first use: the set is fixed.
                templates.push(Box::leak(template.into_boxed_str()));
            }
        }
        templates
    });

impl Route {
    /// The parameters of `segments` (collection first) when they fit this route's path.
    pub(crate) fn matches<'a>(&self, segments: &[&'a str]) -> Option<Vec<&'a str>> {
        let mut parameters = Vec::new();
        let mut pattern = self.path.split('/');
        for segment in segments {
            match pattern.next()? {
                name if name.starts_with('{') => parameters.push(*segment),
                literal if literal == *segment => {}
                _ => return None,
            }
        }
        pattern.next().is_none().then_some(parameters)
    }
}

pub(crate) async fn route(
    collection: &str,
    request: ResourceRequest<'_>,
) -> Result<Response<Body>, Routed> {
    let version = request.context.version;
    let rest: &[String] = request.rest;
    let second = rest.get(1).map(String::as_str);
    // `/v1/clusters/{cluster}/nodegroups…` below 1.9: 406 whatever the method or the rest.
    if collection == "clusters" && second == Some("nodegroups") && version < V1_9 {
        let api = match *request.method {
            // Upstream's router names every GET this way.
            Method::GET => "get_one",
            Method::POST => "post",
            Method::PATCH => "patch",
            _ => "delete",
        };
        return Err(Routed::NotAcceptable(unsupported_api(version, api)));
    }
    let segments: Vec<&str> = std::iter::once(collection)
        .chain(rest.iter().map(String::as_str))
        .collect();
    let served = match resolve(&segments, request.method) {
        Resolution::Route(route, parameters) => {
            if let Some((introduced, api)) = route.since {
                if version < introduced {
                    return Err(Routed::NotAcceptable(unsupported_api(version, api)));
                }
            }
            return call(route.endpoint, &parameters, request).await;
        }
        Resolution::OtherMethod => true,
        Resolution::Unknown => false,
    };
    match (collection, rest.len(), second) {
        ("clusters", 2, Some("detail")) => Err(Routed::Error(ApiError::not_found(
            "The %(name)s resource %(id)s could not be found.",
        ))),
        ("clusters", 2.., Some("actions")) => Err(Routed::UnknownAction),
        ("credentials", 0, _) => Err(Routed::MethodNotAllowed),
        _ if served => Err(Routed::MethodNotAllowed),
        _ => Err(Routed::NotFound),
    }
}

/// Where a path (collection first) and a method lead in [`ROUTES`].
pub(crate) enum Resolution<'a> {
    /// The first route whose path and method fit, with the path's parameters.
    Route(&'static Route, Vec<&'a str>),
    /// The path is served, but not with this method.
    OtherMethod,
    Unknown,
}

pub(crate) fn resolve<'a>(segments: &[&'a str], method: &Method) -> Resolution<'a> {
    let mut served = false;
    for route in ROUTES {
        let Some(parameters) = route.matches(segments) else {
            continue;
        };
        if route.method == *method {
            return Resolution::Route(route, parameters);
        }
        served = true;
    }
    if served {
        Resolution::OtherMethod
    } else {
        Resolution::Unknown
    }
}

/// Calls the handler of `endpoint` with the path's parameters, in their order in the path.
async fn call(
    endpoint: Endpoint,
    parameters: &[&str],
    request: ResourceRequest<'_>,
) -> Result<Response<Body>, Routed> {
    use Endpoint::*;
    let first = parameters.first().copied().unwrap_or_default();
    let second = parameters.get(1).copied().unwrap_or_default();
    let version = request.context.version;
    Ok(match endpoint {
        TemplateList => cluster_templates::list(&request, "clustertemplates").await?,
        TemplateDetailList => cluster_templates::list(&request, "clustertemplates/detail").await?,
        TemplateCreate => cluster_templates::create(request).await?,
        TemplateGet => cluster_templates::get(&request, first).await?,
        TemplateUpdate => cluster_templates::update(request, first).await?,
        TemplateDelete => cluster_templates::delete(&request, first).await?,
        ClusterList => clusters::list(&request, false).await?,
        ClusterDetailList => clusters::list(&request, true).await?,
        ClusterCreate => clusters::create(request).await?,
        ClusterGet => clusters::get(&request, first).await?,
        ClusterUpdate => clusters::update(request, first).await?,
        ClusterDelete => clusters::delete(&request, first).await?,
        ClusterResize => clusters::resize(request, first).await?,
        ClusterUpgrade => {
            if version < Version::new(1, 8) {
                return Err(Routed::Error(ApiError::bad_request(
                    "Cluster upgrade is not supported in the provided microversion.",
                )));
            }
            clusters::upgrade(request, first).await?
        }
        ClusterEvents => events::of_cluster(&request, first).await?,
        ProjectEvents => events::of_project(&request).await?,
        NodegroupList => nodegroups::list(&request, first).await?,
        NodegroupCreate => nodegroups::create(request, first).await?,
        NodegroupGet => nodegroups::get(&request, first, second).await?,
        NodegroupUpdate => nodegroups::update(request, first, second).await?,
        NodegroupDelete => nodegroups::delete(&request, first, second).await?,
        CertificateSign => certificates::sign(request).await?,
        CertificateGet => certificates::show(&request, first).await?,
        CertificateRotate => certificates::rotate_ca(request, first).await?,
        CredentialRotate => certificates::rotate_credentials(request, first).await?,
        QuotaList => quotas::list(&request).await?,
        QuotaCreate => quotas::create(request).await?,
        QuotaGet => quotas::get(&request, first, second).await?,
        QuotaUpdate => quotas::update(request, first, second).await?,
        QuotaDelete => quotas::delete(&request, first, second).await?,
        Stats => stats::get(&request).await?,
        ServiceList => services::list(request).await?,
    })
}

/// Upstream's refusal of an API a microversion does not have.
pub(crate) fn unsupported_api(version: Version, api: &str) -> String {
    format!("Version {version} was requested but the requested API {api} is not supported for this version.")
}
