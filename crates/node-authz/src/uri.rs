//! Normalising the `RequestUri` dockerd forwards, the way dockerd itself will route it.
//!
//! dockerd forwards `r.RequestURI` raw, but routes on the percent-decoded path (gorilla/mux
//! v1.8 matches `req.URL.Path`, so `/v1.41/containers/%63reate` creates a container and `%2F`
//! becomes a path separator), and answers a path with `.`, `..` or `//` segments with a
//! redirect to its cleaned form. So we decode once, resolve those segments, and then judge the
//! route: a request that dockerd redirects is judged as the request the client will send next.

use crate::refusal::{quoted, Refusal, NOT_ALLOWED};

/// A Docker API version from a `/vMAJOR.MINOR` path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

/// API versions below 1.24 let `POST /containers/{id}/start` carry a whole HostConfig
/// (api/server/router/container/container_routes.go, postContainersStart), which would need
/// the full container-create review on start; no client we support is that old.
pub(crate) const MINIMUM_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 24,
};

/// A request target after normalisation.
#[derive(Debug)]
pub(crate) struct RequestTarget {
    /// The decoded, resolved path segments without the version prefix:
    /// `/v1.41/containers/x/start` → `["containers", "x", "start"]`.
    pub(crate) segments: Vec<String>,
    pub(crate) api_version: Option<ApiVersion>,
}

impl RequestTarget {
    pub(crate) fn parse(request_uri: &str) -> Result<Self, Refusal> {
        // Go's server also accepts an absolute-form target (`POST http://host/containers/create`),
        // whose RequestURI does not start with `/`; it routes on the path inside. We accept only
        // the origin form every Docker client sends.
        if !request_uri.starts_with('/') {
            return Err(Refusal::new(format!(
                "the request URI {} cannot be checked: it is not an absolute path",
                quoted(request_uri)
            )));
        }
        if request_uri.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Refusal::new(format!(
                "the request URI {} cannot be checked: it contains spaces or control characters",
                quoted(request_uri)
            )));
        }
        // dockerd routes on the path alone, and no rule reads the query: POST /build, whose
        // options travel there, is refused as a whole.
        let raw_path = request_uri
            .split_once('?')
            .map_or(request_uri, |(path, _query)| path);
        let decoded = percent_decode(raw_path.as_bytes()).ok_or_else(|| {
            Refusal::new(format!(
                "the request URI {} cannot be checked: its percent-encoding is invalid",
                quoted(request_uri)
            ))
        })?;
        let decoded = String::from_utf8(decoded).map_err(|_| {
            Refusal::new(format!(
                "the request URI {} cannot be checked: its decoded path is not UTF-8",
                quoted(request_uri)
            ))
        })?;
        if decoded.chars().any(char::is_control) {
            return Err(Refusal::new(format!(
                "the request URI {} cannot be checked: its decoded path contains control characters",
                quoted(request_uri)
            )));
        }

        let mut segments: Vec<String> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other.to_owned()),
            }
        }

        let mut api_version = None;
        if segments
            .first()
            .is_some_and(|first| is_version_segment(first))
        {
            let version_segment = segments.remove(0);
            let version = parse_api_version(&version_segment[1..])?;
            if version < MINIMUM_API_VERSION {
                return Err(Refusal::new(format!(
                    "Docker API version {}.{} is {NOT_ALLOWED}: versions below {}.{} accept a \
                     HostConfig on container start; use API {}.{} or newer",
                    version.major,
                    version.minor,
                    MINIMUM_API_VERSION.major,
                    MINIMUM_API_VERSION.minor,
                    MINIMUM_API_VERSION.major,
                    MINIMUM_API_VERSION.minor,
                )));
            }
            api_version = Some(version);
        }

        Ok(Self {
            segments,
            api_version,
        })
    }

    /// The normalised path for messages and the log, e.g. `/v1.41/containers/create`.
    pub(crate) fn display_path(&self) -> String {
        let path = self
            .segments
            .iter()
            .map(|segment| format!("/{segment}"))
            .collect::<String>();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        match self.api_version {
            Some(version) => format!("/v{}.{}{path}", version.major, version.minor),
            None => path,
        }
    }
}

