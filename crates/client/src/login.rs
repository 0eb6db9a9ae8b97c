//! Where a Keystone login comes from: the `OS_*` variables, or a cloud of `clouds.yaml`
//! (`OS_CLOUD` / `--os-cloud`), as the OpenStack client reads them.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::ClientError;

#[derive(Clone, PartialEq, Eq)]
pub enum Method {
    Password {
        username: Option<String>,
        user_id: Option<String>,
        user_domain: DomainRef,
        password: String,
    },
    ApplicationCredential {
        id: String,
        secret: String,
    },
    Token(String),
}

impl std::fmt::Debug for Method {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password {
                username, user_id, ..
            } => write!(formatter, "Password({username:?}, {user_id:?})"),
            Self::ApplicationCredential { id, .. } => {
                write!(formatter, "ApplicationCredential({id})")
            }
            Self::Token(_) => write!(formatter, "Token"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Name(String),
    Id(String),
}

impl DomainRef {
    fn json(&self) -> Value {
        match self {
            Self::Name(name) => json!({"name": name}),
            Self::Id(id) => json!({"id": id}),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Project {
        name: String,
        domain: DomainRef,
    },
    ProjectId(String),
    /// Application credentials carry their own scope.
    Implied,
}

/// Everything needed to log in and find the container-infra endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneLogin {
    pub auth_url: String,
    pub method: Method,
    pub scope: Scope,
    pub interface: String,
    pub region: Option<String>,
    /// PEM file of CAs to trust for https (`OS_CACERT` / `cacert`).
    pub cacert: Option<PathBuf>,
}

impl KeystoneLogin {
    /// The `POST /v3/auth/tokens` body.
    pub fn request_body(&self) -> Value {
        let identity = match &self.method {
            Method::Password {
                username,
                user_id,
                user_domain,
                password,
            } => {
                let user = match (user_id, username) {
                    (Some(id), _) => json!({"id": id, "password": password}),
                    (None, name) => {
                        json!({"name": name, "domain": user_domain.json(), "password": password})
                    }
                };
                json!({"methods": ["password"], "password": {"user": user}})
            }
            Method::ApplicationCredential { id, secret } => json!({
                "methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret},
            }),
            Method::Token(token) => json!({"methods": ["token"], "token": {"id": token}}),
        };
        let mut auth = json!({"identity": identity});
        match &self.scope {
            Scope::Project { name, domain } => {
                auth["scope"] = json!({"project": {"name": name, "domain": domain.json()}});
            }
            Scope::ProjectId(id) => auth["scope"] = json!({"project": {"id": id}}),
            Scope::Implied => {}
        }
        json!({ "auth": auth })
    }

