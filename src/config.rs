//! Every setting troupe reads, from the environment, validated once at start-up.
//!
//! A bad value is a [`ConfigError`] naming the variable; `main` prints it as one line and
//! exits non-zero.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the data lives, chosen by `DATABASE_URL`'s scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`, passed to the driver as is.
    Postgres(String),
    /// An SQLite file (`sqlite://PATH`, or the default `./data/troupe.db`).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// The backend's name, for logs and `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// A bad setting: the variable and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong, and what would be right.
    pub problem: String,
}

/// The default SQLite file when `DATABASE_URL` is unset.
pub const DEFAULT_SQLITE_PATH: &str = "data/troupe.db";

/// The default upload directory when `TROUPE_UPLOAD_DIR` is unset.
pub const DEFAULT_UPLOAD_DIR: &str = "data/uploads";

/// The default largest upload (1 GiB) when `TROUPE_MAX_UPLOAD_BYTES` is unset.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// The default lifetime of an unfinished tus upload (24 h) when `TROUPE_TUS_EXPIRY_SECS`
/// is unset.
pub const DEFAULT_TUS_EXPIRY_SECS: u64 = 24 * 3600;

/// troupe's configuration. See the README's table for each variable and its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`.
    pub database: DatabaseUrl,
    /// `TROUPE_BIND`, default `127.0.0.1:8080`; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// `TROUPE_WORKERS`, default: the number of cores.
    pub workers: usize,
    /// `TROUPE_DB_POOL_SIZE`, default 10.
    pub db_pool_size: u32,
    /// `TROUPE_DB_TIMEOUT_MS`, default 2000: the longest a request waits for a connection.
    pub db_timeout: Duration,
    /// `TROUPE_CPU_THREADS`, default: the number of cores.
    pub cpu_threads: usize,
    /// `TROUPE_UPLOAD_DIR`, default `./data/uploads`; created at start-up if missing.
    pub upload_dir: PathBuf,
    /// `TROUPE_MAX_UPLOAD_BYTES`, default 1 GiB: the largest file `POST /upload` or tus takes.
    pub max_upload_bytes: u64,
    /// `TROUPE_TUS_EXPIRY_SECS`, default 86400: an unfinished tus upload untouched this long
    /// expires and is deleted.
    pub tus_expiry: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads settings from name/value pairs (the environment, or a test's own map).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            database: parse_database(get("DATABASE_URL"))?,
            bind: match get("TROUPE_BIND") {
                None => SocketAddr::from(([127, 0, 0, 1], 8080)),
                Some(v) => v.parse().map_err(|_| ConfigError {
                    var: "TROUPE_BIND",
                    problem: format!("expected HOST:PORT such as 127.0.0.1:8080, got {v:?}"),
                })?,
            },
            workers: parse_int(get("TROUPE_WORKERS"), "TROUPE_WORKERS", cores, 1, 256)?,
            db_pool_size: parse_int(
                get("TROUPE_DB_POOL_SIZE"),
                "TROUPE_DB_POOL_SIZE",
                10,
                1,
                1000,
            )?,
            db_timeout: Duration::from_millis(parse_int(
                get("TROUPE_DB_TIMEOUT_MS"),
                "TROUPE_DB_TIMEOUT_MS",
                2000,
                10,
                600_000,
            )?),
            cpu_threads: parse_int(
                get("TROUPE_CPU_THREADS"),
                "TROUPE_CPU_THREADS",
                cores,
                1,
                256,
            )?,
            upload_dir: PathBuf::from(get("TROUPE_UPLOAD_DIR").unwrap_or(DEFAULT_UPLOAD_DIR)),
            max_upload_bytes: parse_int(
                get("TROUPE_MAX_UPLOAD_BYTES"),
                "TROUPE_MAX_UPLOAD_BYTES",
                DEFAULT_MAX_UPLOAD_BYTES,
                0,
                1 << 50,
            )?,
            tus_expiry: Duration::from_secs(parse_int(
                get("TROUPE_TUS_EXPIRY_SECS"),
                "TROUPE_TUS_EXPIRY_SECS",
                DEFAULT_TUS_EXPIRY_SECS,
                1,
                365 * 24 * 3600,
            )?),
        })
    }
}

/// Parses an integer setting within `min..=max`, or gives `default` when unset.
pub fn parse_int<T>(
    value: Option<&str>,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = value else { return Ok(default) };
    match raw.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError {
            var,
            problem: format!("expected an integer from {min} to {max}, got {raw:?}"),
        }),
    }
}

fn parse_database(value: Option<&str>) -> Result<DatabaseUrl, ConfigError> {
    let Some(url) = value else {
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(url.to_owned()));
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() || path == ":memory:" {
            return Err(ConfigError {
                var: "DATABASE_URL",
                problem: "sqlite needs a file path (sqlite://PATH); :memory: would give every pooled connection its own empty database".into(),
            });
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    Err(ConfigError {
        var: "DATABASE_URL",
        problem:
            "expected postgres://… or sqlite://PATH (the URL is not shown: it may hold a password)"
                .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_serve_sqlite_on_8080() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH))
        );
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.db_pool_size, 10);
    }

    #[test]
    fn bad_pool_size_names_the_variable() {
        let err = Config::from_vars(vars(&[("TROUPE_DB_POOL_SIZE", "lots")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_DB_POOL_SIZE");
        assert!(err.to_string().starts_with("TROUPE_DB_POOL_SIZE: "));
    }

    #[test]
    fn upload_settings_have_documented_defaults_and_name_a_bad_value() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.upload_dir, PathBuf::from(DEFAULT_UPLOAD_DIR));
        assert_eq!(config.max_upload_bytes, 1 << 30);
        let config = Config::from_vars(vars(&[("TROUPE_MAX_UPLOAD_BYTES", "4294967296")])).unwrap();
        assert_eq!(config.max_upload_bytes, 4 << 30);
        let err = Config::from_vars(vars(&[("TROUPE_MAX_UPLOAD_BYTES", "1GB")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_MAX_UPLOAD_BYTES");
        let err = Config::from_vars(vars(&[("TROUPE_TUS_EXPIRY_SECS", "0")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_TUS_EXPIRY_SECS");
    }

    #[test]
    fn unknown_database_scheme_is_refused_without_echoing_the_url() {
        let err =
            Config::from_vars(vars(&[("DATABASE_URL", "mysql://u:secret@h/db")])).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn postgres_and_sqlite_urls_pick_their_backend() {
        let pg =
            Config::from_vars(vars(&[("DATABASE_URL", "postgres://root@127.0.0.1/x")])).unwrap();
        assert_eq!(pg.database.backend(), "postgres");
        let lite = Config::from_vars(vars(&[("DATABASE_URL", "sqlite:///tmp/t.db")])).unwrap();
        assert_eq!(
            lite.database,
            DatabaseUrl::Sqlite(PathBuf::from("/tmp/t.db"))
        );
    }
}
