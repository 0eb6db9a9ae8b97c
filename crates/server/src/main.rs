//! `magnumd`: the magnum-rs service.

fn main() -> std::process::ExitCode {
    magnumd::cli::main_with_drivers(Vec::new())
}
