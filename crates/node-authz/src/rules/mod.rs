//! The body rules, one module per kind of request, and the checks they share.

pub(crate) mod container;
pub(crate) mod objects;
pub(crate) mod swarm;

use crate::fields;
use crate::json::{Json, Object};
use crate::refusal::{not_allowed, quoted, Refusal};

/// Docker's default capability set (oci/caps/defaults.go in moby v20.10): adding one of these
/// back (after a `--cap-drop`) gives nothing the default container lacks.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Log drivers that only write under /var/lib/docker. The others open connections or sockets
/// (syslog, gelf, fluentd, journald…) or are plugins.
const LOCAL_LOG_DRIVERS: [&str; 3] = ["json-file", "local", "none"];

/// Resource limits that raise the container's scheduling priority. runc sets rlimits from the
/// host's root before it enters the container's user namespace, so the userns-remap does not
/// cap them: `--ulimit rtprio=99:99` then `chrt -f 99` (or a large `rttime`) gives a
/// container real-time scheduling that can starve the host, and `nice` lets it take nice
/// values down to -20, ahead of the host's own processes.
const SCHEDULING_RLIMITS: [&str; 3] = ["rtprio", "rttime", "nice"];

/// A `Ulimits` list (container create and update, service `ContainerSpec`): no scheduling
/// rlimit; every other one (nofile, nproc, core, memlock, stack…) stays allowed.
///
/// dockerd names the rlimit `"RLIMIT_" + strings.ToUpper(Name)` (daemon/oci_linux.go), so names
/// match ignoring ASCII case; Go upper-cases with Unicode rules (`ı` becomes `I`, so `rtprıo`
/// would be RLIMIT_RTPRIO), so a name that is not ASCII is refused as well.
pub(crate) fn check_ulimits(parent: &Object, label: &str) -> Result<(), Refusal> {
    for ulimit in fields::array(parent, "Ulimits", label)? {
        // A null entry decodes to a nil pointer, which dockerd's rlimit code dereferences.
        let Json::Object(ulimit) = ulimit else {
            return Err(Refusal::new(format!(
                "{label} has an unexpected JSON type (expected an array of objects)"
            )));
        };
        let name = fields::string(ulimit, "Name", &format!("{label}.Name"))?.unwrap_or("");
        if !name.is_ascii() {
            return Err(not_allowed(
                "ulimit names that are not ASCII are",
                &format!(
                    "{label} {}; dockerd upper-cases them by Unicode rules, ı becoming I",
                    quoted(name)
                ),
            ));
        }
        if let Some(rlimit) = SCHEDULING_RLIMITS
            .iter()
            .find(|rlimit| rlimit.eq_ignore_ascii_case(name))
        {
            return Err(not_allowed(
                "real-time and nice limits are",
                &format!("{label} {} / --ulimit {rlimit}=…", quoted(name)),
            ));
        }
    }
    Ok(())
}

/// Refuses any capability outside Docker's default set. dockerd upper-cases names and adds a
/// missing `CAP_` prefix; we compare the same way, so `cap_sys_admin` is `SYS_ADMIN`. `ALL`
/// and unknown names are refused like any other.
pub(crate) fn check_added_capabilities(capabilities: &[&str], option: &str) -> Result<(), Refusal> {
    for capability in capabilities {
        let upper = capability.to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !DEFAULT_CAPABILITIES.contains(&name) {
            return Err(not_allowed(
                &format!("adding capability {} is", quoted(capability)),
                &format!("{option}; only Docker's default capabilities may be added"),
            ));
        }
    }
    Ok(())
}

/// A log driver name: empty (the daemon default, json-file) or a local driver.
pub(crate) fn check_log_driver(driver: Option<&str>, option: &str) -> Result<(), Refusal> {
    match driver {
        None | Some("") => Ok(()),
        Some(name) if LOCAL_LOG_DRIVERS.contains(&name) => Ok(()),
        Some(name) => Err(not_allowed(
            &format!("log driver {} is", quoted(name)),
            &format!("{option}; use json-file, local or none"),
        )),
    }
}

/// A `Driver` object (`{"Name": …, "Options": {…}}`) for a log driver.
pub(crate) fn check_log_driver_object(
    parent: &Object,
    name: &str,
    label: &str,
    flag: &str,
) -> Result<(), Refusal> {
    if let Some(driver) = fields::object(parent, name, label)? {
        let driver_label = format!("{label}.Name");
        let driver_name = fields::string(driver, "Name", &driver_label)?;
        check_log_driver(driver_name, &format!("{driver_label} / {flag}"))?;
    }
    Ok(())
}

/// The local volume driver's name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`): no `/`, so never a path.
pub(crate) fn is_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One entry of `Mounts` (containers) or `ContainerSpec.Mounts` (services): only named volumes
/// without driver options, and tmpfs. A bind mount of any path is refused: a plugin cannot see
/// symlinks planted under an allowed prefix (spike bypass 6).
pub(crate) fn check_mount(mount: &Json, label: &str) -> Result<(), Refusal> {
    let Json::Object(mount) = mount else {
        return Err(Refusal::new(format!(
            "{label} has an unexpected JSON type (expected an array of objects)"
        )));
    };
    let mount_type = fields::string(mount, "Type", &format!("{label}.Type"))?;
    match mount_type {
        Some("tmpfs") => Ok(()),
        Some("volume") => check_volume_mount(mount, label),
        Some("bind") => Err(not_allowed(
            "bind mounts are",
            &format!("{label} Type=bind / --mount type=bind; use type=volume or type=tmpfs"),
        )),
        other => Err(not_allowed(
            &format!("mount type {} is", quoted(other.unwrap_or(""))),
            &format!("{label} Type / --mount type=…; use type=volume or type=tmpfs"),
        )),
    }
}

fn check_volume_mount(mount: &Object, label: &str) -> Result<(), Refusal> {
    if let Some(source) = fields::string(mount, "Source", &format!("{label}.Source"))? {
        if !source.is_empty() && !is_volume_name(source) {
            return Err(not_allowed(
                &format!("volume source {} is", quoted(source)),
                &format!("{label} Source / --mount source=…; give a volume name"),
            ));
        }
    }
    let options_label = format!("{label}.VolumeOptions");
    if let Some(volume_options) = fields::object(mount, "VolumeOptions", &options_label)? {
        let driver_label = format!("{options_label}.DriverConfig");
        if let Some(driver_config) = fields::object(volume_options, "DriverConfig", &driver_label)?
        {
            check_volume_driver_config(driver_config, &driver_label)?;
        }
    }
    Ok(())
}

/// A volume's driver config must name no driver but `local` and carry no options: local driver
/// options `type`, `device` and `o=bind` mount any node path into the volume.
fn check_volume_driver_config(driver_config: &Object, label: &str) -> Result<(), Refusal> {
    let driver = fields::string(driver_config, "Name", &format!("{label}.Name"))?;
    if !matches!(driver, None | Some("" | "local")) || !fields::is_unset(driver_config, "Options") {
        return Err(not_allowed(
            "volume drivers and volume driver options are",
            &format!("{label} / --mount volume-driver=…,volume-opt=…"),
        ));
    }
    Ok(())
}
