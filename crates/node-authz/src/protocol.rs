//! The legacy Docker plugin protocol for an authorization plugin.
//!
//! dockerd calls `POST /Plugin.Activate` once, then `POST /AuthZPlugin.AuthZReq` before and
//! `POST /AuthZPlugin.AuthZRes` after every API request. Request documents are
//! pkg/authorization/api.go `Request` (note the spelling `RequestUri`; with `RequestURI` every
//! request would look URI-less). `RequestBody` is Go's `[]byte`, i.e. standard base64, omitted
//! when dockerd forwarded no body.

use serde::Deserialize;

use crate::refusal::{quoted, Refusal};
use crate::review::{review_with_path, Caller};

/// The content type of every plugin protocol response.
pub const PLUGIN_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The fields of an AuthZReq this plugin reads. Others (headers, peer certificates…) are
/// ignored. dockerd omits empty ones, so an absent `UserAuthNMethod` is the unix socket.
#[derive(Debug, Deserialize)]
struct AuthzRequest {
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "UserAuthNMethod", default)]
    user_authn_method: Option<String>,
    #[serde(rename = "RequestMethod", default)]
    request_method: Option<String>,
    #[serde(rename = "RequestUri", default)]
    request_uri: Option<String>,
    #[serde(rename = "RequestBody", default)]
    request_body: Option<String>,
}

/// One plugin call's answer, and the log line for a refusal.
pub(crate) struct PluginReply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// `METHOD /path (caller): message` for a refused request; never contains the request
    /// body.
    pub(crate) refusal_log: Option<String>,
}

/// Answers one plugin protocol call: `path` is the HTTP request path, `body` its body.
/// Returns the HTTP status and the JSON response body.
pub fn handle_plugin_call(path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let reply = plugin_call(path, body);
    (reply.status, reply.body)
}

pub(crate) fn plugin_call(path: &str, body: &[u8]) -> PluginReply {
    match path {
        "/Plugin.Activate" => ok(serde_json::json!({ "Implements": ["authz"] })),
        "/AuthZPlugin.AuthZReq" => authorize_request(body),
        // The request was already reviewed; responses carry nothing to refuse.
        "/AuthZPlugin.AuthZRes" => ok(serde_json::json!({ "Allow": true })),
        _ => PluginReply {
            status: 404,
            body: json_bytes(&serde_json::json!({ "Err": "unknown plugin method" })),
            refusal_log: None,
        },
    }
}

fn authorize_request(body: &[u8]) -> PluginReply {
    let reviewed = decide(body);
    match reviewed.decision {
        Ok(()) => ok(serde_json::json!({ "Allow": true })),
        Err(refusal) => PluginReply {
            status: 200,
            body: json_bytes(&serde_json::json!({ "Allow": false, "Msg": refusal.message() })),
            refusal_log: Some(format!("{}: {}", reviewed.subject, refusal.message())),
        },
    }
}

/// A reviewed AuthZReq: what it asked for and who asked (`METHOD /path (caller)`, for the
/// log), and the decision.
struct Reviewed {
    subject: String,
    decision: Result<(), Refusal>,
}

/// Decodes the AuthZReq and reviews the request. A document that cannot be read is refused.
fn decide(body: &[u8]) -> Reviewed {
    let unreadable = |message: String| Reviewed {
        subject: "unreadable AuthZReq".to_owned(),
        decision: Err(Refusal::new(message)),
    };
    let request: AuthzRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return unreadable(format!(
                "the authorization request from dockerd could not be read: {error}"
            ));
        }
    };
    let Some(method) = request.request_method.filter(|method| !method.is_empty()) else {
        return unreadable("the authorization request from dockerd has no RequestMethod".into());
    };
    let Some(request_uri) = request.request_uri.filter(|uri| !uri.is_empty()) else {
        return unreadable("the authorization request from dockerd has no RequestUri".into());
    };
    let caller = Caller {
        authentication_method: request.user_authn_method.as_deref().unwrap_or(""),
        user: request.user.as_deref().unwrap_or(""),
    };
    let method_shown = if method.bytes().all(|b| b.is_ascii_uppercase()) {
        method.clone()
    } else {
        quoted(&method)
    };
    let caller_shown = caller_for_log(&caller);
    let body = match request.request_body.as_deref().map(decode_base64) {
        None => None,
        Some(Some(decoded)) => Some(decoded),
        Some(None) => {
            return Reviewed {
                subject: format!(
                    "{method_shown} {} ({caller_shown})",
                    uri_for_log(&request_uri)
                ),
                decision: Err(Refusal::new(
                    "the request body forwarded by dockerd is not valid base64",
                )),
            };
        }
    };
    let (path, decision) = review_with_path(&caller, &method, &request_uri, body.as_deref());
    let shown_path = path.unwrap_or_else(|| uri_for_log(&request_uri));
    Reviewed {
        subject: format!("{method_shown} {shown_path} ({caller_shown})"),
        decision,
    }
}

