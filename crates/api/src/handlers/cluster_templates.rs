//! `/v1/clustertemplates`: list, detail, get, create, update, delete.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode};
use magnum_domain::cluster_template::{
    ClusterTemplate, Coe, ServerType, TemplateRuleError, TemplateRules,
};
use magnum_domain::names::generate_name;
use magnum_domain::policy::Target;
use magnum_domain::time::Timestamp;
use magnum_domain::Identity;
use magnum_driver::References;
use magnum_store::{StoreError, TemplateScope, CLUSTER_TEMPLATE_SORT_KEYS};
use magnum_types::ClusterTemplateCollection;
use serde_json::Value;

use super::{respond, respond_cached_list, respond_empty, respond_encoded};
use crate::cache::{CachedResponse, ResponseCache};
use crate::error::{ApiError, ChangeError};
use crate::input::body_object;
use crate::input::{
    attribute, mandatory, parse_object, parse_patched, Attribute, Attributes, Kind,
};
use crate::lookup::{resolve_template as resolve, template_not_found as not_found};
use crate::pagination::{next_link, page_from_query, PAGINATION_ARGUMENTS};
use crate::patch::{apply_patch, parse_patch, PatchRules};
use crate::routing::ResourceRequest;
use crate::views::cluster_template::view;
use crate::AppState;

const TEXT: Kind = Kind::Text { min: 1, max: 255 };
const COE_CHOICES: &[&str] = &["kubernetes", "swarm-mode"];

/// The writable attributes of a template, and those upstream knows but sets itself.
pub(crate) const CREATE_SCHEMA: &[Attribute] = &[
    attribute("uuid", Kind::Uuid),
    attribute("name", TEXT),
    attribute("coe", Kind::Choice(COE_CHOICES)),
    mandatory("image_id", TEXT),
    attribute("flavor_id", TEXT),
    attribute("master_flavor_id", TEXT),
    attribute("dns_nameserver", TEXT),
    attribute("keypair_id", TEXT),
    attribute("external_network_id", TEXT),
    attribute("fixed_network", TEXT),
    attribute("fixed_subnet", TEXT),
    attribute("network_driver", TEXT),
    attribute("volume_driver", TEXT),
    attribute(
        "apiserver_port",
        Kind::Integer {
            min: Some(1024),
            max: Some(65535),
        },
    ),
    attribute(
        "docker_volume_size",
        Kind::Integer {
            min: Some(1),
            max: None,
        },
    ),
    attribute("docker_storage_driver", TEXT),
    attribute("cluster_distro", TEXT),
    attribute("http_proxy", TEXT),
    attribute("https_proxy", TEXT),
    attribute("no_proxy", TEXT),
    attribute("registry_enabled", Kind::Boolean),
    attribute("insecure_registry", TEXT),
    attribute("labels", Kind::Labels),
    attribute("tls_disabled", Kind::Boolean),
    attribute("public", Kind::Boolean),
    attribute("hidden", Kind::Boolean),
    attribute("server_type", Kind::Choice(&["vm", "bm"])),
    attribute("master_lb_enabled", Kind::Boolean),
    attribute("floating_ip_enabled", Kind::Boolean),
    attribute("tags", Kind::Text { min: 0, max: 255 }),
    attribute("driver", TEXT),
    attribute("project_id", Kind::ReadOnly),
    attribute("user_id", Kind::ReadOnly),
    attribute("links", Kind::ReadOnly),
    attribute("created_at", Kind::Timestamp),
    attribute("updated_at", Kind::Timestamp),
];

/// The same attributes when re-reading a patched template: the server-set ones come back
/// unchanged from the stored template (patching them is refused earlier).
const PATCHED_SCHEMA: &[Attribute] = &{
    let mut schema = [attribute("", Kind::Ignored); CREATE_SCHEMA.len()];
    let mut index = 0;
    while index < CREATE_SCHEMA.len() {
        let spec = CREATE_SCHEMA[index];
        schema[index] = match spec.kind {
            Kind::ReadOnly | Kind::Uuid => attribute(spec.name, Kind::Ignored),
            _ => spec,
        };
        index += 1;
    }
    schema
};

