//! The dashboard's files, built into the binary: compressed once at start-up, served with
//! content-hashed paths so that browsers keep them until the next release.

use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::io::Write;

/// One embedded file.
struct Source {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file the dashboard has. The page refers to the others as `./static/<name>`.
const SOURCES: [Source; 4] = [
    Source {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../dashboard/index.html"),
    },
    Source {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.js"),
    },
    Source {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.css"),
    },
    Source {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../dashboard/icon.svg"),
    },
];

const PAGE: &str = "index.html";

/// What the page may load and talk to: only this origin; no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A file ready to serve.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    raw: Vec<u8>,
    /// `None` where compression would not make it smaller.
    gzip: Option<Vec<u8>>,
    etag: HeaderValue,
}

/// The dashboard's files, with the version every static path carries.
pub struct Assets {
    version: String,
    assets: Vec<Asset>,
}

/// Sizes for the performance notes and the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleSize {
    pub raw_bytes: usize,
    pub gzip_bytes: usize,
}

impl Assets {
    pub fn new() -> Self {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for source in &SOURCES {
            digest.update(source.name.as_bytes());
            digest.update(&(source.bytes.len() as u64).to_le_bytes());
            digest.update(source.bytes);
        }
        let version: String = digest
            .finish()
            .as_ref()
            .iter()
            .take(6)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let assets = SOURCES
            .iter()
            .map(|source| {
                let raw = if source.name == PAGE {
                    // The page names its files without a version; the version makes each
                    // release's files new URLs, so they can be cached for good.
                    String::from_utf8_lossy(source.bytes)
                        .replace("./static/", &format!("./static/{version}/"))
                        .into_bytes()
                } else {
                    source.bytes.to_vec()
                };
                let gzip = compress(&raw).filter(|gzip| gzip.len() < raw.len());
                let etag = HeaderValue::from_str(&format!(
                    "\"{version}-{}\"",
                    source.name.replace('.', "-")
                ))
                .expect("an ETag of hex digits and names is a valid header");
                Asset {
                    name: source.name,
                    content_type: source.content_type,
                    raw,
                    gzip,
                    etag,
                }
            })
            .collect();
        Self { version, assets }
    }

    #[cfg(test)]
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn size(&self) -> BundleSize {
        BundleSize {
            raw_bytes: self.assets.iter().map(|asset| asset.raw.len()).sum(),
            gzip_bytes: self
                .assets
                .iter()
                .map(|asset| asset.gzip.as_ref().unwrap_or(&asset.raw).len())
                .sum(),
        }
    }

    /// The page itself: always revalidated, so a new release shows at the next load.
    pub fn page(&self, method: &Method, headers: &HeaderMap) -> Response<Body> {
        let page = self.find(PAGE).expect("the page is embedded");
        let mut response = respond(page, method, headers);
        let response_headers = response.headers_mut();
        response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response_headers.insert(
            "content-security-policy",
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        response_headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        response_headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        response
    }

    /// `static/<version>/<name>`: kept for a year when the version is this release's; an
    /// older page asking for its version gets today's file, revalidated each time.
    pub fn file(
        &self,
        version: &str,
        name: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let asset = self.find(name).filter(|asset| asset.name != PAGE)?;
        let mut response = respond(asset, method, headers);
        let cache = if version == self.version {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        Some(response)
    }

    fn find(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|asset| asset.name == name)
    }
}

impl Default for Assets {
    fn default() -> Self {
        Self::new()
    }
}

fn compress(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn respond(asset: &Asset, method: &Method, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let not_modified = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == asset.etag.to_str().unwrap_or_default()
        });
    let response_headers = response.headers_mut();
    response_headers.insert(ETAG, asset.etag.clone());
    response_headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    response_headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let body = match &asset.gzip {
        Some(gzip) if accepts_gzip(headers) => {
            response_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gzip
        }
        _ => &asset.raw,
    };
    response_headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if method != Method::HEAD {
        *response.body_mut() = Body::from(body.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(encoding: Option<&str>, etag: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(encoding) = encoding {
            headers.insert("accept-encoding", HeaderValue::from_str(encoding).unwrap());
        }
        if let Some(etag) = etag {
            headers.insert(IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap());
        }
        headers
    }

    #[test]
    fn the_page_names_its_files_by_this_release() {
        let assets = Assets::new();
        let page = assets.find(PAGE).unwrap();
        let text = String::from_utf8_lossy(&page.raw);
        assert!(text.contains(&format!("./static/{}/app.js", assets.version())));
        assert!(!text.contains("./static/app.js"));
        assert_eq!(assets.version().len(), 12);
    }

    #[test]
    fn files_are_compressed_only_for_clients_that_take_gzip() {
        let assets = Assets::new();
        let version = assets.version().to_owned();
        let gzip = assets
            .file(
                &version,
                "app.js",
                &Method::GET,
                &request(Some("br, gzip"), None),
            )
            .unwrap();
        assert_eq!(gzip.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(
            gzip.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let refused = assets
            .file(
                &version,
                "app.js",
                &Method::GET,
                &request(Some("gzip;q=0"), None),
            )
            .unwrap();
        assert!(refused.headers().get(CONTENT_ENCODING).is_none());
        let plain = assets
            .file(&version, "app.js", &Method::GET, &request(None, None))
            .unwrap();
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        let raw_length: usize = plain.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(raw_length, assets.find("app.js").unwrap().raw.len());
    }

    #[test]
    fn a_known_etag_gets_304_and_an_old_version_is_revalidated() {
        let assets = Assets::new();
        let version = assets.version().to_owned();
        let first = assets
            .file(&version, "app.css", &Method::GET, &request(None, None))
            .unwrap();
        let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
        let again = assets
            .file(
                &version,
                "app.css",
                &Method::GET,
                &request(None, Some(&etag)),
            )
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let old = assets
            .file(
                "000000000000",
                "app.css",
                &Method::GET,
                &request(None, None),
            )
            .unwrap();
        assert_eq!(old.headers()[CACHE_CONTROL], "no-cache");
        assert!(assets
            .file(&version, "index.html", &Method::GET, &request(None, None))
            .is_none());
        assert!(assets
            .file(
                &version,
                "../Cargo.toml",
                &Method::GET,
                &request(None, None)
            )
            .is_none());
    }

    #[test]
    fn the_page_forbids_scripts_from_elsewhere_and_framing() {
        let assets = Assets::new();
        let page = assets.page(&Method::GET, &request(Some("gzip"), None));
        let policy = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"));
        assert!(policy.contains("frame-ancestors 'none'"));
        assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    }
}
