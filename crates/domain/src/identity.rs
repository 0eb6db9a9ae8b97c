/// Who is calling: the project-scoped identity that policy is evaluated against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub project_id: String,
    pub user_id: String,
    pub domain_id: Option<String>,
    /// Role names, lower-cased, with implied roles already expanded.
    pub roles: Vec<String>,
}

impl Identity {
    pub fn new(project_id: impl Into<String>, user_id: impl Into<String>, roles: &[&str]) -> Self {
        Self {
            project_id: project_id.into(),
            user_id: user_id.into(),
            domain_id: None,
            roles: roles.iter().map(|role| role.to_ascii_lowercase()).collect(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles
            .iter()
            .any(|held| held.eq_ignore_ascii_case(role))
    }
}