const PATCH_RULES: PatchRules = PatchRules {
    internal: &[
        "/created_at",
        "/id",
        "/links",
        "/updated_at",
        "/uuid",
        "/project_id",
        "/user_id",
    ],
    non_removable: &[
        "/image_id",
        "/coe",
        "/network_driver",
        "/external_network_id",
        "/tls_disabled",
        "/public",
        "/server_type",
        "/registry_enabled",
        "/cluster_distro",
        "/hidden",
    ],
    dictionaries: &["/labels"],
};

/// Which templates the caller may address; admins reach every project's when `rule` allows.
fn scope<'a>(
    state: &AppState,
    identity: &'a Identity,
    all_projects_rule: &str,
) -> TemplateScope<'a> {
    if state.policy.is_admin(identity)
        && state
            .policy
            .allows(all_projects_rule, identity, &Target::caller(identity))
    {
        TemplateScope::All
    } else {
        TemplateScope::VisibleTo(&identity.project_id)
    }
}

fn target(template: &ClusterTemplate) -> Target {
    Target::owned_by(&template.project_id, &template.user_id)
}

/// The template generation, when the cache is in use (reading it costs a query).
async fn current_generation(state: &AppState, cache: &ResponseCache) -> Result<i64, ApiError> {
    if cache.is_enabled() {
        Ok(state.store.cluster_templates_generation().await?)
    } else {
        Ok(0)
    }
}

pub(crate) async fn list(
    request: &ResourceRequest<'_>,
    collection_path: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        cache,
        context,
        query,
        ..
    } = request;
    query.allow_only(&PAGINATION_ARGUMENTS)?;
    let identity = &context.identity;
    let (rule, all_projects_rule) = if collection_path.ends_with("detail") {
        (
            "clustertemplate:detail",
            "clustertemplate:detail_all_projects",
        )
    } else {
        (
            "clustertemplate:get_all",
            "clustertemplate:get_all_all_projects",
        )
    };
    state
        .policy
        .enforce(rule, identity, &Target::caller(identity))?;
    let page = page_from_query(query, CLUSTER_TEMPLATE_SORT_KEYS, state.settings.max_limit)?;
    let scope = scope(state, identity, all_projects_rule);
    let generation = current_generation(state, cache).await?;
    let cache_key = format!(
        "{collection_path}|{scope:?}|{}|{:?}|{}|{:?}|{}",
        page.sort_key, page.direction, page.limit, page.marker, context.base_url
    );
    respond_cached_list(context, cache, cache_key, generation, || async {
        let templates = match state.store.list_cluster_templates(scope, &page).await {
            Ok(templates) => templates,
            Err(StoreError::MarkerNotFound(marker)) => return Err(not_found(&marker.to_string())),
            Err(error) => return Err(error.into()),
        };
        let next = next_link(
            &context.base_url,
            collection_path,
            &page,
            templates.len(),
            templates.last().map(|template| template.uuid.to_string()),
        );
        let document = ClusterTemplateCollection {
            clustertemplates: templates
                .iter()
                .map(|template| view(template, &context.base_url))
                .collect(),
            next,
        };
        Ok(Bytes::from(magnum_types::encode(&document)))
    })
    .await
}

pub(crate) async fn get(
    request: &ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        cache,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let scope = scope(state, identity, "clustertemplate:get_one_all_projects");
    let generation = current_generation(state, cache).await?;
    let cache_key = format!("{ident}|{scope:?}|{}", context.base_url);
    if let Some(CachedResponse {
        body,
        owner: Some((owner, public)),
        ..
    }) = cache.get(&cache_key, generation)
    {
        if !public {
            state
                .policy
                .enforce("clustertemplate:get", identity, &owner)?;
        }
        return Ok(respond_encoded(context, StatusCode::OK, body));
    }
    let template = resolve(state, ident, scope).await?;
    // Public templates are readable by everyone, as upstream.
    if !template.public {
        state
            .policy
            .enforce("clustertemplate:get", identity, &target(&template))?;
    }
    let body = Bytes::from(magnum_types::encode(&view(&template, &context.base_url)));
    cache.put(
        cache_key,
        CachedResponse {
            generation,
            body: body.clone(),
            owner: Some((target(&template), template.public)),
        },
    );
    Ok(respond_encoded(context, StatusCode::OK, body))
}