/// `unix socket`, or `TLS user "CN"`: the method and user as dockerd gave them, the user
/// quoted (a tenant chooses the common name of their certificate).
fn caller_for_log(caller: &Caller<'_>) -> String {
    if caller.is_unix_socket() {
        return "unix socket".to_owned();
    }
    let method = caller.authentication_method;
    let method_shown = if method.bytes().all(|b| b.is_ascii_alphanumeric()) {
        method.to_owned()
    } else {
        quoted(method)
    };
    format!("{method_shown} user {}", quoted(caller.user))
}

/// The raw path of a URI that could not be normalised, without its query (which may carry
/// registry credentials or other secrets), escaped and shortened.
fn uri_for_log(request_uri: &str) -> String {
    quoted(request_uri.split('?').next().unwrap_or(request_uri))
}

fn ok(document: serde_json::Value) -> PluginReply {
    PluginReply {
        status: 200,
        body: json_bytes(&document),
        refusal_log: None,
    }
}

fn json_bytes(document: &serde_json::Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail; an empty body would make dockerd fail the call,
    // which refuses the request: fail closed either way.
    serde_json::to_vec(document).unwrap_or_default()
}

/// Standard base64 (`A–Z a–z 0–9 + /`), as Go encodes `[]byte`. Padding is optional; anything
/// else (other characters, whitespace, misplaced padding, an impossible length, non-zero
/// unused bits) is invalid.
pub(crate) fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    let bytes = encoded.as_bytes();
    let unpadded = match bytes {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => bytes,
    };
    let padded = unpadded.len() != bytes.len();
    if padded && !bytes.len().is_multiple_of(4) {
        return None;
    }
    let tail_len = unpadded.len() % 4;
    if tail_len == 1 || (padded && tail_len == 0) {
        return None;
    }

    let mut output = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    let mut chunks = unpadded.chunks(4);
    for chunk in chunks.by_ref() {
        let mut values = [0u8; 4];
        for (value, &byte) in values.iter_mut().zip(chunk) {
            *value = base64_value(byte)?;
        }
        match chunk.len() {
            4 => {
                output.push(values[0] << 2 | values[1] >> 4);
                output.push(values[1] << 4 | values[2] >> 2);
                output.push(values[2] << 6 | values[3]);
            }
            3 => {
                if values[2] & 0b11 != 0 {
                    return None;
                }
                output.push(values[0] << 2 | values[1] >> 4);
                output.push(values[1] << 4 | values[2] >> 2);
            }
            2 => {
                if values[1] & 0b1111 != 0 {
                    return None;
                }
                output.push(values[0] << 2 | values[1] >> 4);
            }
            _ => return None,
        }
    }
    Some(output)
}

fn base64_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        let vectors: [(&str, &[u8]); 8] = [
            ("", b""),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg==", b"foob"),
            ("Zm9vYmE=", b"fooba"),
            ("Zm9vYmFy", b"foobar"),
            ("+/8=", &[0xfb, 0xff]),
        ];
        for (encoded, decoded) in vectors {
            assert_eq!(
                decode_base64(encoded).as_deref(),
                Some(decoded),
                "{encoded}"
            );
        }
        assert_eq!(decode_base64("Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8").as_deref(), Some(&b"fo"[..]));
    }

    #[test]
    fn base64_refuses_invalid_input() {
        for encoded in [
            "Z", "Zg=", "Zg===", "Z===", "Zm9v\n", "Zm 9v", "Zm9v=", "Zh==", "Zm9=", "Zm-v",
            "Zm_v", "====", "Zg==Zg==", "Zm8==",
        ] {
            assert_eq!(decode_base64(encoded), None, "{encoded:?} was accepted");
        }
    }
}
