//! The part of YAML that `clouds.yaml` and policy override files use: nested block mappings,
//! plain and quoted scalars (with their escapes), comments, and sequences (block `- item` or
//! flow `[a, b]`) of scalars. Enough to read what openstacksdk's and oslo.policy's
//! documentation show, without a YAML library in the static `coe` binary. The one YAML reader
//! of magnum-rs.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "line {}: {}", self.line, self.reason)
    }
}

/// Removes a comment: `#` at the start or after a space, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (index, character) in line.char_indices() {
        match quote {
            // `\"` inside a double-quoted scalar does not close it.
            Some('"') if character == '"' && previous == '\\' => {}
            Some(open) if character == open => quote = None,
            Some(_) => {}
            None if character == '"' || character == '\'' => quote = Some(character),
            None if character == '#' && previous.is_whitespace() => return &line[..index],
            None => {}
        }
        previous = character;
    }
    line
}

/// The escapes of a double-quoted scalar, read left to right (`\\n` is a backslash and an
/// `n`, not a newline); an unknown escape stays as written.
fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn scalar(text: &str) -> Value {
    let text = text.trim();
    if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        return Value::String(unescape(&text[1..text.len() - 1]));
    }
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        return Value::String(text[1..text.len() - 1].replace("''", "'"));
    }
    if text.starts_with('[') && text.ends_with(']') {
        let inner = text[1..text.len() - 1].trim();
        if inner.is_empty() {
            return Value::Array(Vec::new());
        }
        return Value::Array(inner.split(',').map(scalar).collect());
    }
    match text {
        "true" | "True" | "yes" => Value::Bool(true),
        "false" | "False" | "no" => Value::Bool(false),
        "null" | "~" | "" => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}

/// `key: value` or `key:`, with the key possibly quoted.
fn split_key(content: &str) -> Option<(String, &str)> {
    let (key, rest) =
        if let Some(quote) = content.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let end = content[1..].find(quote)? + 1;
            (content[1..end].to_owned(), &content[end + 1..])
        } else {
            let colon = content
                .match_indices(':')
                .find(|(index, _)| {
                    content[index + 1..].is_empty() || content[index + 1..].starts_with(' ')
                })?
                .0;
            (content[..colon].trim().to_owned(), &content[colon..])
        };
    let value = rest.trim_start().strip_prefix(':')?;
    Some((key, value.trim()))
}

/// Parses a document whose top level is a mapping.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    // Each open mapping: its indentation and the path of keys leading to it.
    let mut root = Map::new();
    let mut open: Vec<(usize, Vec<String>)> = vec![(0, Vec::new())];
    let mut last_key_path: Option<(usize, Vec<String>)> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let without_comment = strip_comment(raw).trim_end();
        let content = without_comment.trim_start();
        if content.is_empty() || content == "---" || content == "..." {
            continue;
        }
        if raw.contains('\t') && raw.trim_start_matches(' ').starts_with('\t') {
            return Err(YamlError {
                line,
                reason: "tabs cannot indent YAML".to_owned(),
            });
        }
        let indent = without_comment.len() - content.len();
        if let Some(item) = content
            .strip_prefix("- ")
            .or((content == "-").then_some(""))
        {
            // A sequence item of the key just opened.
            let Some((_, path)) = &last_key_path else {
                return Err(YamlError {
                    line,
                    reason: "a sequence item outside a mapping key".to_owned(),
                });
            };
            let target = entry(&mut root, path);
            if !target.is_array() {
                *target = Value::Array(Vec::new());
            }
            target
                .as_array_mut()
                .expect("just made an array")
                .push(scalar(item));
            continue;
        }
        while open.len() > 1 && indent < open.last().expect("root stays").0 {
            open.pop();
        }
        if let Some((key_indent, path)) = &last_key_path {
            if indent > *key_indent && entry(&mut root, path).is_null() {
                open.push((indent, path.clone()));
            }
        }
        let (current_indent, parent) = open.last().expect("root stays").clone();
        if indent != current_indent {
            return Err(YamlError {
                line,
                reason: "unexpected indentation".to_owned(),
            });
        }
        let Some((key, value)) = split_key(content) else {
            return Err(YamlError {
                line,
                reason: format!("expected `key: value`, found {content:?}"),
            });
        };
        let mut path = parent;
        path.push(key);
        *entry(&mut root, &path) = scalar(value);
        last_key_path = value.is_empty().then_some((indent, path));
    }
    Ok(Value::Object(root))
}

/// The value at `path`, creating mappings on the way.
fn entry<'a>(root: &'a mut Map<String, Value>, path: &[String]) -> &'a mut Value {
    let (last, parents) = path.split_last().expect("a key path is never empty");
    let mut map = root;
    for key in parents {
        let value = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !value.is_object() {
            *value = Value::Object(Map::new());
        }
        map = value.as_object_mut().expect("just made a mapping");
    }
    map.entry(last.clone()).or_insert(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_clouds_yaml_as_openstacksdk_documents_it() {
        let text = r#"
# comment
clouds:
  mycloud:
    auth:
      auth_url: https://keystone.example.com:5000/v3   # trailing comment
      username: 'alice'
      password: "p#ss: word"
      project_name: demo
      user_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    regions:
      - RegionOne
      - RegionTwo
  other:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://k/v3
      application_credential_id: abc
      application_credential_secret: s3cret
    verify: false
"#;
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed["clouds"]["mycloud"]["auth"],
            json!({
                "auth_url": "https://keystone.example.com:5000/v3",
                "username": "alice",
                "password": "p#ss: word",
                "project_name": "demo",
                "user_domain_name": "Default",
            })
        );
        assert_eq!(parsed["clouds"]["mycloud"]["region_name"], "RegionOne");
        assert_eq!(parsed["clouds"]["mycloud"]["identity_api_version"], "3");
        assert_eq!(
            parsed["clouds"]["mycloud"]["regions"],
            json!(["RegionOne", "RegionTwo"])
        );
        assert_eq!(
            parsed["clouds"]["other"]["auth_type"],
            "v3applicationcredential"
        );
        assert_eq!(parsed["clouds"]["other"]["verify"], false);
        assert_eq!(parse("a: [x, 'y']\n").unwrap(), json!({"a": ["x", "y"]}));
    }

    #[test]
    fn escapes_are_read_left_to_right_and_comments_end_values() {
        let parsed = parse(
            "a: \"one\\\\ntwo\"\nb: \"x\\ny\"  # note\nc: role:admin # why\nd: \"q \\\" # not a comment\"\n",
        )
        .unwrap();
        assert_eq!(parsed["a"], "one\\ntwo", "an escaped backslash, then n");
        assert_eq!(parsed["b"], "x\ny");
        assert_eq!(parsed["c"], "role:admin");
        assert_eq!(parsed["d"], "q \" # not a comment");
    }

    #[test]
    fn refuses_what_it_cannot_read_with_the_line() {
        assert_eq!(parse("a:\n  b: 1\n c: 2\n").unwrap_err().line, 3);
        assert_eq!(parse("just text\n").unwrap_err().line, 1);
        assert_eq!(parse("a:\n\tb: 1\n").unwrap_err().line, 2);
    }
}
