//! Policy in oslo.policy's language: named rules whose check strings combine `role:`,
//! `project_id:%(project_id)s`, `user_id:%(user_id)s`, `rule:`, `and`, `or`, `not`,
//! parentheses, `@` (always) and `!` (never). The defaults are upstream Magnum 23's.

use std::collections::HashMap;
use std::fmt;

use crate::Identity;

/// The object a rule is checked against: its owner. When an action has no object, the target
/// is the caller's own project and user, so only roles matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub project_id: String,
    pub user_id: String,
}

impl Target {
    pub fn caller(identity: &Identity) -> Self {
        Self {
            project_id: identity.project_id.clone(),
            user_id: identity.user_id.clone(),
        }
    }

    pub fn owned_by(project_id: &str, user_id: &str) -> Self {
        Self {
            project_id: project_id.to_owned(),
            user_id: user_id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Always,
    Never,
    Rule(String),
    Role(String),
    /// `<credential attribute>:<value>`; `%(attr)s` in the value is taken from the target.
    Generic {
        attribute: String,
        value: String,
    },
    Not(Box<Check>),
    And(Vec<Check>),
    Or(Vec<Check>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid check string {check_string:?}: {reason}")]
pub struct PolicyParseError {
    pub check_string: String,
    pub reason: String,
}

/// A set of named rules.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, Check>,
}

/// A denied action; renders upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyDenied {
    pub rule: String,
}

impl fmt::Display for PolicyDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Policy doesn't allow {} to be performed.", self.rule)
    }
}

/// Upstream Magnum 23's default rules (`magnum/common/policies`).
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_api", "rule:context_is_admin"),
    (
        "project_member",
        "role:member and project_id:%(project_id)s",
    ),
    (
        "project_reader",
        "role:reader and project_id:%(project_id)s",
    ),
    ("is_user", "user_id:%(user_id)s"),
    (
        "admin_or_project_reader",
        "rule:context_is_admin or rule:project_reader",
    ),
    (
        "admin_or_project_member",
        "rule:context_is_admin or rule:project_member",
    ),
    (
        "admin_or_project_member_user",
        "rule:context_is_admin or (rule:project_member and rule:is_user)",
    ),
    (
        "admin_or_project_reader_user",
        "rule:context_is_admin or (rule:project_reader and rule:is_user)",
    ),
    (
        "admin_or_project_member_deny_cluster_user",
        "rule:admin_or_project_member",
    ),
    (
        "admin_or_project_reader_deny_cluster_user",
        "rule:admin_or_project_reader",
    ),
    ("project_member_deny_cluster_user", "rule:project_member"),
    ("cluster:create", "rule:admin_or_project_member"),
    ("cluster:delete", "rule:admin_or_project_member"),
    ("cluster:delete_all_projects", "rule:context_is_admin"),
    // magnum-rs: removing a cluster's records without its driver.
    ("cluster:force_delete", "rule:context_is_admin"),
    ("cluster:detail", "rule:admin_or_project_reader"),
    ("cluster:detail_all_projects", "rule:context_is_admin"),
    ("cluster:get", "rule:admin_or_project_reader"),
    ("cluster:get_one_all_projects", "rule:context_is_admin"),
    ("cluster:get_all", "rule:admin_or_project_reader"),
    ("cluster:get_all_all_projects", "rule:context_is_admin"),
    ("cluster:update", "rule:admin_or_project_member"),
    (
        "cluster:update_health_status",
        "rule:admin_or_project_member_user",
    ),
    ("cluster:update_all_projects", "rule:context_is_admin"),
    ("cluster:resize", "rule:admin_or_project_member"),
    ("cluster:upgrade", "rule:admin_or_project_member"),
    ("cluster:upgrade_all_projects", "rule:context_is_admin"),
    ("clustertemplate:create", "rule:admin_or_project_member"),
    ("clustertemplate:delete", "rule:admin_or_project_member"),
    (
        "clustertemplate:delete_all_projects",
        "rule:context_is_admin",
    ),
    (
        "clustertemplate:detail_all_projects",
        "rule:context_is_admin",
    ),
    ("clustertemplate:detail", "rule:admin_or_project_reader"),
    ("clustertemplate:get", "rule:admin_or_project_reader"),
    (
        "clustertemplate:get_one_all_projects",
        "rule:context_is_admin",
    ),
    ("clustertemplate:get_all", "rule:admin_or_project_reader"),
    (
        "clustertemplate:get_all_all_projects",
        "rule:context_is_admin",
    ),
    ("clustertemplate:update", "rule:admin_or_project_member"),
    (
        "clustertemplate:update_all_projects",
        "rule:context_is_admin",
    ),
    ("clustertemplate:publish", "rule:context_is_admin"),
    ("nodegroup:get", "rule:admin_or_project_reader"),
    ("nodegroup:get_all", "rule:admin_or_project_reader"),
    ("nodegroup:get_all_all_projects", "rule:context_is_admin"),
    ("nodegroup:get_one_all_projects", "rule:context_is_admin"),
    ("nodegroup:create", "rule:admin_or_project_member"),
    ("nodegroup:delete", "rule:admin_or_project_member"),
    ("nodegroup:update", "rule:admin_or_project_member"),
    ("certificate:create", "rule:admin_or_project_member_user"),
    ("certificate:get", "rule:admin_or_project_reader_user"),
    ("certificate:rotate_ca", "rule:admin_or_project_member"),
    ("credential:rotate", "rule:project_member_deny_cluster_user"),
    ("federation:create", "rule:admin_or_project_member"),
    ("federation:delete", "rule:admin_or_project_member"),
    ("federation:detail", "rule:admin_or_project_reader"),
    ("federation:get", "rule:admin_or_project_reader"),
    ("federation:get_all", "rule:admin_or_project_reader"),
    ("federation:update", "rule:admin_or_project_member"),
    ("magnum-service:get_all", "rule:context_is_admin"),
    ("quota:create", "rule:context_is_admin"),
    ("quota:delete", "rule:context_is_admin"),
    ("quota:get", "rule:admin_or_project_reader"),
    ("quota:get_all", "rule:context_is_admin"),
    ("quota:update", "rule:context_is_admin"),
    ("stats:get_all", "rule:admin_or_project_reader"),
];

