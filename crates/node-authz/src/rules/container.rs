//! Container bodies: create, update, exec and start.

use crate::fields;
use crate::json::{Json, Object};
use crate::refusal::{not_allowed, quoted, Refusal};
use crate::rules::{
    check_added_capabilities, check_log_driver, check_mount, check_ulimits, is_volume_name,
};

/// `POST /containers/create`.
///
/// dockerd decodes this body into `ContainerConfigWrapper` (runconfig/config_unix.go), which
/// embeds `*container.HostConfig` besides the `HostConfig` object: every HostConfig field is
/// also read at the top level (used when there is no `HostConfig` object, and `VolumeDriver`
/// even when there is). So the HostConfig rules run on both.
pub(crate) fn check_create(body: &Json) -> Result<(), Refusal> {
    let top_level = expect_object(body, "the container create body")?;
    check_host_config(top_level, "")?;
    if let Some(host_config) = fields::object(top_level, "HostConfig", "HostConfig")? {
        check_host_config(host_config, "HostConfig.")?;
    }
    Ok(())
}

/// `POST /containers/{id}/update`: `UpdateConfig` is `Resources` (at the top level) plus a
/// restart policy; the resource fields that reach the node's devices, cgroups and scheduler
/// are refused.
pub(crate) fn check_update(body: &Json) -> Result<(), Refusal> {
    let update = expect_object(body, "the container update body")?;
    check_resources(update, "")
}

/// `POST /containers/{id}/exec`.
pub(crate) fn check_exec(body: &Json) -> Result<(), Refusal> {
    let exec = expect_object(body, "the exec body")?;
    if fields::flag(exec, "Privileged", "Privileged")? {
        return Err(not_allowed(
            "privileged exec is",
            "Privileged / docker exec --privileged",
        ));
    }
    Ok(())
}

/// `POST /containers/{id}/start`: API 1.24+ takes no body (dockerd refuses one over 7 bytes);
/// whatever was forwarded must be nothing more than `null` or `{}`.
pub(crate) fn check_start(body: &Json) -> Result<(), Refusal> {
    let empty = match body {
        Json::Null => true,
        Json::Object(object) => object.is_empty(),
        _ => false,
    };
    if empty {
        Ok(())
    } else {
        Err(not_allowed(
            "a request body on container start is",
            "HostConfig on POST /containers/{id}/start",
        ))
    }
}

pub(crate) fn expect_object<'a>(body: &'a Json, what: &str) -> Result<&'a Object, Refusal> {
    match body {
        Json::Object(object) => Ok(object),
        _ => Err(Refusal::new(format!("{what} must be a JSON object"))),
    }
}

/// The HostConfig rules. `prefix` is `"HostConfig."` for the nested object and `""` for the
/// fields dockerd also reads at the top level of the create body.
fn check_host_config(host_config: &Object, prefix: &str) -> Result<(), Refusal> {
    let label = |field: &str| format!("{prefix}{field}");

    if fields::flag(host_config, "Privileged", &label("Privileged"))? {
        return Err(not_allowed(
            "privileged containers are",
            &format!("{} / --privileged", label("Privileged")),
        ));
    }

    check_namespace_modes(host_config, prefix)?;

    let capabilities = fields::string_or_strings(host_config, "CapAdd", &label("CapAdd"))?;
    check_added_capabilities(&capabilities, &format!("{} / --cap-add", label("CapAdd")))?;

    check_resources(host_config, prefix)?;
    check_security_options(host_config, prefix)?;

    // Any value, even an empty list, replaces dockerd's default set of masked and read-only
    // /proc and /sys paths; `--security-opt systempaths=unconfined` sends empty lists.
    for field in ["MaskedPaths", "ReadonlyPaths"] {
        if host_config.field(field).is_some() {
            return Err(not_allowed(
                "changing the masked and read-only /proc paths is",
                &format!("{} / --security-opt systempaths=unconfined", label(field)),
            ));
        }
    }

    for bind in fields::strings(host_config, "Binds", &label("Binds"))? {
        check_bind(bind, &label("Binds"))?;
    }
    for mount in fields::array(host_config, "Mounts", &label("Mounts"))? {
        check_mount(mount, &label("Mounts"))?;
    }

    let volume_driver = fields::string(host_config, "VolumeDriver", &label("VolumeDriver"))?;
    if !matches!(volume_driver, None | Some("" | "local")) {
        return Err(not_allowed(
            &format!("volume driver {} is", quoted(volume_driver.unwrap_or(""))),
            &format!(
                "{} / --volume-driver; only the local driver is",
                label("VolumeDriver")
            ),
        ));
    }

    let log_config_label = label("LogConfig");
    if let Some(log_config) = fields::object(host_config, "LogConfig", &log_config_label)? {
        let type_label = format!("{log_config_label}.Type");
        let log_driver = fields::string(log_config, "Type", &type_label)?;
        check_log_driver(log_driver, &format!("{type_label} / --log-driver"))?;
    }

    if fields::is_negative_number(host_config, "OomScoreAdj", &label("OomScoreAdj"))? {
        return Err(not_allowed(
            "a negative OOM score adjustment is",
            &format!("{} / --oom-score-adj", label("OomScoreAdj")),
        ));
    }

    let runtime = fields::string(host_config, "Runtime", &label("Runtime"))?;
    if !matches!(runtime, None | Some("" | "runc")) {
        return Err(not_allowed(
            &format!("runtime {} is", quoted(runtime.unwrap_or(""))),
            &format!("{} / --runtime; only runc is", label("Runtime")),
        ));
    }
    Ok(())
}

