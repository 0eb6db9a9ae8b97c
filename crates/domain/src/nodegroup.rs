//! The rules a nodegroup obeys: node counts within bounds, node labels that do not claim
//! Kubernetes' reserved prefixes, well-formed taints. Violations read as upstream's
//! `NodeGroupInvalidInput` (`<attr> for <nodegroup> is invalid (<why>).`).

use serde_json::{Map, Value};

use crate::cluster::Taint;
use crate::labels::{check_label_bounds, MAX_LABELS, MAX_LABEL_KEY_CHARS, MAX_LABEL_VALUE_CHARS};

/// A nodegroup attribute that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute} for {nodegroup} is invalid ({explanation}).")]
pub struct NodeGroupInvalid {
    pub attribute: &'static str,
    pub nodegroup: String,
    pub explanation: String,
}

fn invalid(attribute: &'static str, nodegroup: &str, explanation: String) -> NodeGroupInvalid {
    NodeGroupInvalid {
        attribute,
        nodegroup: nodegroup.to_owned(),
        explanation,
    }
}

/// The largest node count a client may ask for: `node_count` and `master_count` of a cluster
/// (create, update, resize) and `node_count`, `min_node_count`, `max_node_count` of a
/// nodegroup. Upstream has no bound; this one is far above any real cluster and keeps every
/// sum of counts far from overflowing. Larger counts are refused as WSME refuses a value
/// above an `IntegerType` maximum (`Value should be lower or equal to 10000`).
pub const MAX_NODE_COUNT: i64 = 10_000;

/// `min ≤ node_count`, and with a maximum, `min ≤ max` and `node_count ≤ max`.
pub fn check_counts(
    nodegroup: &str,
    node_count: i64,
    min_node_count: i64,
    max_node_count: Option<i64>,
) -> Result<(), NodeGroupInvalid> {
    if let Some(max) = max_node_count {
        if max < min_node_count {
            return Err(invalid(
                "max_node_count",
                nodegroup,
                format!(
                    "min_node_count ({min_node_count}) should be less or equal to max_node_count ({max})"
                ),
            ));
        }
        if node_count > max {
            return Err(invalid(
                "max_node_count",
                nodegroup,
                format!(
                    "node_count ({node_count}) should be less or equal to max_node_count ({max})"
                ),
            ));
        }
    }
    if node_count < min_node_count {
        return Err(invalid(
            "min_node_count",
            nodegroup,
            format!(
                "min_node_count ({min_node_count}) should be less or equal to node_count ({node_count})"
            ),
        ));
    }
    Ok(())
}

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Keys under Kubernetes' reserved prefixes that kubelets may still set on themselves.
const ALLOWED_RESERVED_KEYS: [&str; 12] = [
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "node.kubernetes.io/windows-build",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

fn is_reserved(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let reserved = ["kubernetes.io", "k8s.io"].contains(&prefix)
        || prefix.ends_with(".kubernetes.io")
        || prefix.ends_with(".k8s.io");
    let exempt = prefix == "kubelet.kubernetes.io"
        || prefix == "node.kubernetes.io"
        || ALLOWED_RESERVED_KEYS.contains(&key);
    reserved && !exempt
}

/// Node labels: string values, no reserved keys, none on masters, within the label bounds.
pub fn check_node_labels(
    nodegroup: &str,
    role: &str,
    labels: &Map<String, Value>,
) -> Result<(), NodeGroupInvalid> {
    if labels.is_empty() {
        return Ok(());
    }
    if role == "master" {
        return Err(invalid(
            "node_labels",
            nodegroup,
            "node labels cannot be set on master nodegroups".to_owned(),
        ));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(invalid(
                "node_labels",
                nodegroup,
                "label keys cannot be empty".to_owned(),
            ));
        }
        if !value.is_string() {
            return Err(invalid(
                "node_labels",
                nodegroup,
                format!("the value of {key} must be a string"),
            ));
        }
        if is_reserved(key) {
            return Err(invalid(
                "node_labels",
                nodegroup,
                format!("{key} uses a prefix reserved for Kubernetes"),
            ));
        }
    }
    check_label_bounds(labels).map_err(|error| {
        // The bound's sentence, read inside upstream's parentheses.
        let sentence = error.to_string();
        let mut characters = sentence.trim_end_matches('.').chars();
        let explanation = characters
            .next()
            .map(|first| first.to_lowercase().chain(characters).collect())
            .unwrap_or_default();
        invalid("node_labels", nodegroup, explanation)
    })
}