impl Default for Policy {
    fn default() -> Self {
        Self::with_overrides(&[]).expect("the default rules parse")
    }
}

/// Reads an oslo.policy override file: YAML (`"rule": "check string"` per line, `#` comments)
/// or JSON (an object of strings). Returns the (rule, check string) pairs, in file order.
pub fn parse_override_file(text: &str) -> Result<Vec<(String, String)>, PolicyParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
            .map_err(|error| PolicyParseError {
                check_string: String::new(),
                reason: format!("not a JSON object of strings: {error}"),
            })?;
        return object
            .into_iter()
            .map(|(rule, value)| match value {
                serde_json::Value::String(check) => Ok((rule, check)),
                _ => Err(PolicyParseError {
                    reason: format!("the check string of {rule} must be a string"),
                    check_string: String::new(),
                }),
            })
            .collect();
    }
    let document = crate::yaml::parse(text).map_err(|error| PolicyParseError {
        check_string: String::new(),
        reason: format!("not a YAML mapping of rules: {error}"),
    })?;
    let serde_json::Value::Object(rules) = document else {
        return Err(PolicyParseError {
            check_string: String::new(),
            reason: "not a YAML mapping of rules".to_owned(),
        });
    };
    rules
        .into_iter()
        .map(|(rule, value)| match value {
            serde_json::Value::String(check) => Ok((rule, check)),
            // `rule:` or `rule: ""`: oslo's empty check string, which always passes.
            serde_json::Value::Null => Ok((rule, String::new())),
            _ => Err(PolicyParseError {
                reason: format!("the check string of {rule} must be a string"),
                check_string: String::new(),
            }),
        })
        .collect()
}

impl Policy {
    /// The defaults with some rules replaced (an operator's override file).
    pub fn with_overrides(overrides: &[(String, String)]) -> Result<Self, PolicyParseError> {
        let mut rules = HashMap::new();
        for (name, check_string) in DEFAULT_RULES {
            rules.insert((*name).to_owned(), parse(check_string)?);
        }
        for (name, check_string) in overrides {
            rules.insert(name.clone(), parse(check_string)?);
        }
        Ok(Self { rules })
    }

    /// Whether `identity` may perform `rule` on `target`. An unknown rule denies.
    pub fn allows(&self, rule: &str, identity: &Identity, target: &Target) -> bool {
        match self.rules.get(rule) {
            Some(check) => self.evaluate(check, identity, target, 0),
            None => false,
        }
    }