    /// From `OS_*` variables, as the OpenStack client reads them; `None` without `OS_AUTH_URL`.
    pub fn from_variables(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ClientError> {
        let get = |name: &str| variable(name).filter(|value| !value.is_empty());
        let Some(auth_url) = get("OS_AUTH_URL") else {
            return Ok(None);
        };
        let settings = |key: &str| get(&format!("OS_{}", key.to_ascii_uppercase()));
        Self::from_settings(
            auth_url,
            get("OS_AUTH_TYPE"),
            &settings,
            get("OS_INTERFACE"),
            get("OS_REGION_NAME"),
            get("OS_CACERT").map(PathBuf::from),
            "OS_",
        )
        .map(Some)
    }

    /// The cloud `name` of the first `clouds.yaml` found, merged with its `secure.yaml`.
    pub fn from_clouds_yaml(name: &str, search: &[PathBuf]) -> Result<Self, ClientError> {
        let mut clouds = None;
        let mut secure = None;
        for directory in search {
            if clouds.is_none() {
                clouds = read_yaml(&directory.join("clouds.yaml"))?;
            }
            if secure.is_none() {
                secure = read_yaml(&directory.join("secure.yaml"))?;
            }
        }
        let Some((path, clouds)) = clouds else {
            let places: Vec<String> = search
                .iter()
                .map(|directory| directory.join("clouds.yaml").display().to_string())
                .collect();
            return Err(ClientError::Setup(format!(
                "OS_CLOUD={name}, but there is no clouds.yaml (looked at {})",
                places.join(", ")
            )));
        };
        let mut cloud = clouds["clouds"][name].clone();
        if !cloud.is_object() {
            return Err(ClientError::Setup(format!(
                "{} has no cloud named {name:?}",
                path.display()
            )));
        }
        if let Some((_, secure)) = secure {
            merge(&mut cloud, &secure["clouds"][name]);
        }
        let text = |value: &Value| match value {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        let auth = cloud["auth"].clone();
        let auth_url = text(&auth["auth_url"]).ok_or_else(|| {
            ClientError::Setup(format!(
                "cloud {name:?} in {} has no auth.auth_url",
                path.display()
            ))
        })?;
        Self::from_settings(
            auth_url,
            text(&cloud["auth_type"]),
            &|key: &str| text(&auth[key]),
            text(&cloud["interface"]),
            text(&cloud["region_name"]),
            text(&cloud["cacert"]).map(PathBuf::from),
            "auth.",
        )
    }

    /// `setting(key)` reads `username`, `password`, `project_name`… wherever they live.
    fn from_settings(
        auth_url: String,
        auth_type: Option<String>,
        setting: &dyn Fn(&str) -> Option<String>,
        interface: Option<String>,
        region: Option<String>,
        cacert: Option<PathBuf>,
        prefix: &str,
    ) -> Result<Self, ClientError> {
        let missing = |key: &str| {
            let shown = if prefix == "OS_" {
                format!("OS_{}", key.to_ascii_uppercase())
            } else {
                format!("{prefix}{key}")
            };
            ClientError::Setup(format!("{shown} is not set"))
        };
        let domain = |id_key: &str, name_key: &str| {
            setting(id_key)
                .map(DomainRef::Id)
                .or_else(|| setting(name_key).map(DomainRef::Name))
        };
        let default_domain = domain("default_domain_id", "default_domain_name")
            .unwrap_or_else(|| DomainRef::Id("default".to_owned()));
        let auth_type = auth_type.unwrap_or_else(|| {
            if setting("application_credential_id").is_some() {
                "v3applicationcredential".to_owned()
            } else if setting("token").is_some() && setting("password").is_none() {
                "token".to_owned()
            } else {
                "password".to_owned()
            }
        });
        let method = match auth_type.as_str() {
            "password" | "v3password" => Method::Password {
                username: setting("username"),
                user_id: setting("user_id"),
                user_domain: domain("user_domain_id", "user_domain_name")
                    .unwrap_or_else(|| default_domain.clone()),
                password: setting("password").ok_or_else(|| missing("password"))?,
            },
            "v3applicationcredential" | "applicationcredential" => Method::ApplicationCredential {
                id: setting("application_credential_id")
                    .ok_or_else(|| missing("application_credential_id"))?,
                secret: setting("application_credential_secret")
                    .ok_or_else(|| missing("application_credential_secret"))?,
            },
            "token" | "v3token" => Method::Token(setting("token").ok_or_else(|| missing("token"))?),
            other => {
                return Err(ClientError::Setup(format!(
                "auth type {other:?} is not supported: password, v3applicationcredential or token"
            )))
            }
        };
        if let Method::Password {
            username: None,
            user_id: None,
            ..
        } = &method
        {
            return Err(missing("username"));
        }
        let scope = match &method {
            Method::ApplicationCredential { .. } => Scope::Implied,
            _ => match (setting("project_id"), setting("project_name")) {
                (Some(id), _) => Scope::ProjectId(id),
                (None, Some(name)) => Scope::Project {
                    name,
                    domain: domain("project_domain_id", "project_domain_name")
                        .unwrap_or(default_domain),
                },
                (None, None) => return Err(missing("project_name")),
            },
        };
        Ok(Self {
            auth_url,
            method,
            scope,
            interface: interface
                .map(|interface| interface.trim_end_matches("URL").to_ascii_lowercase())
                .unwrap_or_else(|| "public".to_owned()),
            region,
            cacert,
        })
    }
}

/// Where clouds.yaml is looked for, in openstacksdk's order.
pub fn clouds_yaml_search_path() -> Vec<PathBuf> {
    let mut search = vec![PathBuf::from(".")];
    if let Ok(home) = std::env::var("HOME") {
        search.push(Path::new(&home).join(".config/openstack"));
    }
    search.push(PathBuf::from("/etc/openstack"));
    search
}

fn read_yaml(path: &Path) -> Result<Option<(PathBuf, Value)>, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) => magnum_domain::yaml::parse(&text)
            .map(|value| Some((path.to_owned(), value)))
            .map_err(|error| ClientError::Setup(format!("{}: {error}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ClientError::Setup(format!("{}: {error}", path.display()))),
    }
}

/// `extra`'s keys win, mappings merge key by key (secure.yaml over clouds.yaml).
fn merge(base: &mut Value, extra: &Value) {
    let Value::Object(extra) = extra else {
        return;
    };
    for (key, value) in extra {
        if value.is_object() && base[key].is_object() {
            merge(&mut base[key], value);
        } else {
            base[key] = value.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_make_a_project_scoped_password_login() {
        let variables = [
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "alice"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_USER_DOMAIN_NAME", "Users"),
            ("OS_INTERFACE", "internalURL"),
        ];
        let login = KeystoneLogin::from_variables(|name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
        .unwrap()
        .unwrap();
        assert_eq!(login.interface, "internal");
        assert_eq!(
            login.request_body(),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "alice", "domain": {"name": "Users"}, "password": "pw"}}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }})
        );
        assert!(KeystoneLogin::from_variables(|_| None).unwrap().is_none());
    }

    #[test]
    fn a_cloud_of_clouds_yaml_merged_with_secure_yaml() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        std::fs::write(
            second.path().join("clouds.yaml"),
            "clouds:\n  lab:\n    auth:\n      auth_url: http://k/v3\n      username: bob\n      project_id: p1\n    region_name: R2\n  app:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://k/v3\n      application_credential_id: id1\n      application_credential_secret: s1\n",
        )
        .unwrap();
        std::fs::write(
            first.path().join("secure.yaml"),
            "clouds:\n  lab:\n    auth:\n      password: from-secure\n",
        )
        .unwrap();
        let search = [first.path().to_owned(), second.path().to_owned()];
        let lab = KeystoneLogin::from_clouds_yaml("lab", &search).unwrap();
        assert_eq!(lab.region.as_deref(), Some("R2"));
        assert_eq!(lab.scope, Scope::ProjectId("p1".to_owned()));
        assert!(
            matches!(&lab.method, Method::Password { password, .. } if password == "from-secure")
        );
        let app = KeystoneLogin::from_clouds_yaml("app", &search).unwrap();
        assert_eq!(app.scope, Scope::Implied);
        assert_eq!(
            app.request_body()["auth"]["identity"]["application_credential"],
            json!({"id": "id1", "secret": "s1"})
        );
        let error = KeystoneLogin::from_clouds_yaml("nope", &search).unwrap_err();
        assert!(
            error.to_string().contains("no cloud named \"nope\""),
            "{error}"
        );
        let error = KeystoneLogin::from_clouds_yaml("lab", &[first.path().to_owned()]).unwrap_err();
        assert!(error.to_string().contains("no clouds.yaml"), "{error}");
    }
}
