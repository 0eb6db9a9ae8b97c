//! The Docker authorization plugin of local-driver nodes (see crates/node-authz).

fn main() -> std::process::ExitCode {
    magnum_node_authz::main_from_args()
}
