//! Who is calling. Handlers only ever see an [`Identity`]; how it was established is the
//! business of the configured [`Authenticator`]: noauth headers, or Keystone tokens.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use magnum_domain::Identity;
use magnum_keystone::{DelegatedCredential, Keystone, KeystoneError};

/// Why a request has no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No or an invalid credential: 401, with the `WWW-Authenticate` value to send.
    Unauthenticated { www_authenticate: String },
    /// The identity service cannot be asked right now: 503.
    Unavailable,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure>;

    /// Whether the identity service knows the project (quotas name projects by id). Without
    /// an identity service every project id is taken as given.
    async fn project_exists(&self, _project_id: &str) -> Result<bool, AuthFailure> {
        Ok(true)
    }

    /// Creates an application credential in the caller's own name (with the caller's token:
    /// Keystone lets nobody else), for a cluster to act with. `Ok(None)` where there is no
    /// identity service to delegate with.
    async fn delegate_credential(
        &self,
        _token: Option<&str>,
        _identity: &Identity,
        _roles: &[String],
        _name: &str,
        _description: &str,
    ) -> Result<Option<DelegatedCredential>, KeystoneError> {
        Ok(None)
    }

    /// Revokes a delegated credential that a request which failed afterwards created: with
    /// the caller's token first, magnum-rs's own login otherwise.
    async fn revoke_credential(
        &self,
        _token: Option<&str>,
        _user_id: &str,
        _id: &str,
    ) -> Result<(), KeystoneError> {
        Ok(())
    }
}

/// `noauth`: the identity comes from `X-Project-Id`, `X-User-Id` and `X-Roles` when they are
/// sent, and from a configured default otherwise. Only for trusted networks.
pub struct NoAuth {
    default: Identity,
}

impl NoAuth {
    pub fn new(default: Identity) -> Self {
        Self { default }
    }
}

/// A header's text; bytes that are not UTF-8 are replaced rather than the header ignored,
/// so that a malformed identity never silently becomes the default one.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
        .filter(|value| !value.is_empty())
}

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        let project_id = header_text(headers, "x-project-id")
            .or_else(|| header_text(headers, "x-tenant-id"))
            .unwrap_or_else(|| self.default.project_id.clone());
        let user_id =
            header_text(headers, "x-user-id").unwrap_or_else(|| self.default.user_id.clone());
        let roles = match headers.get("x-roles") {
            Some(roles) => String::from_utf8_lossy(roles.as_bytes())
                .split(',')
                .map(|role| role.trim().to_ascii_lowercase())
                .filter(|role| !role.is_empty())
                .collect(),
            None => self.default.roles.clone(),
        };
        Ok(Identity {
            project_id,
            user_id,
            domain_id: header_text(headers, "x-domain-id")
                .or_else(|| self.default.domain_id.clone()),
            roles,
        })
    }
}

/// `keystone`: `X-Auth-Token` validated by Keystone, as keystonemiddleware's auth_token does.
pub struct KeystoneAuth {
    keystone: Arc<Keystone>,
    www_authenticate: String,
}

impl KeystoneAuth {
    /// `www_authenticate_uri`: where clients are told to get a token (keystonemiddleware's
    /// option of the same name), e.g. `http://keystone:5000`.
    pub fn new(keystone: Arc<Keystone>, www_authenticate_uri: &str) -> Self {
        Self {
            keystone,
            www_authenticate: format!("Keystone uri=\"{www_authenticate_uri}\""),
        }
    }

    fn unauthenticated(&self) -> AuthFailure {
        AuthFailure::Unauthenticated {
            www_authenticate: self.www_authenticate.clone(),
        }
    }
}

#[async_trait]
impl Authenticator for KeystoneAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        let Some(token) = headers
            .get("x-auth-token")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty())
        else {
            return Err(self.unauthenticated());
        };
        match self.keystone.validate(token).await {
            Ok(validated) => {
                // Everything magnum-rs stores belongs to a project; a token without one
                // (unscoped, domain or system scope) can own and see nothing.
                let Some(project_id) = validated.project_id else {
                    return Err(self.unauthenticated());
                };
                Ok(Identity {
                    project_id,
                    user_id: validated.user_id,
                    domain_id: validated.project_domain_id,
                    roles: validated
                        .roles
                        .iter()
                        .map(|role| role.to_ascii_lowercase())
                        .collect(),
                })
            }
            Err(KeystoneError::InvalidToken) => Err(self.unauthenticated()),
            Err(
                KeystoneError::Unavailable(reason)
                | KeystoneError::Setup(reason)
                | KeystoneError::Refused(reason),
            ) => {
                tracing::warn!(%reason, "cannot validate a token: answering 503");
                Err(AuthFailure::Unavailable)
            }
        }
    }

    async fn project_exists(&self, project_id: &str) -> Result<bool, AuthFailure> {
        self.keystone
            .project_exists(project_id)
            .await
            .map_err(|error| {
                tracing::warn!(%error, project_id, "cannot look up a project: answering 503");
                AuthFailure::Unavailable
            })
    }

    async fn delegate_credential(
        &self,
        token: Option<&str>,
        identity: &Identity,
        roles: &[String],
        name: &str,
        description: &str,
    ) -> Result<Option<DelegatedCredential>, KeystoneError> {
        let token = token.ok_or(KeystoneError::InvalidToken)?;
        self.keystone
            .create_application_credential(token, &identity.user_id, roles, name, description)
            .await
            .map(Some)
    }

    async fn revoke_credential(
        &self,
        token: Option<&str>,
        user_id: &str,
        id: &str,
    ) -> Result<(), KeystoneError> {
        if let Some(token) = token {
            if self
                .keystone
                .delete_own_application_credential(token, user_id, id)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.keystone
            .delete_application_credential(user_id, id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn headers_override_the_default_one_by_one() {
        let auth = NoAuth::new(Identity::new(
            "default",
            "admin",
            &["admin", "member", "reader"],
        ));
        let mut headers = HeaderMap::new();
        assert_eq!(
            auth.authenticate(&headers).await.unwrap(),
            Identity::new("default", "admin", &["admin", "member", "reader"])
        );
        headers.insert("x-project-id", "p-1".parse().unwrap());
        headers.insert("x-roles", "Member, reader".parse().unwrap());
        let identity = auth.authenticate(&headers).await.unwrap();
        assert_eq!(identity.project_id, "p-1");
        assert_eq!(identity.user_id, "admin");
        assert_eq!(identity.roles, vec!["member", "reader"]);
        headers.insert("x-roles", "".parse().unwrap());
        assert!(auth.authenticate(&headers).await.unwrap().roles.is_empty());
    }
}