/// Builds a template from checked attributes; what is absent takes upstream's default.
/// What the server sets on a template: identity, ownership and bookkeeping.
struct ServerSet {
    id: i64,
    uuid: uuid::Uuid,
    project_id: String,
    user_id: String,
    created_at: Timestamp,
    updated_at: Option<Timestamp>,
    version: i64,
}

impl ServerSet {
    fn of(template: &ClusterTemplate) -> Self {
        Self {
            id: template.id,
            uuid: template.uuid,
            project_id: template.project_id.clone(),
            user_id: template.user_id.clone(),
            created_at: template.created_at,
            updated_at: template.updated_at,
            version: template.version,
        }
    }
}

fn from_attributes(attributes: &Attributes, coe: Coe, owner: ServerSet) -> ClusterTemplate {
    let server_type = match attributes.text("server_type").as_deref() {
        Some("bm") => ServerType::Bm,
        _ => ServerType::Vm,
    };
    ClusterTemplate {
        id: owner.id,
        uuid: owner.uuid,
        name: attributes.text("name"),
        coe,
        image_id: attributes.text("image_id").unwrap_or_default(),
        flavor_id: attributes.text("flavor_id"),
        master_flavor_id: attributes.text("master_flavor_id"),
        dns_nameserver: attributes.text("dns_nameserver"),
        keypair_id: attributes.text("keypair_id"),
        external_network_id: attributes.text("external_network_id"),
        fixed_network: attributes.text("fixed_network"),
        fixed_subnet: attributes.text("fixed_subnet"),
        network_driver: attributes.text("network_driver"),
        volume_driver: attributes.text("volume_driver"),
        apiserver_port: attributes.integer("apiserver_port"),
        docker_volume_size: attributes.integer("docker_volume_size"),
        docker_storage_driver: attributes.text("docker_storage_driver"),
        cluster_distro: attributes.text("cluster_distro"),
        http_proxy: attributes.text("http_proxy"),
        https_proxy: attributes.text("https_proxy"),
        no_proxy: attributes.text("no_proxy"),
        registry_enabled: attributes.boolean("registry_enabled").unwrap_or(false),
        insecure_registry: attributes.text("insecure_registry"),
        labels: attributes.labels("labels").unwrap_or_default(),
        tls_disabled: attributes.boolean("tls_disabled").unwrap_or(false),
        public: attributes.boolean("public").unwrap_or(false),
        hidden: attributes.boolean("hidden").unwrap_or(false),
        server_type,
        master_lb_enabled: attributes.boolean("master_lb_enabled").unwrap_or(false),
        floating_ip_enabled: attributes.boolean("floating_ip_enabled").unwrap_or(true),
        tags: attributes.text("tags"),
        driver: attributes.text("driver"),
        project_id: owner.project_id,
        user_id: owner.user_id,
        created_at: owner.created_at,
        updated_at: owner.updated_at,
        version: owner.version,
    }
}

fn parse_coe(attributes: &Attributes) -> Result<Coe, ApiError> {
    match attributes.text("coe") {
        Some(coe) => coe
            .parse()
            .map_err(|()| ApiError::bad_request(TemplateRuleError::CoeUnset.to_string())),
        None => Err(TemplateRuleError::CoeUnset.into()),
    }
}

/// The rules every stored template obeys, then its driver's view of its references. Sets
/// the network driver default, `cluster_distro` and `driver`.
fn check_rules(rules: &TemplateRules, template: &mut ClusterTemplate) -> Result<(), ApiError> {
    template.network_driver = Some(rules.validate(template)?);
    Ok(())
}

