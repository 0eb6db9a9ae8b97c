//! Version discovery: `GET /` and `GET /v1`.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_types::{encode, Link, MediaType, RootDocument, V1Document, VersionEntry};

use crate::context::{add_version_headers, json_response};
use crate::microversion::{Version, MAX_VERSION, MIN_VERSION};

pub fn root_document(base_url: &str, request_id: &str) -> Response<Body> {
    let document = RootDocument {
        name: "OpenStack Magnum API",
        description:
            "Magnum is an OpenStack project which aims to provide container cluster management.",
        versions: vec![VersionEntry {
            id: "v1",
            links: vec![Link::new(format!("{base_url}/v1/"), "self")],
            status: "CURRENT",
            max_version: MAX_VERSION.to_string(),
            min_version: MIN_VERSION.to_string(),
        }],
    };
    json_response(StatusCode::OK, encode(&document), request_id)
}

fn collection_links(base_url: &str, name: &str) -> Vec<Link> {
    vec![
        Link::new(format!("{base_url}/v1/{name}/"), "self"),
        Link::new(format!("{base_url}/{name}/"), "bookmark"),
    ]
}

pub fn v1_document(base_url: &str, request_id: &str, version: Version) -> Response<Body> {
    let document = V1Document {
        id: "v1",
        media_types: vec![MediaType {
            base: "application/json",
            media_type: "application/vnd.openstack.magnum.v1+json",
        }],
        links: vec![
            Link::new(format!("{base_url}/v1/"), "self"),
            Link {
                href: "http://docs.openstack.org/developer/magnum/dev/api-spec-v1.html".to_owned(),
                rel: "describedby".to_owned(),
                media_type: Some("text/html".to_owned()),
            },
        ],
        clustertemplates: collection_links(base_url, "clustertemplates"),
        clusters: collection_links(base_url, "clusters"),
        quotas: collection_links(base_url, "quotas"),
        certificates: collection_links(base_url, "certificates"),
        mservices: collection_links(base_url, "mservices"),
        stats: collection_links(base_url, "stats"),
        federations: collection_links(base_url, "federations"),
        nodegroups: vec![
            Link::new(
                format!("{base_url}/v1/clusters/{{cluster_id}}/nodegroups"),
                "self",
            ),
            Link::new(
                format!("{base_url}/clusters/{{cluster_id}}/nodegroups"),
                "bookmark",
            ),
        ],
        credentials: collection_links(base_url, "credentials"),
    };
    let mut response = json_response(StatusCode::OK, encode(&document), request_id);
    add_version_headers(response.headers_mut(), version);
    response
}
