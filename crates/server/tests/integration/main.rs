//! Black-box tests: the real magnumd on port 0 with a fresh database of each engine, driven
//! over HTTP, by the real `openstack` client, and as a process.

mod binary;
mod capi_driver;
mod certificates;
mod clusters;
mod compat;
mod compat_clusters;
mod dashboard;
mod dashboard_browser;
mod events;
mod fuzz;
mod hardening;
mod horizon_bodies;
mod input_bounds;
mod keystone;
mod local_driver;
mod metrics;
mod openapi;
mod openstack_cli;
mod sandbox;
mod support;
mod templates;
