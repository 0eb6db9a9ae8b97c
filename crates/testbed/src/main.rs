//! `magnumd-testbed`: magnumd with the scripted driver enabled besides the configured ones.
//! Only tests use it: the scripted driver builds nothing.
//!
//! `MAGNUM_TESTBED_SCRIPTED_CLOUD`, when set, is the JSON of a
//! [`magnum_test_support::scripted::ScriptedCloud`]: the references of a Glance/Nova/Neutron
//! stand-in the driver then accepts instead of its fixed ones.
//!
//! `MAGNUM_TESTBED_HOLD_DELETES=1` makes the scripted driver hold every delete once it
//! reported removing the nodes (see [`ScriptedDriver::holding_deletes`]): a test kills the
//! process there, knowing the delete was running.

use std::sync::Arc;

use magnum_test_support::scripted::{ScriptedCloud, ScriptedDriver};

const CLOUD_VARIABLE: &str = "MAGNUM_TESTBED_SCRIPTED_CLOUD";
const HOLD_DELETES_VARIABLE: &str = "MAGNUM_TESTBED_HOLD_DELETES";

fn main() -> std::process::ExitCode {
    let cloud = match std::env::var(CLOUD_VARIABLE) {
        Ok(text) => match serde_json::from_str(&text)
            .map_err(|error| error.to_string())
            .and_then(|value| ScriptedCloud::from_json(&value))
        {
            Ok(cloud) => Some(cloud),
            Err(error) => {
                eprintln!("magnumd-testbed: {CLOUD_VARIABLE}: {error}");
                return std::process::ExitCode::FAILURE;
            }
        },
        Err(_) => None,
    };
    let mut driver = ScriptedDriver::with_cloud(cloud);
    if std::env::var(HOLD_DELETES_VARIABLE).is_ok_and(|value| value == "1") {
        driver = driver.holding_deletes();
    }
    magnumd::cli::main_with_drivers(vec![Arc::new(driver)])
}
