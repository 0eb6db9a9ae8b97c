//! The `capi` driver: a Magnum cluster becomes Cluster API objects on a management Kubernetes
//! cluster, where CAPI and CAPO build the machines, load balancers and control plane.
//!
//! The translation is pure and tested without any server: [`schema`] checks objects against
//! the structural OpenAPI schemas of the CRDs (and ClusterClass variable values against the
//! class's own variable schemas), the way kube-apiserver does with `fieldValidation=Strict`.

pub mod addons;
pub mod cache;
pub mod catalog;
pub mod class;
pub mod config;
pub mod driver;
pub mod lookup;
pub mod management;
pub mod names;
pub mod openstack;
pub mod render;
pub mod rotation;
pub mod schema;
pub mod settings;
pub mod status;
