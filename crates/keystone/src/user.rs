//! A person's own login, for the dashboard: a password exchanged for a project-scoped
//! token, the projects that person may switch to, a rescope, and a logout that revokes the
//! token. Unlike the rest of this crate these calls act with the user's credentials, not the
//! service's.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::{parse_time, unreachable, Keystone, KeystoneError};

/// The longest user name, password, domain or project name a login form may send (Keystone's
/// own columns hold 255 characters; passwords are refused above its `max_password_length`,
/// 4096 by default).
pub const MAX_LOGIN_FIELD: usize = 4096;

/// Most projects listed for the project switcher.
pub const MAX_LISTED_PROJECTS: usize = 200;

/// What a person typed into the login form.
#[derive(Clone)]
pub struct PasswordLogin<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// The user's domain, by name (`Default`).
    pub user_domain: &'a str,
    /// A project by name; empty: the first project the user has a role on.
    pub project: &'a str,
    /// The project's domain, by name.
    pub project_domain: &'a str,
}

impl std::fmt::Debug for PasswordLogin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordLogin")
            .field("username", &self.username)
            .field("user_domain", &self.user_domain)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// A token Keystone issued to a person, with what the dashboard shows of it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    pub roles: Vec<String>,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken")
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A project a person may switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProject {
    pub id: String,
    pub name: String,
}

impl Keystone {
    /// Exchanges a user's password for a token scoped to the named project (or, without a
    /// name, to the first enabled project the user has a role on). `InvalidToken` stands
    /// for wrong credentials and for a project the user may not use, which Keystone does not
    /// tell apart either; `Refused` for a user with no project at all.
    pub async fn password_login(
        &self,
        login: &PasswordLogin<'_>,
    ) -> Result<UserToken, KeystoneError> {
        let fields = [
            login.username,
            login.password,
            login.user_domain,
            login.project,
            login.project_domain,
        ];
        if login.username.is_empty()
            || login.password.is_empty()
            || fields.iter().any(|field| field.len() > MAX_LOGIN_FIELD)
        {
            return Err(KeystoneError::InvalidToken);
        }
        let identity = json!({
            "methods": ["password"],
            "password": {"user": {
                "name": login.username,
                "password": login.password,
                "domain": {"name": login.user_domain},
            }},
        });
        if !login.project.is_empty() {
            let scope = json!({"project": {
                "name": login.project,
                "domain": {"name": login.project_domain},
            }});
            return self.issue(identity, Some(scope), None).await;
        }
        let unscoped = self.issue(identity.clone(), None, None).await?;
        let projects = self.user_projects(&unscoped.token).await;
        let first = match projects {
            Ok(projects) => projects.into_iter().next(),
            Err(error) => {
                self.revoke_user_token(&unscoped.token).await.ok();
                return Err(error);
            }
        };
        // The scoped token comes from the password again, not from the unscoped token: a
        // token made from another shares its audit chain, and Keystone's revocation of the
        // unscoped token (below) would revoke the session's token with it.
        let scoped = match first {
            Some(project) => {
                let scope = json!({"project": {"id": project.id}});
                self.issue(identity, Some(scope), None).await
            }
            None => Err(KeystoneError::Refused(
                "This user has no role on any project.".to_owned(),
            )),
        };
        // The unscoped token served its purpose; left alone it would stay valid for hours.
        self.revoke_user_token(&unscoped.token).await.ok();
        scoped
    }

    /// A new token for the same user scoped to another project (the project switcher).
    pub async fn rescope(&self, token: &str, project_id: &str) -> Result<UserToken, KeystoneError> {
        if project_id.is_empty() || project_id.len() > MAX_LOGIN_FIELD {
            return Err(KeystoneError::InvalidToken);
        }
        let identity = json!({"methods": ["token"], "token": {"id": token}});
        let scope = json!({"project": {"id": project_id}});
        self.issue(identity, Some(scope), Some(token)).await
    }

    /// The enabled projects the token's user has a role on, by name, at most
    /// [`MAX_LISTED_PROJECTS`].
    pub async fn user_projects(&self, token: &str) -> Result<Vec<UserProject>, KeystoneError> {
        let response = self
            .http
            .get(format!("{}/auth/projects", self.auth_url))
            .header("X-Auth-Token", token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        match response.status().as_u16() {
            200 => {}
            401 | 404 => return Err(KeystoneError::InvalidToken),
            other => {
                return Err(KeystoneError::Unavailable(format!(
                    "listing a user's projects answered HTTP {other}"
                )))
            }
        }
        let body: Value = response
            .json()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        let mut projects: Vec<UserProject> = body["projects"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|project| project["enabled"].as_bool() != Some(false))
            .filter_map(|project| {
                Some(UserProject {
                    id: project["id"].as_str()?.to_owned(),
                    name: project["name"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        projects.truncate(MAX_LISTED_PROJECTS);
        Ok(projects)
    }

    /// Revokes a user's token with itself (Keystone lets a user revoke their own token) and
    /// forgets its validation, so that it stops working here at once rather than when the
    /// cached answer would have expired.
    pub async fn revoke_user_token(&self, token: &str) -> Result<(), KeystoneError> {
        self.forget_token(token);
        let response = self
            .http
            .delete(format!("{}/auth/tokens", self.auth_url))
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        // 404: already revoked or expired, which is what was wanted.
        match response.status().as_u16() {
            200..=299 | 401 | 404 => Ok(()),
            other => Err(KeystoneError::Unavailable(format!(
                "revoking a token answered HTTP {other}"
            ))),
        }
    }

    async fn issue(
        &self,
        identity: Value,
        scope: Option<Value>,
        acting_token: Option<&str>,
    ) -> Result<UserToken, KeystoneError> {
        let mut auth = json!({"identity": identity});
        if let Some(scope) = scope {
            auth["scope"] = scope;
        }
        let mut request = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.auth_url))
            .json(&json!({"auth": auth}));
        if let Some(token) = acting_token {
            request = request.header("X-Auth-Token", token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        match response.status().as_u16() {
            200 | 201 => {}
            // Wrong password, unknown user or project, no role on it, disabled or locked:
            // Keystone answers 401 for all of them and so does the dashboard.
            400 | 401 | 403 | 404 => return Err(KeystoneError::InvalidToken),
            other => {
                return Err(KeystoneError::Unavailable(format!(
                    "a user's login answered HTTP {other}"
                )))
            }
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                KeystoneError::Unavailable("Keystone's login answer has no X-Subject-Token".into())
            })?;
        let body: Value = response
            .json()
            .await
            .map_err(|error| unreachable(&self.auth_url, &error))?;
        parse_user_token(token, &body["token"])
    }

    /// Drops a token's remembered validation.
    pub fn forget_token(&self, token: &str) {
        let key = crate::token_digest(token);
        self.cache.lock().expect("token cache lock").remove(&key);
    }
}

fn parse_user_token(token: String, body: &Value) -> Result<UserToken, KeystoneError> {
    let malformed =
        |what: &str| KeystoneError::Unavailable(format!("Keystone's login answer has no {what}"));
    let expires_at = body["expires_at"]
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| malformed("expires_at"))?;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let user_id = text(&body["user"]["id"]);
    if user_id.is_empty() {
        return Err(malformed("user id"));
    }
    Ok(UserToken {
        token,
        expires_at,
        user_id,
        user_name: text(&body["user"]["name"]),
        project_id: text(&body["project"]["id"]),
        project_name: text(&body["project"]["name"]),
        roles: body["roles"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|role| role["name"].as_str())
            .map(str::to_ascii_lowercase)
            .collect(),
    })
}
