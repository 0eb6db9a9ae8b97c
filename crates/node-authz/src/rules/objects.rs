//! Volume, network, secret and config creation bodies.

use crate::fields;
use crate::json::{Json, Object};
use crate::refusal::{not_allowed, quoted, Refusal};
use crate::rules::container::expect_object;

/// `POST /volumes/create`: the local driver without options. Its options `type`, `device` and
/// `o=bind` mount any node path as the volume (`docker volume create --opt o=bind …`).
pub(crate) fn check_volume_create(body: &Json) -> Result<(), Refusal> {
    let volume = expect_object(body, "the volume create body")?;
    let driver = fields::string(volume, "Driver", "Driver")?;
    if !matches!(driver, None | Some("" | "local")) {
        return Err(not_allowed(
            &format!("volume driver {} is", quoted(driver.unwrap_or(""))),
            "Driver / docker volume create --driver; only the local driver is",
        ));
    }
    if !fields::is_unset(volume, "DriverOpts") {
        return Err(not_allowed(
            "volume driver options are",
            "DriverOpts / docker volume create --opt; they can mount node paths (o=bind, device=…)",
        ));
    }
    Ok(())
}

/// Network drivers that stay inside the node's network namespace or the cluster's overlay.
/// macvlan and ipvlan would put containers directly on the node's uplink; `host` is the
/// node's own namespace; anything else would be a plugin.
const ALLOWED_NETWORK_DRIVERS: [&str; 4] = ["", "bridge", "overlay", "null"];

/// `POST /networks/create`. `ConfigFrom` is allowed: it only copies IPAM settings and driver
/// options from a config-only network, which passed this same check when it was created, and
/// the driver is still the one named (and checked) here.
pub(crate) fn check_network_create(body: &Json) -> Result<(), Refusal> {
    let network = expect_object(body, "the network create body")?;
    let driver = fields::string(network, "Driver", "Driver")?.unwrap_or("");
    if !ALLOWED_NETWORK_DRIVERS.contains(&driver) {
        return Err(not_allowed(
            &format!("network driver {} is", quoted(driver)),
            "Driver / docker network create --driver; use bridge or overlay",
        ));
    }
    if let Some(ipam) = fields::object(network, "IPAM", "IPAM")? {
        let ipam_driver = fields::string(ipam, "Driver", "IPAM.Driver")?;
        if !matches!(ipam_driver, None | Some("" | "default")) {
            return Err(not_allowed(
                &format!("IPAM driver {} is", quoted(ipam_driver.unwrap_or(""))),
                "IPAM.Driver / docker network create --ipam-driver; only the default one is",
            ));
        }
    }
    Ok(())
}

/// `POST /secrets/create` and `/secrets/{id}/update`: secret drivers are plugins.
pub(crate) fn check_secret_spec(body: &Json) -> Result<(), Refusal> {
    let spec = expect_object(body, "the secret body")?;
    check_no_driver(spec, "Driver / docker secret create --driver")?;
    check_templating(spec, "docker secret create --template-driver")
}

/// `POST /configs/create` and `/configs/{id}/update`. dockerd 20.10 has no config drivers;
/// a `Driver` is refused anyway so a newer daemon cannot be handed one.
pub(crate) fn check_config_spec(body: &Json) -> Result<(), Refusal> {
    let spec = expect_object(body, "the config body")?;
    check_no_driver(spec, "Driver")?;
    check_templating(spec, "docker config create --template-driver")
}

fn check_no_driver(spec: &Object, option: &str) -> Result<(), Refusal> {
    if let Some(driver) = fields::object(spec, "Driver", "Driver")? {
        let name = fields::string(driver, "Name", "Driver.Name")?;
        if !matches!(name, None | Some("")) || !fields::is_unset(driver, "Options") {
            return Err(not_allowed("secret and config drivers are", option));
        }
    }
    Ok(())
}

/// Templating runs inside dockerd; only the built-in `golang` engine is not a plugin.
fn check_templating(spec: &Object, flag: &str) -> Result<(), Refusal> {
    if let Some(templating) = fields::object(spec, "Templating", "Templating")? {
        let name = fields::string(templating, "Name", "Templating.Name")?;
        if !matches!(name, None | Some("" | "golang")) || !fields::is_unset(templating, "Options") {
            return Err(not_allowed(
                &format!("template driver {} is", quoted(name.unwrap_or(""))),
                &format!("Templating / {flag}; only golang is"),
            ));
        }
    }
    Ok(())
}