/// `host` namespace modes. dockerd compares with `== "host"`; we also refuse other spellings
/// of it (`HOST`, `host:…`), which dockerd would reject anyway. Any `UsernsMode` is refused:
/// `--userns=host` is the opt-out of the userns-remap the sandbox relies on, and re-enables
/// `--privileged`, `--pid=host` and `--network=host` under dockerd's own checks.
fn check_namespace_modes(host_config: &Object, prefix: &str) -> Result<(), Refusal> {
    const HOST_MODES: [(&str, &str, &str); 5] = [
        (
            "PidMode",
            "sharing the node's PID namespace is",
            "--pid=host",
        ),
        (
            "IpcMode",
            "sharing the node's IPC namespace is",
            "--ipc=host",
        ),
        (
            "UTSMode",
            "sharing the node's UTS namespace is",
            "--uts=host",
        ),
        (
            "CgroupnsMode",
            "sharing the node's cgroup namespace is",
            "--cgroupns=host",
        ),
        (
            "NetworkMode",
            "sharing the node's network namespace is",
            "--network=host",
        ),
    ];
    for (field, what, flag) in HOST_MODES {
        let label = format!("{prefix}{field}");
        if let Some(mode) = fields::string(host_config, field, &label)? {
            let kind = mode.split(':').next().unwrap_or(mode);
            if kind.eq_ignore_ascii_case("host") {
                return Err(not_allowed(what, &format!("{label}=host / {flag}")));
            }
        }
    }
    let label = format!("{prefix}UsernsMode");
    if let Some(mode) = fields::string(host_config, "UsernsMode", &label)? {
        if !mode.is_empty() {
            return Err(not_allowed(
                "choosing the user namespace is",
                &format!("{label}={} / --userns", quoted(mode)),
            ));
        }
    }
    Ok(())
}

/// `Resources` fields (in HostConfig and in the update body) that hand the container node
/// devices, move it out of the node's cgroup or raise its scheduling priority.
fn check_resources(resources: &Object, prefix: &str) -> Result<(), Refusal> {
    const DEVICE_FIELDS: [(&str, &str, &str); 3] = [
        ("Devices", "node devices are", "--device"),
        (
            "DeviceCgroupRules",
            "device cgroup rules are",
            "--device-cgroup-rule",
        ),
        ("DeviceRequests", "device requests are", "--gpus"),
    ];
    for (field, what, flag) in DEVICE_FIELDS {
        if !fields::is_unset(resources, field) {
            return Err(not_allowed(what, &format!("{prefix}{field} / {flag}")));
        }
    }
    if !fields::is_unset(resources, "CgroupParent") {
        return Err(not_allowed(
            "choosing the cgroup parent is",
            &format!("{prefix}CgroupParent / --cgroup-parent"),
        ));
    }
    check_ulimits(resources, &format!("{prefix}Ulimits"))
}

/// Only `no-new-privileges` (optionally `=bool` or `:bool`, the forms dockerd parses in
/// daemon/daemon_unix.go parseSecurityOpt). Every `seccomp=…` is refused, a custom profile
/// as much as `unconfined`; so are `apparmor=…` and `label=…` / `disable`.
fn check_security_options(host_config: &Object, prefix: &str) -> Result<(), Refusal> {
    let label = format!("{prefix}SecurityOpt");
    for option in fields::strings(host_config, "SecurityOpt", &label)? {
        if is_no_new_privileges(option) {
            continue;
        }
        let name = option.split(['=', ':']).next().unwrap_or(option);
        let shown = if option.chars().count() <= 40 {
            quoted(option)
        } else {
            format!("{}…", quoted(name))
        };
        return Err(not_allowed(
            &format!("security option {} is", quoted(name)),
            &format!("{label} {shown} / --security-opt; only no-new-privileges may be set"),
        ));
    }
    Ok(())
}

fn is_no_new_privileges(option: &str) -> bool {
    const GO_BOOLEANS: [&str; 12] = [
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
    ];
    match option.strip_prefix("no-new-privileges") {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('=')
            .or_else(|| rest.strip_prefix(':'))
            .is_some_and(|value| GO_BOOLEANS.contains(&value)),
        None => false,
    }
}

/// `Binds` entries: only `VOLUME:/path[:options]`. The source is the part before the first `:`;
/// anything with a `/` (or not a volume name at all, like `.` or `..`) would be a node path.
fn check_bind(bind: &str, label: &str) -> Result<(), Refusal> {
    let source = bind.split(':').next().unwrap_or(bind);
    if is_volume_name(source) && bind.contains(':') {
        return Ok(());
    }
    Err(not_allowed(
        "host bind mounts are",
        &format!(
            "{label} {} / -v HOST_PATH:…; use a named volume: -v NAME:/path",
            quoted(bind)
        ),
    ))
}
