//! Swarm bodies: service specs and the swarm spec.
//!
//! Swarm tasks bypass node authorization: workers create task containers without asking
//! their plugin (verified in the spike). The manager's check of `services/create` and
//! `services/{id}/update` is therefore the only gate for everything a task container gets.

use crate::fields;
use crate::json::{Json, Object};
use crate::refusal::{not_allowed, quoted, Refusal};
use crate::rules::container::expect_object;
use crate::rules::{check_added_capabilities, check_log_driver_object, check_mount, check_ulimits};

/// `POST /services/create` and `POST /services/{id}/update` (a `ServiceSpec`).
pub(crate) fn check_service_spec(body: &Json) -> Result<(), Refusal> {
    let spec = expect_object(body, "the service spec")?;
    if let Some(task) = fields::object(spec, "TaskTemplate", "TaskTemplate")? {
        check_task_spec(task)?;
    }
    // The deprecated service-level network list is still honoured by dockerd 20.10.
    check_networks(spec, "Networks", "Networks")
}

fn check_task_spec(task: &Object) -> Result<(), Refusal> {
    // dockerd turns a plugin runtime into a managed plugin install on every node
    // (daemon/cluster/convert/service.go); `attachment` is internal to swarm.
    let runtime = fields::string(task, "Runtime", "TaskTemplate.Runtime")?;
    if !matches!(runtime, None | Some("" | "container")) {
        return Err(not_allowed(
            &format!("task runtime {} is", quoted(runtime.unwrap_or(""))),
            "TaskTemplate.Runtime; only container is",
        ));
    }
    if task.field("PluginSpec").is_some() {
        return Err(not_allowed(
            "plugin services are",
            "TaskTemplate.PluginSpec",
        ));
    }
    if let Some(container) = fields::object(task, "ContainerSpec", "TaskTemplate.ContainerSpec")? {
        check_container_spec(container)?;
    }
    check_log_driver_object(task, "LogDriver", "TaskTemplate.LogDriver", "--log-driver")?;
    check_networks(task, "Networks", "TaskTemplate.Networks")
}

fn check_container_spec(container: &Object) -> Result<(), Refusal> {
    const LABEL: &str = "TaskTemplate.ContainerSpec";

    for mount in fields::array(container, "Mounts", &format!("{LABEL}.Mounts"))? {
        check_mount(mount, &format!("{LABEL}.Mounts"))?;
    }

    let capabilities = fields::strings(
        container,
        "CapabilityAdd",
        &format!("{LABEL}.CapabilityAdd"),
    )?;
    check_added_capabilities(&capabilities, &format!("{LABEL}.CapabilityAdd / --cap-add"))?;
    // A full capability list named `Capabilities` existed briefly during API 1.41 development
    // (replaced by CapabilityAdd/CapabilityDrop before 20.10). No released daemon reads it;
    // one that did would replace the default set, so it is refused too.
    if !fields::is_unset(container, "Capabilities") {
        return Err(not_allowed(
            "a capability list is",
            &format!("{LABEL}.Capabilities; use CapabilityAdd with default capabilities only"),
        ));
    }

    // ContainerSpec.Ulimits exists from API 1.41 on (`docker service create --ulimit`).
    check_ulimits(container, &format!("{LABEL}.Ulimits"))?;

    if let Some(privileges) =
        fields::object(container, "Privileges", &format!("{LABEL}.Privileges"))?
    {
        check_privileges(privileges)?;
    }

    let isolation = fields::string(container, "Isolation", &format!("{LABEL}.Isolation"))?;
    if !matches!(isolation, None | Some("" | "default")) {
        return Err(not_allowed(
            &format!("isolation {} is", quoted(isolation.unwrap_or(""))),
            &format!("{LABEL}.Isolation / --isolation"),
        ));
    }

    // ContainerSpec.OomScoreAdj exists from API 1.46 on; refused like HostConfig.OomScoreAdj.
    if fields::is_negative_number(container, "OomScoreAdj", &format!("{LABEL}.OomScoreAdj"))? {
        return Err(not_allowed(
            "a negative OOM score adjustment is",
            &format!("{LABEL}.OomScoreAdj / --oom-score-adj"),
        ));
    }
    Ok(())
}