/// Node taints: a list of `{key, value?, effect}` objects, none on masters.
pub fn parse_node_taints(
    nodegroup: &str,
    role: &str,
    taints: &Value,
) -> Result<Vec<Taint>, NodeGroupInvalid> {
    let fail = |explanation: String| invalid("node_taints", nodegroup, explanation);
    let Value::Array(items) = taints else {
        return Err(fail("node_taints must be a list".to_owned()));
    };
    if items.is_empty() {
        return Ok(Vec::new());
    }
    if role == "master" {
        return Err(fail(
            "node taints cannot be set on master nodegroups".to_owned(),
        ));
    }
    if items.len() > MAX_LABELS {
        return Err(fail(format!(
            "there are {} taints; at most {MAX_LABELS} are allowed",
            items.len()
        )));
    }
    let too_long = |index: usize, part: &str, text: &str, max: usize| {
        let length = text.chars().count();
        (length > max).then(|| {
            fail(format!(
                "node_taints[{index}].{part} has {length} characters; at most {max} are allowed"
            ))
        })
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(fail(format!("node_taints[{index}] must be an object")));
        };
        if let Some(unknown) = object
            .keys()
            .find(|key| !["key", "value", "effect"].contains(&key.as_str()))
        {
            return Err(fail(format!(
                "node_taints[{index}] has an unknown attribute {unknown}"
            )));
        }
        let key = match object.get("key") {
            Some(Value::String(key)) if !key.is_empty() => key.clone(),
            _ => {
                return Err(fail(format!(
                    "node_taints[{index}].key must be a non-empty string"
                )))
            }
        };
        let value = match object.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::String(value)) => Some(value.clone()),
            Some(_) => return Err(fail(format!("node_taints[{index}].value must be a string"))),
        };
        let effect = match object.get("effect") {
            Some(Value::String(effect)) if TAINT_EFFECTS.contains(&effect.as_str()) => {
                effect.clone()
            }
            _ => {
                return Err(fail(format!(
                    "node_taints[{index}].effect must be one of {}",
                    TAINT_EFFECTS.join(", ")
                )))
            }
        };
        if let Some(refusal) = too_long(index, "key", &key, MAX_LABEL_KEY_CHARS).or_else(|| {
            too_long(
                index,
                "value",
                value.as_deref().unwrap_or_default(),
                MAX_LABEL_VALUE_CHARS,
            )
        }) {
            return Err(refusal);
        }
        parsed.push(Taint { key, value, effect });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_read_like_upstream() {
        assert!(check_counts("ng", 1, 0, None).is_ok());
        assert!(check_counts("ng", 3, 1, Some(3)).is_ok());
        assert_eq!(
            check_counts("bad", 1, 3, None).unwrap_err().to_string(),
            "min_node_count for bad is invalid (min_node_count (3) should be less or equal to node_count (1))."
        );
        assert_eq!(
            check_counts("new-ng", 5, 5, Some(3)).unwrap_err().to_string(),
            "max_node_count for new-ng is invalid (min_node_count (5) should be less or equal to max_node_count (3))."
        );
        assert_eq!(
            check_counts("ng", 4, 0, Some(3)).unwrap_err().attribute,
            "max_node_count"
        );
    }

    #[test]
    fn reserved_label_prefixes_are_refused_except_the_kubelet_ones() {
        let worker =
            |labels: Value| check_node_labels("ng", "worker", labels.as_object().unwrap()).is_ok();
        assert!(worker(json!({"gpu": "true", "example.com/tier": "a"})));
        assert!(worker(json!({"node.kubernetes.io/instance-type": "x"})));
        assert!(worker(json!({"kubelet.kubernetes.io/anything": "x"})));
        assert!(worker(json!({"kubernetes.io/hostname": "x"})));
        assert!(!worker(json!({"kubernetes.io/role": "x"})));
        assert!(!worker(json!({"foo.k8s.io/x": "y"})));
        assert!(!worker(json!({"a": 1})));
        assert!(check_node_labels("m", "master", json!({"a": "b"}).as_object().unwrap()).is_err());
        assert!(check_node_labels("m", "master", &Map::new()).is_ok());
    }

    #[test]
    fn node_labels_and_taints_are_bounded() {
        let many: Map<String, Value> = (0..=MAX_LABELS)
            .map(|index| (format!("k{index}"), json!("v")))
            .collect();
        assert_eq!(
            check_node_labels("ng", "worker", &many)
                .unwrap_err()
                .to_string(),
            "node_labels for ng is invalid (there are 129 labels; at most 128 are allowed)."
        );
        let long_value = json!({"k": "v".repeat(MAX_LABEL_VALUE_CHARS + 1)});
        assert_eq!(
            check_node_labels("ng", "worker", long_value.as_object().unwrap())
                .unwrap_err()
                .to_string(),
            "node_labels for ng is invalid (the value of label 'k' has 4097 characters; at most 4096 are allowed)."
        );
        let taint = json!({"key": "k", "effect": "NoSchedule"});
        let taints = Value::Array(vec![taint.clone(); MAX_LABELS + 1]);
        assert_eq!(
            parse_node_taints("ng", "worker", &taints)
                .unwrap_err()
                .to_string(),
            "node_taints for ng is invalid (there are 129 taints; at most 128 are allowed)."
        );
        assert!(parse_node_taints("ng", "worker", &Value::Array(vec![taint; MAX_LABELS])).is_ok());
        let long_key = json!([{"key": "k".repeat(256), "effect": "NoSchedule"}]);
        assert_eq!(
            parse_node_taints("ng", "worker", &long_key).unwrap_err().to_string(),
            "node_taints for ng is invalid (node_taints[0].key has 256 characters; at most 255 are allowed)."
        );
        let long_value = json!([{"key": "k", "value": "v".repeat(4097), "effect": "NoSchedule"}]);
        assert_eq!(
            parse_node_taints("ng", "worker", &long_value)
                .unwrap_err()
                .attribute,
            "node_taints"
        );
    }

    #[test]
    fn taints_are_checked_item_by_item() {
        let taints = parse_node_taints(
            "ng",
            "worker",
            &json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}]),
        )
        .unwrap();
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[1].value, None);
        assert_eq!(
            parse_node_taints("bad", "worker", &json!([{"key": "k", "effect": "Bogus"}]))
                .unwrap_err()
                .to_string(),
            "node_taints for bad is invalid (node_taints[0].effect must be one of NoSchedule, PreferNoSchedule, NoExecute)."
        );
        assert!(parse_node_taints(
            "ng",
            "worker",
            &json!([{"key": "", "effect": "NoSchedule"}])
        )
        .is_err());
        assert!(parse_node_taints(
            "ng",
            "worker",
            &json!([{"key": "k", "effect": "NoSchedule", "x": 1}])
        )
        .is_err());
        assert!(parse_node_taints("ng", "worker", &json!(["k"])).is_err());
        assert!(parse_node_taints(
            "ng",
            "master",
            &json!([{"key": "k", "effect": "NoSchedule"}])
        )
        .is_err());
        assert!(parse_node_taints("ng", "master", &json!([]))
            .unwrap()
            .is_empty());
    }
}