fn references(template: &ClusterTemplate) -> References<'_> {
    References {
        flavor_id: template.flavor_id.as_deref(),
        master_flavor_id: template.master_flavor_id.as_deref(),
        external_network_id: template.external_network_id.as_deref(),
        fixed_network: template.fixed_network.as_deref(),
        fixed_subnet: template.fixed_subnet.as_deref(),
        keypair: None,
        boot_volume_size: template.labels.get("boot_volume_size"),
    }
}

fn publish_denied() -> ApiError {
    ApiError::forbidden("Not authorized to set public or hidden flag for cluster template.")
}

pub(crate) async fn create(request: ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let object = body_object(body, "cluster_template")?;
    let attributes = parse_object("cluster_template", &object, CREATE_SCHEMA)?;
    let coe = parse_coe(&attributes)?;
    let now = Timestamp::now();
    let owner = ServerSet {
        id: 0,
        uuid: attributes.uuid("uuid").unwrap_or_else(uuid::Uuid::new_v4),
        project_id: identity.project_id.clone(),
        user_id: identity.user_id.clone(),
        created_at: now,
        updated_at: None,
        version: 0,
    };
    let mut template = from_attributes(&attributes, coe, owner);
    check_rules(&state.settings.template_rules, &mut template)?;
    let token = context.auth_token.as_ref().map(|token| token.0.as_str());
    let resolved = state
        .drivers
        .resolve_as(
            token,
            template.driver.as_deref(),
            &template.image_id,
            template.server_type,
            template.coe,
        )
        .await?;
    state.policy.enforce(
        "clustertemplate:create",
        identity,
        &Target::caller(identity),
    )?;
    resolved
        .driver
        .validate_references_as(token, &references(&template))
        .await?;
    template.cluster_distro = Some(resolved.os_distro.clone());
    template.driver = Some(resolved.driver.name().to_owned());
    if (template.public || template.hidden)
        && !state.policy.allows(
            "clustertemplate:publish",
            identity,
            &Target::caller(identity),
        )
    {
        return Err(publish_denied());
    }
    if template.name.is_none() {
        template.name = Some(generate_name("template"));
    }
    let stored = match state.store.insert_cluster_template(&template).await {
        Ok(stored) => stored,
        Err(StoreError::DuplicateUuid(uuid)) => {
            return Err(ApiError::conflict(format!(
                "A ClusterTemplate with UUID {uuid} already exists."
            )))
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(cluster_template.id = %stored.uuid, project.id = %stored.project_id, "cluster template created");
    let mut response = respond(
        context,
        StatusCode::CREATED,
        &view(&stored, &context.base_url),
    );
    if let Ok(location) = HeaderValue::from_str(&format!(
        "{}/v1/clustertemplates/{}",
        context.base_url, stored.uuid
    )) {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

fn in_use(template: &ClusterTemplate) -> ApiError {
    ApiError::bad_request(format!(
        "ClusterTemplate {} is referenced by one or multiple clusters.",
        template.uuid
    ))
}

pub(crate) async fn update(
    request: ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    // The body is checked before the template is looked up, as upstream.
    let operations = parse_patch(body, &PATCH_RULES)?;
    let identity = &context.identity;
    let scope = scope(state, identity, "clustertemplate:update_all_projects");
    let resolved = resolve(state, ident, scope).await?;
    let patched = |current: &ClusterTemplate| -> Result<ClusterTemplate, ChangeError> {
        state
            .policy
            .enforce("clustertemplate:update", identity, &target(current))?;
        let mut document = match serde_json::to_value(view(current, &context.base_url)) {
            Ok(Value::Object(document)) => document,
            _ => return Err(ApiError::internal("a template view is a JSON object").into()),
        };
        apply_patch(&mut document, &operations, &PATCH_RULES)?;
        let attributes = parse_patched("cluster_template", &document, PATCHED_SCHEMA)?;
        let coe = parse_coe(&attributes)?;
        let mut updated = from_attributes(&attributes, coe, ServerSet::of(current));
        check_rules(&state.settings.template_rules, &mut updated)?;
        if (updated.public != current.public || updated.hidden != current.hidden)
            && !state.policy.allows(
                "clustertemplate:publish",
                identity,
                &Target::caller(identity),
            )
        {
            return Err(publish_denied().into());
        }
        Ok(updated)
    };
    // References are checked as the caller sees the cloud before the write, which cannot
    // wait on the cloud; the write uses that check while the template it patches is the one
    // checked, and checks again (in the configuration) when a concurrent change came first.
    let token = context.auth_token.as_ref().map(|token| token.0.as_str());
    let preview = patched(&resolved).map_err(|error| error.answer(|| not_found(ident)))?;
    let checked = match state
        .drivers
        .resolve_as(
            token,
            preview.driver.as_deref(),
            &preview.image_id,
            preview.server_type,
            preview.coe,
        )
        .await
    {
        Ok(found) => found
            .driver
            .validate_references_as(token, &references(&preview))
            .await
            .map(|()| found)
            .map_err(ApiError::from),
        Err(error) => Err(ApiError::from(error)),
    };
    let preview_driver_looks_up_in_cloud = checked
        .as_ref()
        .is_ok_and(|found| found.driver.looks_up_in_cloud());
    let same_references = |updated: &ClusterTemplate| {
        updated.driver == preview.driver
            && updated.image_id == preview.image_id
            && updated.server_type == preview.server_type
            && updated.coe == preview.coe
            && references(updated) == references(&preview)
    };
    let stored = state
        .store
        .modify_cluster_template(resolved.uuid, |current| -> Result<_, ChangeError> {
            let mut updated = patched(current)?;
            let resolved = if same_references(&updated) {
                checked.clone()?
            } else if preview_driver_looks_up_in_cloud {
                // The cloud cannot be asked inside the write: the caller asks again.
                return Err(ApiError::conflict(
                    "The cluster template was changed while this update was checked; retry it.",
                )
                .into());
            } else {
                let resolved = state
                    .drivers
                    .resolve(
                        updated.driver.as_deref(),
                        &updated.image_id,
                        updated.server_type,
                        updated.coe,
                    )
                    .map_err(ApiError::from)?;
                resolved
                    .driver
                    .validate_references(&references(&updated))
                    .map_err(ApiError::from)?;
                resolved
            };
            if updated.cluster_distro != current.cluster_distro
                && updated.cluster_distro.as_deref() != Some(resolved.os_distro.as_str())
            {
                return Err(ApiError::bad_request(format!(
                    "cluster_distro is the os_distro of the template's image: image {} has os_distro {}.",
                    updated.image_id, resolved.os_distro
                ))
                .into());
            }
            updated.cluster_distro = Some(resolved.os_distro.clone());
            updated.driver = Some(resolved.driver.name().to_owned());
            if updated.changed_attributes(current).is_empty() {
                return Ok(None);
            }
            updated.updated_at = Some(Timestamp::now());
            let only_if_unused = !current.update_allowed_while_in_use(&updated);
            Ok(Some((updated, only_if_unused)))
        })
        .await
        .map_err(|error| match error {
            ChangeError::Store(StoreError::InUse) => in_use(&resolved),
            ChangeError::Store(StoreError::Busy) => ApiError::conflict(
                "ClusterTemplate was changed concurrently too often; retry the update.",
            ),
            other => other.answer(|| not_found(ident)),
        })?;
    tracing::info!(cluster_template.id = %stored.uuid, "cluster template updated");
    Ok(respond(
        context,
        StatusCode::OK,
        &view(&stored, &context.base_url),
    ))
}

pub(crate) async fn delete(
    request: &ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let scope = scope(state, identity, "clustertemplate:delete_all_projects");
    let template = resolve(state, ident, scope).await?;
    state
        .policy
        .enforce("clustertemplate:delete", identity, &target(&template))?;
    match state.store.delete_cluster_template(template.uuid).await {
        Ok(()) => {
            tracing::info!(cluster_template.id = %template.uuid, "cluster template deleted");
            Ok(respond_empty(context, StatusCode::NO_CONTENT))
        }
        Err(StoreError::InUse) => Err(in_use(&template)),
        Err(StoreError::NotFound) => Err(not_found(ident)),
        Err(error) => Err(error.into()),
    }
}