    pub fn enforce(
        &self,
        rule: &str,
        identity: &Identity,
        target: &Target,
    ) -> Result<(), PolicyDenied> {
        if self.allows(rule, identity, target) {
            Ok(())
        } else {
            Err(PolicyDenied {
                rule: rule.to_owned(),
            })
        }
    }

    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.allows("context_is_admin", identity, &Target::caller(identity))
    }

    fn evaluate(&self, check: &Check, identity: &Identity, target: &Target, depth: usize) -> bool {
        // Rules referring to each other in a cycle deny rather than recurse forever.
        if depth > 32 {
            return false;
        }
        match check {
            Check::Always => true,
            Check::Never => false,
            Check::Rule(name) => self
                .rules
                .get(name)
                .is_some_and(|check| self.evaluate(check, identity, target, depth + 1)),
            Check::Role(role) => identity.has_role(role),
            Check::Generic { attribute, value } => {
                let expected = substitute(value, target);
                let Some(expected) = expected else {
                    return false;
                };
                match attribute.as_str() {
                    "project_id" | "tenant" | "tenant_id" => identity.project_id == expected,
                    "user_id" | "user" => identity.user_id == expected,
                    "domain_id" => identity.domain_id.as_deref() == Some(expected.as_str()),
                    "role" | "roles" => identity.has_role(&expected),
                    _ => false,
                }
            }
            Check::Not(inner) => !self.evaluate(inner, identity, target, depth + 1),
            Check::And(parts) => parts
                .iter()
                .all(|part| self.evaluate(part, identity, target, depth + 1)),
            Check::Or(parts) => parts
                .iter()
                .any(|part| self.evaluate(part, identity, target, depth + 1)),
        }
    }
}

fn substitute(value: &str, target: &Target) -> Option<String> {
    if let Some(name) = value
        .strip_prefix("%(")
        .and_then(|rest| rest.strip_suffix(")s"))
    {
        return match name {
            "project_id" => Some(target.project_id.clone()),
            "user_id" => Some(target.user_id.clone()),
            _ => None,
        };
    }
    Some(value.trim_matches(|c| c == '\'' || c == '"').to_owned())
}

/// Parses an oslo.policy check string. The empty string means "always".
fn parse(check_string: &str) -> Result<Check, PolicyParseError> {
    let tokens = tokenize(check_string);
    if tokens.is_empty() {
        return Ok(Check::Always);
    }
    let mut parser = CheckParser {
        tokens,
        position: 0,
        source: check_string,
    };
    let check = parser.or_expression()?;
    if parser.position != parser.tokens.len() {
        return Err(parser.error("unexpected trailing tokens"));
    }
    Ok(check)
}

fn tokenize(check_string: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for word in check_string.split_whitespace() {
        let mut rest = word;
        while let Some(stripped) = rest.strip_prefix('(') {
            tokens.push("(".to_owned());
            rest = stripped;
        }
        let mut closing = 0;
        while let Some(stripped) = rest.strip_suffix(')') {
            closing += 1;
            rest = stripped;
        }
        if !rest.is_empty() {
            tokens.push(rest.to_owned());
        }
        tokens.extend(std::iter::repeat_n(")".to_owned(), closing));
    }
    tokens
}

struct CheckParser<'a> {
    tokens: Vec<String>,
    position: usize,
    source: &'a str,
}

