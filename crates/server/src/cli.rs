//! The `magnumd` command line, shared by the service binary and by embedders that add
//! drivers of their own (the test bed).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use magnum_driver::Driver;

use crate::{Config, Overrides, Role};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "magnumd",
    version,
    about = "magnum-rs: the OpenStack Magnum (container infrastructure) service",
    long_about = "magnum-rs: the OpenStack Magnum (container infrastructure) service.\n\n\
        Configuration is read from built-in defaults, then the TOML file given with --config, \
        then MAGNUM_<SECTION>__<KEY> environment variables (for example \
        MAGNUM_DATABASE__URL=postgres://magnum@db/magnum), then the flags below. An unknown key \
        or a bad value stops start-up with a message naming it.\n\n\
        In an OpenStack cloud, set auth.strategy = \"keystone\" with [auth.keystone] auth_url and \
        credentials_file, and register magnumd in Keystone's catalog as service `magnum`, type \
        `container-infra`, endpoint `http://HOST:9511/v1` (scripts/keystone-register does it: see \
        docs/CONFIGURATION.md, section Keystone)."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address the API listens on [default: 127.0.0.1:9511].
    #[arg(long, global = true, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Directory for magnumd's state, including the embedded SQLite database.
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Database: sqlite://PATH, postgres://USER@HOST/DB or mysql://USER@HOST/DB.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Serve noauth on a non-loopback address anyway (anyone reaching it acts as admin).
    #[arg(long, global = true)]
    allow_insecure_noauth: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and a conductor in one process (the embedded default: SQLite, local
    /// driver, noauth). Applies pending migrations first.
    ///
    /// Example: magnumd all --state-dir /var/lib/magnum-rs
    All,
    /// Run only the API (scale out over PostgreSQL or MariaDB; run `db upgrade` first).
    ///
    /// Example: magnumd api --database-url postgres://magnum@db/magnum --listen 10.0.0.5:9511
    Api,
    /// Run only a conductor (scale out over PostgreSQL or MariaDB; run `db upgrade` first).
    ///
    /// Example: magnumd conductor --database-url postgres://magnum@db/magnum
    Conductor,
    /// Manage the database schema.
    Db(DbArgs),
}

#[derive(Args)]
struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply every pending migration (forward-only, versioned).
    ///
    /// Example: magnumd db upgrade --database-url mysql://magnum@db/magnum
    Upgrade,
    /// Show the migrations applied to the database and those pending.
    Version,
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what a script may read (the address).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn wait_for_shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn run(cli: Cli, extra_drivers: &[Arc<dyn Driver>]) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: cli.listen,
        state_dir: cli.state_dir,
        database_url: cli.database_url,
        allow_insecure_noauth: cli.allow_insecure_noauth,
    };
    let config = Config::load(cli.config.as_deref(), std::env::vars(), &overrides)?;
    init_logging(&config);
    let role = match cli.command {
        Command::All => Role::All,
        Command::Api => Role::Api,
        Command::Conductor => Role::Conductor,
        Command::Db(DbArgs { command }) => {
            let store = crate::open_store(&config).await?;
            match command {
                DbCommand::Upgrade => {
                    let applied = store.migrate().await.context("applying migrations")?;
                    if applied.is_empty() {
                        println!("database schema is current");
                    }
                    for migration in applied {
                        println!(
                            "applied migration {}: {}",
                            migration.version, migration.name
                        );
                    }
                }
                DbCommand::Version => {
                    let applied = store.applied_migrations().await?;
                    for migration in magnum_store::MIGRATIONS {
                        let state = if applied.iter().any(|done| done.version == migration.version)
                        {
                            "applied"
                        } else {
                            "pending"
                        };
                        println!("{:>4}  {state:<8} {}", migration.version, migration.name);
                    }
                }
            }
            store.close().await;
            return Ok(());
        }
    };
    let running = crate::start_with_drivers(&config, role, extra_drivers).await?;
    if let Some(address) = running.address {
        println!("magnumd listening on http://{address}/v1");
    }
    wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Parses the command line and runs it, with `extra_drivers` besides the configured ones.
#[tokio::main]
pub async fn main_with_drivers(extra_drivers: Vec<Arc<dyn Driver>>) -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli, &extra_drivers).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("magnumd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
