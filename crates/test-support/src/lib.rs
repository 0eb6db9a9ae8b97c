//! Throw-away databases on every backend, for tests that must run against real engines.
//!
//! PostgreSQL and MariaDB are reached through `MAGNUM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `MAGNUM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/mysql`); each test database gets a unique name starting with
//! `magnum_test_` and is dropped by [`TestDatabase::drop_database`]. `MAGNUM_TEST_BACKENDS`
//! (comma list of `sqlite,postgres,mysql`) narrows the engines; the default is all three.

pub mod catalog;
pub mod cloud;
pub mod kube_api;
pub mod octavia;
pub mod scripted;
pub mod webdriver;

use sqlx::{Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MySql,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
        }
    }
}

/// Engines the tests run against.
pub fn engines() -> Vec<Engine> {
    let selected = std::env::var("MAGNUM_TEST_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres,mysql".to_owned());
    selected
        .split(',')
        .filter_map(|name| match name.trim() {
            "sqlite" => Some(Engine::Sqlite),
            "postgres" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::MySql),
            _ => None,
        })
        .collect()
}

/// Whether the tests run against `engine` (`MAGNUM_TEST_BACKENDS`, default all three).
pub fn selected(engine: Engine) -> bool {
    engines().contains(&engine)
}

/// One test per engine for `async fn $name(engine: Engine)`: `$name::sqlite`,
/// `$name::postgres`, `$name::mysql`. A failure on one engine names it and does not keep the
/// others from running; an engine not selected passes without running.
#[macro_export]
macro_rules! engine_tests {
    ($name:ident) => {
        $crate::engine_tests!(@tests $name, [tokio::test]);
    };
    ($name:ident, multi_thread) => {
        $crate::engine_tests!(@tests $name, [tokio::test(flavor = "multi_thread", worker_threads = 4)]);
    };
    (@tests $name:ident, [$($attribute:tt)+]) => {
        mod $name {
            #[$($attribute)+]
            async fn sqlite() {
                if $crate::selected($crate::Engine::Sqlite) {
                    super::$name($crate::Engine::Sqlite).await;
                }
            }

            #[$($attribute)+]
            async fn postgres() {
                if $crate::selected($crate::Engine::Postgres) {
                    super::$name($crate::Engine::Postgres).await;
                }
            }

            #[$($attribute)+]
            async fn mysql() {
                if $crate::selected($crate::Engine::MySql) {
                    super::$name($crate::Engine::MySql).await;
                }
            }
        }
    };
}

fn postgres_admin_url() -> String {
    std::env::var("MAGNUM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn mysql_admin_url() -> String {
    std::env::var("MAGNUM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned())
}

fn with_database(admin_url: &str, database: &str) -> String {
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("database URLs end in /<database>");
    format!("{base}/{database}")
}

/// A fresh, empty database. Dropped by `drop_database`, or when the value goes without it
/// (a test that panicked): then from a thread of its own, so that no test leaves one behind.
pub struct TestDatabase {
    pub engine: Engine,
    pub url: String,
    name: String,
    _directory: Option<tempfile::TempDir>,
    dropped: bool,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped || self.engine == Engine::Sqlite {
            return;
        }
        let (engine, name) = (self.engine, std::mem::take(&mut self.name));
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(drop_named(engine, &name));
        })
        .join();
        if dropped.is_err() {
            eprintln!("a test database could not be dropped; scripts/test drops leftovers");
        }
    }
}

impl TestDatabase {
    pub async fn create(engine: Engine) -> Self {
        let name = format!("magnum_test_{}", uuid::Uuid::new_v4().simple());
        match engine {
            Engine::Sqlite => {
                let directory = tempfile::tempdir().expect("temporary directory");
                let url = format!(
                    "sqlite://{}",
                    directory.path().join("magnum.sqlite").display()
                );
                Self {
                    engine,
                    url,
                    name,
                    _directory: Some(directory),
                    dropped: false,
                }
            }
            Engine::Postgres => {
                let admin = postgres_admin_url();
                let mut connection = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|error| panic!("PostgreSQL at {admin}: {error}"));
                connection
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create PostgreSQL test database");
                Self {
                    engine,
                    url: with_database(&admin, &name),
                    name,
                    _directory: None,
                    dropped: false,
                }
            }
            Engine::MySql => {
                let admin = mysql_admin_url();
                let mut connection = sqlx::MySqlConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|error| panic!("MariaDB at {admin}: {error}"));
                connection
                    .execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str())
                    .await
                    .expect("create MariaDB test database");
                Self {
                    engine,
                    url: with_database(&admin, &name),
                    name,
                    _directory: None,
                    dropped: false,
                }
            }
        }
    }

    /// Drops the database; call once every connection to it is closed.
    pub async fn drop_database(mut self) {
        drop_named(self.engine, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_named(engine: Engine, name: &str) {
    match engine {
        Engine::Sqlite => {}
        Engine::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("PostgreSQL admin connection");
            connection
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .expect("drop PostgreSQL test database");
        }
        Engine::MySql => {
            let mut connection = sqlx::MySqlConnection::connect(&mysql_admin_url())
                .await
                .expect("MariaDB admin connection");
            connection
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await
                .expect("drop MariaDB test database");
        }
    }
}

/// The test Keystone that `scripts/keystone start` runs and describes (auth_url, users,
/// projects, magnum-rs's registered URL and credentials file): `MAGNUM_TEST_KEYSTONE_FIXTURE`,
/// else `.work/keystone/fixture.json` in the repository.
pub fn keystone_fixture() -> serde_json::Value {
    let path = std::env::var("MAGNUM_TEST_KEYSTONE_FIXTURE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.work/keystone/fixture.json")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "no test Keystone fixture at {} ({error}): run scripts/keystone start (scripts/test does)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the fixture is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(engine: Engine, name: &str) -> bool {
        let query = match engine {
            Engine::Postgres => {
                format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'")
            }
            _ => format!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}'"
            ),
        };
        let count: i64 = match engine {
            Engine::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&postgres_admin_url())
                    .await
                    .unwrap();
                sqlx::query_scalar(&query)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
            _ => {
                let mut connection = sqlx::MySqlConnection::connect(&mysql_admin_url())
                    .await
                    .unwrap();
                sqlx::query_scalar(&query)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
        };
        count > 0
    }

    /// What a test that panics does to its database: drops the value without
    /// `drop_database`. The database goes anyway.
    #[tokio::test]
    async fn a_database_left_by_a_panicking_test_is_dropped() {
        for engine in [Engine::Postgres, Engine::MySql] {
            if !selected(engine) {
                continue;
            }
            let database = TestDatabase::create(engine).await;
            let name = database.name.clone();
            assert!(exists(engine, &name).await, "{name} was created");
            let panicked = tokio::spawn(async move {
                let _held = database;
                panic!("a failing test");
            })
            .await;
            assert!(panicked.is_err());
            assert!(!exists(engine, &name).await, "{name} is dropped");
        }
    }
}
