//! `coe` with Keystone, as in a cloud: the real test Keystone of `scripts/keystone start`
//! (magnum-rs registered in its catalog), logins from the `OS_*` variables and from a
//! clouds.yaml cloud, no endpoint given.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use magnum_driver::Driver;
use magnum_test_support::scripted::ScriptedDriver;
use serde_json::Value;

fn fixture() -> Value {
    magnum_test_support::keystone_fixture()
}

/// How a `coe` run logs in.
enum Login<'a> {
    Variables(&'a str),
    Cloud { name: &'a str, directory: &'a Path },
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn coe(fixture: &Value, login: Login<'_>, arguments: &[&str]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coe"));
    command
        .args(arguments)
        .env_remove("MAGNUM_URL")
        .env_remove("OS_CLOUD");
    for (name, _) in std::env::vars() {
        if name.starts_with("OS_") {
            command.env_remove(name);
        }
    }
    match login {
        Login::Variables(user) => {
            let person = &fixture["users"][user];
            command
                .env("OS_AUTH_URL", fixture["auth_url"].as_str().unwrap())
                .env("OS_USERNAME", user)
                .env("OS_PASSWORD", person["password"].as_str().unwrap())
                .env("OS_PROJECT_NAME", person["project"].as_str().unwrap())
                .env("OS_USER_DOMAIN_NAME", "Default")
                .env("OS_PROJECT_DOMAIN_NAME", "Default");
        }
        Login::Cloud { name, directory } => {
            command.env("OS_CLOUD", name).current_dir(directory);
        }
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ok(fixture: &Value, login: Login<'_>, arguments: &[&str]) -> Outcome {
    let outcome = coe(fixture, login, arguments).await;
    assert_eq!(
        outcome.code, 0,
        "{arguments:?}: {}{}",
        outcome.stdout, outcome.stderr
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coe_logs_in_with_os_variables_or_a_clouds_yaml_cloud_and_finds_magnum_in_the_catalog() {
    let fixture = fixture();
    let state = tempfile::tempdir().unwrap();
    let mut config = magnumd::Config::default();
    let url = fixture["magnum_url"].as_str().unwrap();
    config.server.listen = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    config.server.state_dir = Some(state.path().to_owned());
    config.conductor.poll_interval_ms = 100;
    config.auth.strategy = magnumd::config::AuthStrategy::Keystone;
    config.auth.keystone.auth_url = fixture["auth_url"].as_str().unwrap().to_owned();
    config.auth.keystone.credentials_file =
        Some(PathBuf::from(fixture["credentials_file"].as_str().unwrap()));
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(ScriptedDriver::new())];
    let running = magnumd::start_with_drivers(&config, magnumd::Role::All, &drivers)
        .await
        .unwrap();

    let alpha = Login::Variables("alpha-member");
    ok(
        &fixture,
        alpha,
        &[
            "cluster",
            "template",
            "create",
            "kt",
            "--coe",
            "swarm-mode",
            "--image",
            "scripted-image",
            "--flavor",
            "s.small",
            "--master-flavor",
            "s.small",
            "--external-network",
            "public",
        ],
    )
    .await;
    let created = ok(
        &fixture,
        Login::Variables("alpha-member"),
        &[
            "cluster",
            "create",
            "kc",
            "--cluster-template",
            "kt",
            "--node-count",
            "1",
            "--wait",
        ],
    )
    .await;
    assert!(
        created.stderr.contains("CREATE_COMPLETE"),
        "{}",
        created.stderr
    );
    let shown = ok(
        &fixture,
        Login::Variables("alpha-member"),
        &["cluster", "show", "kc", "-f", "json"],
    )
    .await;
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(
        shown["project_id"],
        fixture["users"]["alpha-member"]["project_id"]
    );

    // clouds.yaml in the working directory, secrets in secure.yaml beside it.
    let directory = tempfile::tempdir().unwrap();
    let auth_url = fixture["auth_url"].as_str().unwrap();
    std::fs::write(
        directory.path().join("clouds.yaml"),
        format!(
            "clouds:\n  alpha:\n    auth:\n      auth_url: {auth_url}\n      username: alpha-member\n      project_name: magnum-alpha\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n  beta:\n    auth:\n      auth_url: {auth_url}\n      username: beta-member\n      password: {}\n      project_name: magnum-beta\n",
            fixture["users"]["beta-member"]["password"].as_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(
        directory.path().join("secure.yaml"),
        format!(
            "clouds:\n  alpha:\n    auth:\n      password: '{}'\n",
            fixture["users"]["alpha-member"]["password"]
                .as_str()
                .unwrap()
        ),
    )
    .unwrap();
    let beta = || Login::Cloud {
        name: "beta",
        directory: directory.path(),
    };
    let listed = ok(&fixture, beta(), &["cluster", "list", "-f", "json"]).await;
    assert_eq!(listed.stdout.trim(), "[]");
    let refused = coe(&fixture, beta(), &["cluster", "show", "kc"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("could not be found"),
        "{}",
        refused.stderr
    );
    let refused = coe(&fixture, beta(), &["cluster", "delete", "kc"]).await;
    assert_ne!(refused.code, 0);

    let alpha = || Login::Cloud {
        name: "alpha",
        directory: directory.path(),
    };
    let listed = ok(
        &fixture,
        alpha(),
        &["cluster", "list", "-f", "value", "-c", "name"],
    )
    .await;
    assert_eq!(listed.stdout, "kc\n");
    let deleted = ok(&fixture, alpha(), &["cluster", "delete", "kc", "--wait"]).await;
    assert!(deleted.stderr.contains("deleted"), "{}", deleted.stderr);
    ok(&fixture, alpha(), &["cluster", "template", "delete", "kt"]).await;

    let unknown = coe(
        &fixture,
        Login::Cloud {
            name: "gamma",
            directory: directory.path(),
        },
        &["cluster", "list"],
    )
    .await;
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no cloud named \"gamma\""),
        "{}",
        unknown.stderr
    );
    running.stop().await;
}
