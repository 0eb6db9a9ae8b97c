//! Wire shapes of the Magnum v1 API.
//!
//! Every JSON document magnum-rs puts on the wire is defined here, with its keys in the order
//! upstream Magnum emits them, and encoded by [`encode`] the way Python's `json.dumps` does
//! (`", "` and `": "` separators, non-ASCII escaped) so that responses are byte-compatible.

mod json;
mod views;

pub use json::{encode, encode_value};
pub use views::*;
