//! `magnumd-testbed`: magnumd with the scripted driver enabled besides the configured ones.
//! Only tests use it: the scripted driver builds nothing.

use std::sync::Arc;

use magnum_test_support::scripted::ScriptedDriver;

fn main() -> std::process::ExitCode {
    magnumd::cli::main_with_drivers(vec![Arc::new(ScriptedDriver::new())])
}