/// What gorilla/mux takes for the version prefix: `/v{version:[0-9.]+}`.
fn is_version_segment(segment: &str) -> bool {
    segment.len() > 1
        && segment.starts_with('v')
        && segment[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
}

/// Accepts `MAJOR.MINOR` only. dockerd compares dotted versions component-wise with `Atoi`,
/// turning anything it cannot parse into 0 (so `1..30` is 1.0.30, below 1.24); we refuse
/// every shape a client does not send instead of copying those rules.
fn parse_api_version(text: &str) -> Result<ApiVersion, Refusal> {
    let not_understood = || {
        Refusal::new(format!(
            "Docker API version {} is not understood on a magnum-rs local cluster; use /vMAJOR.MINOR",
            quoted(text)
        ))
    };
    let (major, minor) = text.split_once('.').ok_or_else(not_understood)?;
    let number = |digits: &str| -> Option<u32> {
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    Ok(ApiVersion {
        major: number(major).ok_or_else(not_understood)?,
        minor: number(minor).ok_or_else(not_understood)?,
    })
}

/// Decodes the `%XX` escapes of a path. `None` when an escape is malformed, as Go's url
/// package refuses it.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut output = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        match input[index] {
            b'%' => {
                let high = hex_value(*input.get(index + 1)?)?;
                let low = hex_value(*input.get(index + 2)?)?;
                output.push(high << 4 | low);
                index += 3;
            }
            byte => {
                output.push(byte);
                index += 1;
            }
        }
    }
    Some(output)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(uri: &str) -> Vec<String> {
        RequestTarget::parse(uri).unwrap().segments
    }

    #[test]
    fn decodes_resolves_and_strips_the_version() {
        assert_eq!(
            segments("/v1.41/containers/%63reate"),
            ["containers", "create"]
        );
        assert_eq!(
            segments("/v1.41//containers/./create/"),
            ["containers", "create"]
        );
        assert_eq!(
            segments("/v1.41/images/x/../../containers/create"),
            ["containers", "create"]
        );
        assert_eq!(segments("/containers%2Fcreate"), ["containers", "create"]);
        assert_eq!(segments("/../../containers/json"), ["containers", "json"]);
        let target = RequestTarget::parse("/v1.41/containers/create?name=a").unwrap();
        assert_eq!(
            target.api_version,
            Some(ApiVersion {
                major: 1,
                minor: 41
            })
        );
        assert_eq!(target.display_path(), "/v1.41/containers/create");
    }

    #[test]
    fn a_version_hidden_behind_dot_segments_is_still_found() {
        let refusal = RequestTarget::parse("/containers/../v1.23/containers/x/start").unwrap_err();
        assert!(refusal.message().contains("1.23"), "{refusal}");
    }

    #[test]
    fn refuses_old_and_odd_versions() {
        for uri in [
            "/v1.23/containers/x/start",
            "/v1.9/info",
            "/v0.99/info",
            "/v1.023/info",
        ] {
            let refusal = RequestTarget::parse(uri).unwrap_err();
            assert!(refusal.message().contains("below 1.24"), "{uri}: {refusal}");
        }
        for uri in [
            "/v1..30/info",
            "/v1/info",
            "/v./info",
            "/v1.41.0/info",
            "/v99999999999.1/info",
        ] {
            let refusal = RequestTarget::parse(uri).unwrap_err();
            assert!(
                refusal.message().contains("not understood"),
                "{uri}: {refusal}"
            );
        }
        assert_eq!(
            RequestTarget::parse("/v1.024/info").unwrap().api_version,
            Some(ApiVersion {
                major: 1,
                minor: 24
            })
        );
        // Not a version segment at all: left in place, so it names no known route.
        assert_eq!(segments("/vx/info"), ["vx", "info"]);
    }

    #[test]
    fn refuses_malformed_targets() {
        for uri in [
            "containers/create",
            "http://host/containers/create",
            "*",
            "",
            "/containers/%zzcreate",
            "/containers/create%",
            "/containers/%00create",
            "/containers/\ncreate",
            "/containers/%0acreate",
            "/containers/%ff",
        ] {
            assert!(RequestTarget::parse(uri).is_err(), "{uri:?} was accepted");
        }
    }
}
