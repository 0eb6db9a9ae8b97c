//! The one mapping from failures to Magnum's error envelope.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use magnum_domain::aggregate::{ChangeRefused, RefusalKind};
use magnum_domain::cluster_template::TemplateRuleError;
use magnum_domain::policy::PolicyDenied;
use magnum_driver::{ReferenceError, ResolutionError};
use magnum_store::StoreError;
use magnum_types::{encode, ErrorEnvelope, HelpLink, MicroversionError, MicroversionErrorEnvelope};

use crate::context::{add_version_headers, json_response};
use crate::microversion::{unsupported_description, Version, MAX_VERSION, MIN_VERSION};

/// An error a controller raises: code `client` (4xx) or `server` (5xx), with version headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// `Invalid input for field/attribute <field>. Value: '<value>'. <reason>`
    pub fn invalid_input(field: &str, value: &str, reason: &str) -> Self {
        Self::bad_request(format!(
            "Invalid input for field/attribute {field}. Value: '{value}'. {reason}"
        ))
    }

    /// A failure whose cause must stay in the log: the client sees an opaque 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An internal error occurred. The error has been logged.",
        )
    }

    pub fn into_response(self, request_id: &str, version: Version) -> Response<Body> {
        let code = if self.status.is_server_error() {
            "server"
        } else {
            "client"
        };
        // Upstream's title is the message cut at its first period.
        let title = self.detail.split('.').next().unwrap_or_default().to_owned();
        let body = encode(&ErrorEnvelope::new(
            code,
            self.status.as_u16(),
            title,
            self.detail,
        ));
        let mut response = json_response(self.status, body, request_id);
        add_version_headers(response.headers_mut(), version);
        response
    }
}

impl From<PolicyDenied> for ApiError {
    fn from(denied: PolicyDenied) -> Self {
        Self::forbidden(denied.to_string())
    }
}

impl From<TemplateRuleError> for ApiError {
    fn from(error: TemplateRuleError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<ReferenceError> for ApiError {
    fn from(error: ReferenceError) -> Self {
        let status = match error {
            ReferenceError::ImageAmbiguous(_)
            | ReferenceError::ExternalNetworkAmbiguous(_)
            | ReferenceError::FixedNetworkAmbiguous(_)
            | ReferenceError::FixedSubnetAmbiguous(_) => StatusCode::CONFLICT,
            ReferenceError::KeypairNotFound(_) => StatusCode::NOT_FOUND,
            ReferenceError::CloudUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.to_string())
    }
}

impl From<ResolutionError> for ApiError {
    fn from(error: ResolutionError) -> Self {
        match error {
            ResolutionError::Reference(reference) => reference.into(),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy => {
                Self::conflict("The cluster was changed concurrently too often; retry.")
            }
            other => Self::internal(other),
        }
    }
}

impl From<ChangeRefused> for ApiError {
    fn from(refused: ChangeRefused) -> Self {
        let status = match refused.kind() {
            RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Conflict => StatusCode::CONFLICT,
        };
        Self::new(status, refused.to_string())
    }
}

/// Why a change through `Store::modify_cluster` did not happen: the handler refused it, or
/// the store could not write it. Keeps `NotFound` apart, so that the handler can say which
/// cluster (as the client named it) is gone.
#[derive(Debug)]
pub enum ChangeError {
    Refused(ApiError),
    Store(StoreError),
}

impl ChangeError {
    /// The answer to the client; `gone` when the cluster no longer exists.
    pub fn answer(self, gone: impl FnOnce() -> ApiError) -> ApiError {
        match self {
            ChangeError::Refused(error) => error,
            ChangeError::Store(StoreError::NotFound) => gone(),
            ChangeError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ChangeError {
    fn from(error: StoreError) -> Self {
        ChangeError::Store(error)
    }
}

impl From<ApiError> for ChangeError {
    fn from(error: ApiError) -> Self {
        ChangeError::Refused(error)
    }
}

impl From<ChangeRefused> for ChangeError {
    fn from(refused: ChangeRefused) -> Self {
        ChangeError::Refused(refused.into())
    }
}

impl From<PolicyDenied> for ChangeError {
    fn from(denied: PolicyDenied) -> Self {
        ChangeError::Refused(denied.into())
    }
}

/// Errors raised by routing itself (unknown path, method, unacceptable request): code `""`,
/// no microversion headers, and title/detail filled only for clients that asked for JSON.
pub fn routing_error(
    status: StatusCode,
    message: &str,
    accepts_json: bool,
    request_id: &str,
) -> Response<Body> {
    let (title, detail) = if accepts_json {
        (
            status.canonical_reason().unwrap_or_default().to_owned(),
            message.to_owned(),
        )
    } else {
        (String::new(), String::new())
    };
    let body = encode(&ErrorEnvelope::new("", status.as_u16(), title, detail));
    let mut response = json_response(status, body, request_id);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(
            "allow",
            HeaderValue::from_static("DELETE, GET, PATCH, POST"),
        );
    }
    response
}

/// The special 406 for a well-formed microversion outside the supported range.
pub fn unsupported_version(
    requested: Version,
    accepts_json: bool,
    request_id: &str,
) -> Response<Body> {
    let body = encode(&MicroversionErrorEnvelope {
        errors: [MicroversionError {
            max_version: MAX_VERSION.to_string(),
            min_version: MIN_VERSION.to_string(),
            code: "magnum.microversion-unsupported",
            links: vec![HelpLink {
                rel: "help",
                href: "http://docs.openstack.org/api-guide/compute/microversions.html",
            }],
            title: "Requested microversion is unsupported",
            description: accepts_json.then(|| unsupported_description(requested)),
        }],
    });
    let mut response = json_response(StatusCode::NOT_ACCEPTABLE, body, request_id);
    add_version_headers(response.headers_mut(), requested);
    response
}