impl CheckParser<'_> {
    fn error(&self, reason: &str) -> PolicyParseError {
        PolicyParseError {
            check_string: self.source.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.position).map(String::as_str)
    }

    fn or_expression(&mut self) -> Result<Check, PolicyParseError> {
        let mut parts = vec![self.and_expression()?];
        while self.peek().is_some_and(|t| t.eq_ignore_ascii_case("or")) {
            self.position += 1;
            parts.push(self.and_expression()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Check::Or(parts)
        })
    }

    fn and_expression(&mut self) -> Result<Check, PolicyParseError> {
        let mut parts = vec![self.unary()?];
        while self.peek().is_some_and(|t| t.eq_ignore_ascii_case("and")) {
            self.position += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Check::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Check, PolicyParseError> {
        match self.peek() {
            Some(token) if token.eq_ignore_ascii_case("not") => {
                self.position += 1;
                Ok(Check::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.position += 1;
                let inner = self.or_expression()?;
                if self.peek() != Some(")") {
                    return Err(self.error("missing closing parenthesis"));
                }
                self.position += 1;
                Ok(inner)
            }
            Some(_) => {
                let token = self.tokens[self.position].clone();
                self.position += 1;
                self.atom(&token)
            }
            None => Err(self.error("unexpected end")),
        }
    }

    fn atom(&self, token: &str) -> Result<Check, PolicyParseError> {
        match token {
            "@" => return Ok(Check::Always),
            "!" => return Ok(Check::Never),
            ")" => return Err(self.error("unexpected closing parenthesis")),
            _ => {}
        }
        let Some((kind, value)) = token.split_once(':') else {
            return Err(self.error(&format!("{token:?} is not a check")));
        };
        Ok(match kind {
            "rule" => Check::Rule(value.to_owned()),
            "role" => Check::Role(value.to_ascii_lowercase()),
            attribute => Check::Generic {
                attribute: attribute.to_owned(),
                value: value.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(project: &str, user: &str) -> Identity {
        Identity::new(project, user, &["member", "reader"])
    }

    #[test]
    fn defaults_follow_upstream_consequences() {
        let policy = Policy::default();
        let admin = Identity::new("p-admin", "u-admin", &["admin", "member", "reader"]);
        let reader = Identity::new("p1", "u-reader", &["reader"]);
        let alice = member("p1", "u-alice");
        let bob = member("p1", "u-bob");
        let eve = member("p2", "u-eve");
        let owned_by_alice = Target::owned_by("p1", "u-alice");

        assert!(policy.allows("clustertemplate:create", &alice, &Target::caller(&alice)));
        assert!(!policy.allows("clustertemplate:create", &reader, &Target::caller(&reader)));
        assert!(policy.allows("clustertemplate:get", &reader, &owned_by_alice));
        assert!(!policy.allows("clustertemplate:update", &eve, &owned_by_alice));
        assert!(policy.allows("clustertemplate:update", &admin, &owned_by_alice));
        assert!(!policy.allows("clustertemplate:publish", &alice, &Target::caller(&alice)));
        assert!(policy.allows("certificate:get", &alice, &owned_by_alice));
        assert!(!policy.allows("certificate:get", &bob, &owned_by_alice));
        assert!(!policy.allows("magnum-service:get_all", &alice, &Target::caller(&alice)));
        assert!(policy.allows("magnum-service:get_all", &admin, &Target::caller(&admin)));
        let admin_only = Identity::new("p1", "u", &["admin"]);
        assert!(!policy.allows(
            "credential:rotate",
            &admin_only,
            &Target::caller(&admin_only)
        ));
        let nobody = Identity::new("p1", "u", &[]);
        assert!(!policy.allows("clustertemplate:get_all", &nobody, &Target::caller(&nobody)));
        assert!(!policy.allows("no:such:rule", &admin, &Target::caller(&admin)));
    }

    #[test]
    fn overrides_use_the_oslo_language() {
        let policy = Policy::with_overrides(&[
            (
                "clustertemplate:create".to_owned(),
                "(role:creator or rule:context_is_admin) and not role:banned".to_owned(),
            ),
            ("magnum-service:get_all".to_owned(), "@".to_owned()),
            ("cluster:delete".to_owned(), "!".to_owned()),
        ])
        .unwrap();
        let creator = Identity::new("p", "u", &["creator"]);
        let banned = Identity::new("p", "u", &["creator", "banned"]);
        let caller = Target::caller(&creator);
        assert!(policy.allows("clustertemplate:create", &creator, &caller));
        assert!(!policy.allows("clustertemplate:create", &banned, &caller));
        assert!(policy.allows("magnum-service:get_all", &creator, &caller));
        let admin = Identity::new("p", "u", &["admin"]);
        assert!(!policy.allows("cluster:delete", &admin, &caller));
    }

    #[test]
    fn override_files_in_yaml_and_json() {
        let yaml = "# operators' rules\n\"cluster:create\": \"role:admin\"\n'cluster:delete': '!'\ncontext_is_admin: role:admin or role:cloud-admin\n";
        let pairs = parse_override_file(yaml).unwrap();
        assert_eq!(
            pairs,
            [
                ("cluster:create".to_owned(), "role:admin".to_owned()),
                ("cluster:delete".to_owned(), "!".to_owned()),
                (
                    "context_is_admin".to_owned(),
                    "role:admin or role:cloud-admin".to_owned()
                ),
            ]
        );
        let json = r#"{"cluster:create": "role:admin"}"#;
        assert_eq!(parse_override_file(json).unwrap().len(), 1);
        assert!(parse_override_file("just words\n").is_err());
        // A trailing comment is not part of the check string; escapes are YAML's.
        let commented = parse_override_file(
            "\"cluster:get\": role:reader  # read-only staff\n\"x\": \"a\\\\nb\"\n",
        )
        .unwrap();
        assert_eq!(
            commented,
            vec![
                ("cluster:get".to_owned(), "role:reader".to_owned()),
                ("x".to_owned(), "a\\nb".to_owned())
            ]
        );
        assert!(parse_override_file("\"cluster:get\": [a, b]\n").is_err());
        assert!(Policy::with_overrides(&parse_override_file(yaml).unwrap()).is_ok());
    }

    #[test]
    fn malformed_check_strings_are_refused() {
        for bad in ["role:admin and", "(role:admin", "role:admin)", "justaword"] {
            assert!(
                Policy::with_overrides(&[("x".to_owned(), bad.to_owned())]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn denial_message_matches_upstream() {
        let denied = PolicyDenied {
            rule: "clustertemplate:create".to_owned(),
        };
        assert_eq!(
            denied.to_string(),
            "Policy doesn't allow clustertemplate:create to be performed."
        );
    }
}
