//! Typed reads of body fields. A field of the wrong JSON type is refused: dockerd would fail to
//! decode it anyway, and a rule must never pass a value it did not understand.

use crate::json::{Json, Object};
use crate::refusal::Refusal;

fn wrong_type(label: &str, expected: &str) -> Refusal {
    Refusal::new(format!(
        "{label} has an unexpected JSON type (expected {expected})"
    ))
}

/// A string field; `None` when absent or null.
pub(crate) fn string<'a>(
    object: &'a Object,
    name: &str,
    label: &str,
) -> Result<Option<&'a str>, Refusal> {
    match object.field(name) {
        None => Ok(None),
        Some(Json::String(text)) => Ok(Some(text)),
        Some(_) => Err(wrong_type(label, "a string")),
    }
}

/// A boolean field; `false` when absent or null.
pub(crate) fn flag(object: &Object, name: &str, label: &str) -> Result<bool, Refusal> {
    match object.field(name) {
        None => Ok(false),
        Some(Json::Bool(value)) => Ok(*value),
        Some(_) => Err(wrong_type(label, "true or false")),
    }
}

/// An object field; `None` when absent or null.
pub(crate) fn object<'a>(
    parent: &'a Object,
    name: &str,
    label: &str,
) -> Result<Option<&'a Object>, Refusal> {
    match parent.field(name) {
        None => Ok(None),
        Some(Json::Object(child)) => Ok(Some(child)),
        Some(_) => Err(wrong_type(label, "an object")),
    }
}

/// An array field; empty when absent or null.
pub(crate) fn array<'a>(
    object: &'a Object,
    name: &str,
    label: &str,
) -> Result<&'a [Json], Refusal> {
    match object.field(name) {
        None => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(wrong_type(label, "an array")),
    }
}

/// An array of strings; a null element reads as `""`, as Go decodes it.
pub(crate) fn strings<'a>(
    object: &'a Object,
    name: &str,
    label: &str,
) -> Result<Vec<&'a str>, Refusal> {
    array(object, name, label)?
        .iter()
        .map(|item| match item {
            Json::String(text) => Ok(text.as_str()),
            Json::Null => Ok(""),
            _ => Err(wrong_type(label, "an array of strings")),
        })
        .collect()
}

/// Docker's `StrSlice` (CapAdd, CapDrop, Cmd…): a single string or an array of strings.
pub(crate) fn string_or_strings<'a>(
    object: &'a Object,
    name: &str,
    label: &str,
) -> Result<Vec<&'a str>, Refusal> {
    match object.field(name) {
        Some(Json::String(text)) => Ok(vec![text.as_str()]),
        _ => strings(object, name, label),
    }
}

/// Whether a field is absent or holds a zero value (`null`, `""`, `[]`, `{}`).
pub(crate) fn is_unset(object: &Object, name: &str) -> bool {
    object.field(name).is_none_or(Json::is_empty_value)
}

/// A number field that is negative.
pub(crate) fn is_negative_number(
    object: &Object,
    name: &str,
    label: &str,
) -> Result<bool, Refusal> {
    match object.field(name) {
        None => Ok(false),
        Some(Json::Number(value)) => Ok(*value < 0.0),
        Some(_) => Err(wrong_type(label, "a number")),
    }
}
