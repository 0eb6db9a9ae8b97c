//! What the API answers, built from the domain's records: one module per resource. Handlers
//! render through these; views do no IO.

pub(crate) mod cluster;
pub(crate) mod cluster_template;
pub(crate) mod nodegroup;
pub(crate) mod quota;

use std::collections::BTreeMap;

use serde_json::Value;

/// A JSON object whose keys are in sorted order, as upstream's serializer emits them.
pub fn sorted_object(entries: BTreeMap<&'static str, Value>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}
