//! `magnum-node-authz --socket PATH`: the plugin process.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::server::{log_line, serve, ServeLimits};

const USAGE: &str = "\
usage: magnum-node-authz --socket PATH

Serves the Docker authorization plugin of a magnum-rs local cluster node on the unix
socket PATH (dockerd, started with --authorization-plugin=magnum-authz, looks for it at
/run/docker/plugins/magnum-authz.sock). A stale socket file at PATH is replaced; the new
one is made mode 0600. Refused requests are logged to stderr, one line each, at most 20
per 10 s (then one line counts those not logged).

options:
  --socket PATH   the unix socket to listen on
  -h, --help      print this help
";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Serve { socket: PathBuf },
}

/// Runs the plugin with the process arguments. Exit codes: 0 after `--help`, 2 for bad
/// arguments, 1 when the socket cannot be set up or serving fails.
pub fn main_from_args() -> ExitCode {
    let arguments: Vec<OsString> = std::env::args_os().skip(1).collect();
    match parse_arguments(&arguments) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Serve { socket }) => run(&socket),
        Err(message) => {
            eprint!("magnum-node-authz: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse_arguments(arguments: &[OsString]) -> Result<Command, String> {
    let mut socket: Option<PathBuf> = None;
    let mut remaining = arguments.iter();
    while let Some(argument) = remaining.next() {
        let value = match argument.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("--socket") => remaining
                .next()
                .cloned()
                .ok_or_else(|| "--socket needs a PATH".to_owned())?,
            Some(text) if text.starts_with("--socket=") => {
                OsString::from(&text["--socket=".len()..])
            }
            _ => {
                return Err(format!(
                    "unexpected argument {}",
                    argument.to_string_lossy()
                ))
            }
        };
        if value.is_empty() {
            return Err("--socket needs a non-empty PATH".to_owned());
        }
        if socket.replace(PathBuf::from(value)).is_some() {
            return Err("--socket given more than once".to_owned());
        }
    }
    socket
        .map(|socket| Command::Serve { socket })
        .ok_or_else(|| "--socket PATH is required".to_owned())
}

fn run(socket: &Path) -> ExitCode {
    let listener = match bind_socket(socket) {
        Ok(listener) => listener,
        Err(message) => {
            eprintln!("magnum-node-authz: {message}");
            return ExitCode::FAILURE;
        }
    };
    let label = socket.display().to_string();
    log_line(&label, "serving the magnum-authz authorization plugin");
    match serve(listener, ServeLimits::default()) {
        Ok(never) => match never {},
        Err(error) => {
            log_line(&label, &format!("cannot accept connections: {error}"));
            ExitCode::FAILURE
        }
    }
}

/// Binds `path`, replacing a stale socket file (but not a live one, nor any other file), and
/// makes it mode 0600: only root (dockerd) may talk to the plugin.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!("{shown} is in use by a running plugin"));
            }
            fs::remove_file(path)
                .map_err(|error| format!("cannot remove the stale socket {shown}: {error}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket; not replacing it"
            ))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(format!("cannot inspect {shown}: {error}")),
    }
    let listener =
        UnixListener::bind(path).map_err(|error| format!("cannot listen on {shown}: {error}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|error| format!("cannot make {shown} mode 0600: {error}"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_socket_and_help() {
        let expected = Command::Serve {
            socket: PathBuf::from("/run/x.sock"),
        };
        assert_eq!(
            parse_arguments(&arguments(&["--socket", "/run/x.sock"])),
            Ok(expected)
        );
        let expected = Command::Serve {
            socket: PathBuf::from("/run/y.sock"),
        };
        assert_eq!(
            parse_arguments(&arguments(&["--socket=/run/y.sock"])),
            Ok(expected)
        );
        assert_eq!(parse_arguments(&arguments(&["--help"])), Ok(Command::Help));
        assert_eq!(
            parse_arguments(&arguments(&["--socket", "a", "-h"])),
            Ok(Command::Help)
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        for list in [
            &[][..],
            &["--socket"][..],
            &["--socket="][..],
            &["--socket", "a", "--socket", "b"][..],
            &["--port", "1"][..],
            &["a.sock"][..],
        ] {
            assert!(
                parse_arguments(&arguments(list)).is_err(),
                "{list:?} was accepted"
            );
        }
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_restricts_its_mode() {
        let path = crate::tests::temporary_socket_path("cli-stale");
        drop(UnixListener::bind(&path).unwrap());
        assert!(
            path.exists(),
            "the stale socket file stays after its listener is gone"
        );

        let listener = bind_socket(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A live socket is not taken over.
        let refused = bind_socket(&path).unwrap_err();
        assert!(refused.contains("in use"), "{refused}");
        drop(listener);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bind_does_not_replace_other_files() {
        let path = crate::tests::temporary_socket_path("cli-file");
        fs::write(&path, b"not a socket").unwrap();
        let refused = bind_socket(&path).unwrap_err();
        assert!(refused.contains("not a socket"), "{refused}");
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
        fs::remove_file(&path).unwrap();
    }
}
