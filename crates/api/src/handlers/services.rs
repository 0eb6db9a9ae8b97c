//! `GET /v1/mservices`: the conductors and whether they are alive.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::policy::Target;
use magnum_domain::time::Timestamp;
use magnum_types::{MagnumServiceCollection, MagnumServiceView};

use super::respond;
use crate::routing::{ResourceRequest, Routed};

pub(crate) async fn list(request: ResourceRequest<'_>) -> Result<Response<Body>, Routed> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    state
        .policy
        .enforce(
            "magnum-service:get_all",
            identity,
            &Target::caller(identity),
        )
        .map_err(crate::error::ApiError::from)?;
    let services = state
        .store
        .list_services()
        .await
        .map_err(crate::error::ApiError::from)?;
    let now = Timestamp::now();
    let views = services
        .into_iter()
        .map(|service| MagnumServiceView {
            state: if service.is_up(now, state.settings.service_down_time_seconds) {
                "up"
            } else {
                "down"
            },
            host: service.host,
            binary: service.binary,
            id: service.id,
            report_count: service.report_count,
            disabled: service.disabled,
            disabled_reason: service.disabled_reason,
            created_at: Some(service.created_at.to_wire()),
            updated_at: service.updated_at.map(Timestamp::to_wire),
        })
        .collect();
    Ok(respond(
        context,
        StatusCode::OK,
        &MagnumServiceCollection { mservices: views },
    ))
}
