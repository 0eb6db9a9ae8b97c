//! The quota view.

use super::sorted_object;

use std::collections::BTreeMap;

use magnum_domain::quota::Quota;
use magnum_domain::time::Timestamp;
use serde_json::{json, Value};

pub(crate) fn view(quota: &Quota) -> Value {
    let mut view = BTreeMap::new();
    view.insert("id", json!(quota.id));
    view.insert("project_id", json!(quota.project_id));
    view.insert("resource", json!(quota.resource));
    view.insert("hard_limit", json!(quota.hard_limit));
    view.insert("created_at", json!(quota.created_at.to_wire()));
    view.insert(
        "updated_at",
        json!(quota.updated_at.map(Timestamp::to_wire)),
    );
    sorted_object(view)
}