/// `Privileges` may only carry `NoNewPrivileges` and default seccomp / AppArmor modes. A
/// credential spec, an SELinux context (`Disable` turns labelling off), a seccomp profile or
/// mode, an AppArmor mode, or any key this plugin does not know is refused.
fn check_privileges(privileges: &Object) -> Result<(), Refusal> {
    const LABEL: &str = "TaskTemplate.ContainerSpec.Privileges";
    for (key, value) in privileges.iter() {
        let allowed = match key {
            "nonewprivileges" => matches!(value, Json::Null | Json::Bool(_)),
            "credentialspec" | "selinuxcontext" => matches!(value, Json::Null),
            "seccomp" | "apparmor" => is_default_mode(value),
            _ => false,
        };
        if !allowed {
            let field = match key {
                "credentialspec" => "CredentialSpec",
                "selinuxcontext" => "SELinuxContext",
                "seccomp" => "Seccomp",
                "apparmor" => "AppArmor",
                "nonewprivileges" => "NoNewPrivileges",
                other => other,
            };
            return Err(not_allowed(
                &format!("service privilege option {} is", quoted(field)),
                &format!("{LABEL}.{field}; only NoNewPrivileges may be set"),
            ));
        }
    }
    Ok(())
}

/// `null`, or `{"Mode": "default"}` (or an empty mode) with nothing else set.
fn is_default_mode(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::Object(options) => options.iter().all(|(key, value)| match key {
            "mode" => {
                matches!(value, Json::Null)
                    || matches!(value, Json::String(mode) if mode.is_empty() || mode == "default")
            }
            _ => value.is_empty_value(),
        }),
        _ => false,
    }
}

/// Attaching tasks to the predefined `host` network by name. The docker CLI sends network IDs,
/// which a plugin cannot resolve; for those, userns-remap makes dockerd refuse the task
/// ("cannot share the host's network namespace when user namespaces are enabled").
fn check_networks(parent: &Object, field: &str, label: &str) -> Result<(), Refusal> {
    for network in fields::array(parent, field, label)? {
        let Json::Object(network) = network else {
            return Err(Refusal::new(format!(
                "{label} has an unexpected JSON type (expected an array of objects)"
            )));
        };
        if let Some(target) = fields::string(network, "Target", &format!("{label}.Target"))? {
            if target.eq_ignore_ascii_case("host") {
                return Err(not_allowed(
                    "attaching services to the node's host network is",
                    &format!("{label} Target=host / --network host"),
                ));
            }
        }
    }
    Ok(())
}

/// `POST /swarm/init` (an `InitRequest` whose `Spec` is the swarm spec).
pub(crate) fn check_swarm_init(body: &Json) -> Result<(), Refusal> {
    let init = expect_object(body, "the swarm init body")?;
    if let Some(spec) = fields::object(init, "Spec", "Spec")? {
        check_swarm_spec(spec, "Spec.")?;
    }
    Ok(())
}

/// `POST /swarm/update` (the swarm spec itself).
pub(crate) fn check_swarm_update(body: &Json) -> Result<(), Refusal> {
    let spec = expect_object(body, "the swarm spec")?;
    check_swarm_spec(spec, "")
}

/// The cluster-wide default log driver applies to every task that names none.
fn check_swarm_spec(spec: &Object, prefix: &str) -> Result<(), Refusal> {
    let defaults_label = format!("{prefix}TaskDefaults");
    if let Some(task_defaults) = fields::object(spec, "TaskDefaults", &defaults_label)? {
        check_log_driver_object(
            task_defaults,
            "LogDriver",
            &format!("{defaults_label}.LogDriver"),
            "the swarm's default log driver",
        )?;
    }
    Ok(())
}
