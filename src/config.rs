//! Every setting troupe reads, from the environment, validated once at start-up.
//!
//! A bad value is a [`ConfigError`] naming the variable; `main` prints it as one line and
//! exits non-zero.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{ApiKeys, API_KEYS_VAR};
use crate::http::client_ip::{TrustedProxies, TRUSTED_PROXIES_VAR};
use crate::http::cors::{CorsConfig, CORS_ORIGINS_VAR};
use crate::rate_limit::{Per, RateSpec, RATE_BURST_VAR, RATE_LIMIT_VAR};

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

/// How fast each upload may go while other requests are in flight, by default: 256 Mbit/s,
/// more than most clients send, less than what starves short requests of CPU.
const DEFAULT_UPLOAD_SHARED_RATE_MIB: u64 = 32;

/// The default largest upload (1 GiB) when `TROUPE_MAX_UPLOAD_BYTES` is unset.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// The default lifetime of an unfinished tus upload (24 h) when `TROUPE_TUS_EXPIRY_SECS`
/// is unset.
pub const DEFAULT_TUS_EXPIRY_SECS: u64 = 24 * 3600;

/// The default body timeout (60 s, tusd's network timeout) when `TROUPE_BODY_TIMEOUT_MS`
/// is unset.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;

/// The default cap on upload bodies streaming at once when `TROUPE_MAX_ACTIVE_UPLOADS` is
/// unset.
pub const DEFAULT_MAX_ACTIVE_UPLOADS: usize = 256;

/// The default drain after SIGTERM (3 s) when `TROUPE_DRAIN_MS` is unset: longer than a load
/// balancer's health-check interval, so it sees `/readyz` say `draining` before the listener
/// closes.
pub const DEFAULT_DRAIN_MS: u64 = 3_000;

/// The default time requests in flight get to finish at shutdown (30 s) when
/// `TROUPE_SHUTDOWN_TIMEOUT_MS` is unset.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;

/// The default `TROUPE_DB_STATEMENT_TIMEOUT_MS`: a statement of troupe's own takes
/// milliseconds; one that takes seconds is waiting on a lock, and its client would rather
/// hear 503 and retry.
pub const DEFAULT_DB_STATEMENT_TIMEOUT_MS: u64 = 2000;

/// What requests may be, as the routes and the upload actor hold them to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest upload taken (`TROUPE_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// How long an untouched unfinished tus upload lives (`TROUPE_TUS_EXPIRY_SECS`).
    pub tus_expiry: Duration,
    /// How long a request body may deliver no byte before it is aborted
    /// (`TROUPE_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// How many upload bodies (`POST /upload` and tus PATCHes together) may stream at once
    /// (`TROUPE_MAX_ACTIVE_UPLOADS`).
    pub max_active_uploads: usize,
}

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
    /// `TROUPE_DB_STATEMENT_TIMEOUT_MS`, default 2000: the longest one statement runs, lock
    /// waits included; past it the database ends it (PostgreSQL's `statement_timeout`,
    /// SQLite's `busy_timeout`), nothing of it is kept, and the request gets 503.
    pub db_statement_timeout: Duration,
    /// `TROUPE_CPU_THREADS`, default: the number of cores.
    pub cpu_threads: usize,
    /// `TROUPE_UPSTREAMS` and the `TROUPE_UPSTREAM_*` bounds.
    pub upstream: UpstreamConfig,
    /// `TROUPE_UPLOAD_DIR`, default `./data/uploads`; created at start-up if missing.
    pub upload_dir: PathBuf,
    /// `TROUPE_MAX_UPLOAD_BYTES`, default 1 GiB: the largest file `POST /upload` or tus takes.
    pub max_upload_bytes: u64,
    /// `TROUPE_TUS_EXPIRY_SECS`, default 86400: an unfinished tus upload untouched this long
    /// expires and is deleted.
    pub tus_expiry: Duration,
    /// `TROUPE_BODY_TIMEOUT_MS`, default 60000 (tusd's network timeout): a request body
    /// that delivers no byte for this long is aborted (408).
    pub body_timeout: Duration,
    /// `TROUPE_MAX_ACTIVE_UPLOADS`, default 256: upload bodies streaming at once; past it a
    /// new one is refused (503) before its body is read.
    pub max_active_uploads: usize,
    /// `TROUPE_UPLOAD_SHARED_RATE_MIB`, default 32: MiB/s each upload may take while other
    /// requests are in flight (0: no limit).
    pub upload_shared_rate_mib: u64,
    /// `TROUPE_DRAIN_MS`, default 3000: after SIGTERM, how long troupe goes on serving, with
    /// `/readyz` saying `draining` and every response closing its connection, before it
    /// closes its listener (SIGINT skips it).
    pub drain: Duration,
    /// `TROUPE_SHUTDOWN_TIMEOUT_MS`, default 30000: once the listener is closed, how long
    /// the requests in flight have to finish before they are cut.
    pub shutdown_timeout: Duration,
    /// `TROUPE_API_KEYS`: the keys requests may present (names, scopes, digests); none by
    /// default (open mode, loopback only).
    pub api_keys: ApiKeys,
    /// `TROUPE_AUTH=off`: serve open on a non-loopback address on purpose (no keys may be
    /// set then); logged as a warning at start.
    pub auth_off: bool,
    /// `TROUPE_CORS_ORIGINS`: the browser origins that may call troupe (`*`, or exact
    /// origins); none by default (no CORS headers at all).
    pub cors: CorsConfig,
    /// `TROUPE_RATE_LIMIT` and `TROUPE_RATE_BURST`: requests per client; `None` (the
    /// default, or `0`) is no limit.
    pub rate_limit: Option<RateSpec>,
    /// `TROUPE_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` names the client for
    /// the rate limit; none by default.
    pub trusted_proxies: TrustedProxies,
}

impl Config {
    /// The limits requests are held to.
    pub fn limits(&self) -> Limits {
        Limits {
            max_upload_bytes: self.max_upload_bytes,
            tus_expiry: self.tus_expiry,
            body_timeout: self.body_timeout,
            max_active_uploads: self.max_active_uploads,
        }
    }

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
        let config = Self {
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
            db_statement_timeout: Duration::from_millis(parse_int(
                get("TROUPE_DB_STATEMENT_TIMEOUT_MS"),
                "TROUPE_DB_STATEMENT_TIMEOUT_MS",
                DEFAULT_DB_STATEMENT_TIMEOUT_MS,
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
            upstream: UpstreamConfig::from_vars(get)?,
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
            body_timeout: Duration::from_millis(parse_int(
                get("TROUPE_BODY_TIMEOUT_MS"),
                "TROUPE_BODY_TIMEOUT_MS",
                DEFAULT_BODY_TIMEOUT_MS,
                10,
                24 * 3600 * 1000,
            )?),
            max_active_uploads: parse_int(
                get("TROUPE_MAX_ACTIVE_UPLOADS"),
                "TROUPE_MAX_ACTIVE_UPLOADS",
                DEFAULT_MAX_ACTIVE_UPLOADS,
                1,
                1_000_000,
            )?,
            upload_shared_rate_mib: parse_int(
                get("TROUPE_UPLOAD_SHARED_RATE_MIB"),
                "TROUPE_UPLOAD_SHARED_RATE_MIB",
                DEFAULT_UPLOAD_SHARED_RATE_MIB,
                0,
                1 << 20,
            )?,
            drain: Duration::from_millis(parse_int(
                get("TROUPE_DRAIN_MS"),
                "TROUPE_DRAIN_MS",
                DEFAULT_DRAIN_MS,
                0,
                600_000,
            )?),
            shutdown_timeout: Duration::from_millis(parse_int(
                get("TROUPE_SHUTDOWN_TIMEOUT_MS"),
                "TROUPE_SHUTDOWN_TIMEOUT_MS",
                DEFAULT_SHUTDOWN_TIMEOUT_MS,
                0,
                3_600_000,
            )?),
            api_keys: ApiKeys::parse(get(API_KEYS_VAR).unwrap_or(""))?,
            auth_off: match get(AUTH_VAR) {
                None | Some("on") => false,
                Some("off") => true,
                Some(v) => {
                    return Err(ConfigError {
                        var: AUTH_VAR,
                        problem: format!("expected off (or on, the default), got {v:?}"),
                    })
                }
            },
            cors: CorsConfig::parse(get(CORS_ORIGINS_VAR).unwrap_or(""))?,
            rate_limit: RateSpec::parse(
                get(RATE_LIMIT_VAR).unwrap_or(""),
                get(RATE_BURST_VAR).unwrap_or(""),
            )?,
            trusted_proxies: TrustedProxies::parse(get(TRUSTED_PROXIES_VAR).unwrap_or(""))?,
        };
        crate::logging::LogFormat::parse(get(crate::logging::LOG_FORMAT_VAR))?;
        config.check_access()?;
        Ok(config)
    }

    /// Secure by default: without keys, open only on a loopback address, unless
    /// `TROUPE_AUTH=off` says so (and then no keys may be set, which would say otherwise).
    fn check_access(&self) -> Result<(), ConfigError> {
        if self.auth_off {
            if !self.api_keys.is_empty() {
                return Err(ConfigError {
                    var: AUTH_VAR,
                    problem: "off serves every route to anyone, yet TROUPE_API_KEYS is set: \
                              unset one of them"
                        .into(),
                });
            }
            return Ok(());
        }
        if self.api_keys.is_empty() && !self.bind.ip().is_loopback() {
            return Err(ConfigError {
                var: API_KEYS_VAR,
                problem: format!(
                    "unset, and TROUPE_BIND={} is not a loopback address: set keys (troupe \
                     hash-key NAME SCOPES makes one), or TROUPE_AUTH=off to serve open on purpose",
                    self.bind
                ),
            });
        }
        Ok(())
    }

    /// Whether every route is served to anyone (no keys configured).
    pub fn is_open(&self) -> bool {
        self.api_keys.is_empty()
    }
}

/// The variable that lets troupe serve open on a non-loopback address.
pub const AUTH_VAR: &str = "TROUPE_AUTH";

impl Config {
    /// The effective configuration as one log line of `VARIABLE=value` pairs, defaults
    /// filled in, secrets masked ([`mask_url`]): the start-up line.
    pub fn summary(&self) -> String {
        let database = match &self.database {
            DatabaseUrl::Postgres(url) => mask_url(url),
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        };
        let upstreams = if self.upstream.sources.is_empty() {
            "none".to_owned()
        } else {
            self.upstream
                .sources
                .iter()
                .map(|s| format!("{}={}", s.name, mask_url(&s.url)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let up = &self.upstream;
        let ms = |d: Duration| d.as_millis();
        format!(
            "DATABASE_URL={database} TROUPE_BIND={} TROUPE_WORKERS={} TROUPE_DB_POOL_SIZE={} \
             TROUPE_DB_TIMEOUT_MS={} TROUPE_DB_STATEMENT_TIMEOUT_MS={} TROUPE_CPU_THREADS={} \
             TROUPE_UPLOAD_DIR={} \
             TROUPE_MAX_UPLOAD_BYTES={} TROUPE_TUS_EXPIRY_SECS={} \
             TROUPE_BODY_TIMEOUT_MS={} TROUPE_MAX_ACTIVE_UPLOADS={} \
             TROUPE_UPLOAD_SHARED_RATE_MIB={} TROUPE_DRAIN_MS={} TROUPE_SHUTDOWN_TIMEOUT_MS={} \
             TROUPE_UPSTREAMS={upstreams} TROUPE_UPSTREAM_TIMEOUT_MS={} \
             TROUPE_UPSTREAM_DEADLINE_MS={} TROUPE_UPSTREAM_MAX_BYTES={} \
             TROUPE_UPSTREAM_BREAKER_FAILURES={} TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS={} \
             TROUPE_UPSTREAM_CA_FILE={} TROUPE_API_KEYS={} TROUPE_AUTH={} \
             TROUPE_CORS_ORIGINS={} TROUPE_RATE_LIMIT={} TROUPE_RATE_BURST={} \
             TROUPE_TRUSTED_PROXIES={}",
            self.bind,
            self.workers,
            self.db_pool_size,
            ms(self.db_timeout),
            ms(self.db_statement_timeout),
            self.cpu_threads,
            self.upload_dir.display(),
            self.max_upload_bytes,
            self.tus_expiry.as_secs(),
            ms(self.body_timeout),
            self.max_active_uploads,
            self.upload_shared_rate_mib,
            ms(self.drain),
            ms(self.shutdown_timeout),
            ms(up.timeout),
            ms(up.deadline),
            up.max_bytes,
            up.breaker_failures,
            ms(up.breaker_cooldown),
            match up.extra_roots.len() {
                0 => "none".to_owned(),
                n => format!("{n}_certificates"),
            },
            keys_summary(&self.api_keys),
            if self.auth_off { "off" } else { "on" },
            match &self.cors {
                CorsConfig::Off => "none".to_owned(),
                CorsConfig::AnyOrigin => "*".to_owned(),
                CorsConfig::Origins(origins) => origins.join(","),
            },
            self.rate_limit.map_or_else(
                || "off".to_owned(),
                |r| match r.per {
                    Per::Second => format!("{}/s", r.requests),
                    Per::Minute => format!("{}/m", r.requests),
                }
            ),
            self.rate_limit
                .map_or_else(|| "none".to_owned(), |r| r.burst.to_string()),
            if self.trusted_proxies.is_empty() {
                "none"
            } else {
                "set"
            },
        )
    }
}

/// The configured keys as the start-up line shows them: their names only (`none` without).
fn keys_summary(keys: &ApiKeys) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.names().collect::<Vec<_>>().join(",")
    }
}

/// `url` fit for a log: the password of its user info and every query value that looks
/// like a secret (its name says key, secret, token, password, auth, signature, credential or
/// session, or the value itself looks like a random token) become `***`.
pub fn mask_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut masked = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, value)) if secret_name(name) || secret_value(value) => {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        masked.push('?');
        masked.push_str(&params.join("&"));
        if let Some(fragment) = fragment {
            masked.push('#');
            masked.push_str(fragment);
        }
    }
    masked
}

fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key", "secret", "token", "pass", "pwd", "auth", "sig", "cred", "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A value of 16 or more characters of letters and digits (and `-_+/=%`) mixing both reads
/// as a random token, whatever its parameter is called.
fn secret_value(value: &str) -> bool {
    value.len() >= 16
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+/=%".contains(c))
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic())
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

/// One upstream source: a name requests choose it by, and the URL troupe calls.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSource {
    /// Matches `[a-z0-9][a-z0-9_-]*`; the only part of a source clients ever see.
    pub name: String,
    /// An absolute `http://` or `https://` URL without credentials.
    pub url: String,
}

impl std::fmt::Debug for UpstreamSource {
    /// The name only: a URL's query may carry an API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The fan-out settings (`/aggregate`, `/parallel`).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `TROUPE_UPSTREAMS="name=url,…"`, in the configured order; default none.
    pub sources: Vec<UpstreamSource>,
    /// `TROUPE_UPSTREAM_TIMEOUT_MS`, default 5000: one call to one source, from connect to
    /// the body's last byte.
    pub timeout: Duration,
    /// `TROUPE_UPSTREAM_DEADLINE_MS`, default 10000: the whole fan-out of one request,
    /// retries included.
    pub deadline: Duration,
    /// `TROUPE_UPSTREAM_MAX_BYTES`, default 2 MiB: the largest body taken from a source.
    pub max_bytes: usize,
    /// `TROUPE_UPSTREAM_BREAKER_FAILURES`, default 5: consecutive failures that open a
    /// source's circuit breaker.
    pub breaker_failures: u32,
    /// `TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS`, default 5000: how long an open breaker fails
    /// calls at once before it lets one trial call through.
    pub breaker_cooldown: Duration,
    /// `TROUPE_UPSTREAM_CA_FILE`, default none: PEM certificates trusted for `https` sources
    /// besides the built-in Mozilla roots (a private CA).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl UpstreamConfig {
    fn from_vars<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, ConfigError> {
        let ms = |var: &'static str, default: u64, max: u64| {
            parse_int(get(var), var, default, 1, max).map(Duration::from_millis)
        };
        Ok(Self {
            sources: parse_upstreams(get("TROUPE_UPSTREAMS"))?,
            timeout: ms("TROUPE_UPSTREAM_TIMEOUT_MS", 5_000, 600_000)?,
            deadline: ms("TROUPE_UPSTREAM_DEADLINE_MS", 10_000, 600_000)?,
            max_bytes: parse_int(
                get("TROUPE_UPSTREAM_MAX_BYTES"),
                "TROUPE_UPSTREAM_MAX_BYTES",
                2 * 1024 * 1024,
                1,
                256 * 1024 * 1024,
            )?,
            breaker_failures: parse_int(
                get("TROUPE_UPSTREAM_BREAKER_FAILURES"),
                "TROUPE_UPSTREAM_BREAKER_FAILURES",
                5,
                1,
                1000,
            )?,
            breaker_cooldown: ms("TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS", 5_000, 3_600_000)?,
            extra_roots: read_ca_file(get("TROUPE_UPSTREAM_CA_FILE"))?,
        })
    }
}

/// Reads the certificates of `TROUPE_UPSTREAM_CA_FILE` (PEM, one or more).
fn read_ca_file(
    path: Option<&str>,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bad = |problem: String| ConfigError {
        var: "TROUPE_UPSTREAM_CA_FILE",
        problem,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read {path:?}: {e}")))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("{path:?} is not valid PEM")))?;
    if certs.is_empty() {
        return Err(bad(format!("{path:?} holds no CERTIFICATE block")));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            bad(format!(
                "{path:?}: a certificate is unusable as a root: {e}"
            ))
        })?;
    }
    Ok(certs)
}

/// Parses `TROUPE_UPSTREAMS`: items split on `,`, each split on its first `=` (URLs hold
/// `=` in their queries, never `,` unescaped). Errors name the entry by position and name,
/// never by URL, which may carry a key.
pub fn parse_upstreams(value: Option<&str>) -> Result<Vec<UpstreamSource>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut sources: Vec<UpstreamSource> = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        let bad = |problem: String| ConfigError {
            var: "TROUPE_UPSTREAMS",
            problem: format!("entry {}: {problem}", i + 1),
        };
        let item = item.trim();
        let Some((name, url)) = item.split_once('=') else {
            return Err(bad("expected name=url".into()));
        };
        let (name, url) = (name.trim(), url.trim());
        if !is_source_name(name) {
            return Err(bad(format!(
                "name {name:?} must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"
            )));
        }
        if sources.iter().any(|s| s.name == name) {
            return Err(bad(format!("name {name:?} is used twice")));
        }
        check_upstream_url(url).map_err(|problem| bad(format!("{name:?}: {problem}")))?;
        sources.push(UpstreamSource {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(sources)
}

/// Whether `name` matches `[a-z0-9][a-z0-9_-]*` (and is at most 64 characters).
pub fn is_source_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_upstream_url(url: &str) -> Result<(), String> {
    let uri: actix_web::http::Uri = url
        .parse()
        .map_err(|_| "the URL is not a valid absolute URL".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with http:// or https://".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("the URL has no host".into());
    };
    if authority.as_str().contains('@') {
        // awc would not send them, and they would sit in logs and config dumps.
        return Err("credentials in the URL are not supported".into());
    }
    if authority.host().is_empty() {
        return Err("the URL has no host".into());
    }
    Ok(())
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
    fn statements_end_after_two_seconds_unless_told_otherwise() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.db_statement_timeout, Duration::from_millis(2000));
        let short = Config::from_vars(vars(&[("TROUPE_DB_STATEMENT_TIMEOUT_MS", "250")])).unwrap();
        assert_eq!(short.db_statement_timeout, Duration::from_millis(250));
        let err = Config::from_vars(vars(&[("TROUPE_DB_STATEMENT_TIMEOUT_MS", "5")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_DB_STATEMENT_TIMEOUT_MS");
    }

    #[test]
    fn uploads_share_at_32_mib_per_second_unless_told_otherwise() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.upload_shared_rate_mib, 32);
        let off = Config::from_vars(vars(&[("TROUPE_UPLOAD_SHARED_RATE_MIB", "0")])).unwrap();
        assert_eq!(off.upload_shared_rate_mib, 0);
        let err = Config::from_vars(vars(&[("TROUPE_UPLOAD_SHARED_RATE_MIB", "-1")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_UPLOAD_SHARED_RATE_MIB");
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
    fn upstreams_split_on_commas_then_on_the_first_equals_sign() {
        let config = Config::from_vars(vars(&[(
            "TROUPE_UPSTREAMS",
            "a=http://127.0.0.1:9101/a?delay_ms=20&x=1, b-2=https://example.com/b?k=v=w",
        )]))
        .unwrap();
        let sources = &config.upstream.sources;
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].name, "a");
        assert_eq!(sources[0].url, "http://127.0.0.1:9101/a?delay_ms=20&x=1");
        assert_eq!(sources[1].name, "b-2");
        assert_eq!(sources[1].url, "https://example.com/b?k=v=w");
    }

    #[test]
    fn no_upstreams_and_documented_defaults_when_unset() {
        let up = Config::from_vars(vars(&[])).unwrap().upstream;
        assert!(up.sources.is_empty());
        assert_eq!(up.timeout, Duration::from_millis(5000));
        assert_eq!(up.deadline, Duration::from_millis(10_000));
        assert_eq!(up.max_bytes, 2 * 1024 * 1024);
        assert_eq!(up.breaker_failures, 5);
        assert_eq!(up.breaker_cooldown, Duration::from_millis(5000));
        assert!(up.extra_roots.is_empty());
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        for path in [dir.path().join("missing.pem"), empty] {
            let path = path.to_str().unwrap();
            let err = Config::from_vars(vars(&[("TROUPE_UPSTREAM_CA_FILE", path)])).unwrap_err();
            assert_eq!(err.var, "TROUPE_UPSTREAM_CA_FILE", "{err}");
        }
    }

    #[test]
    fn bad_upstream_entries_name_the_entry_not_the_url() {
        for (value, expect) in [
            ("a", "entry 1: expected name=url"),
            ("a=http://h/,A=http://h/", "entry 2: name \"A\""),
            ("a=http://h/,a=http://h/", "used twice"),
            ("-a=http://h/", "must match"),
            ("a=ftp://h/x", "http:// or https://"),
            ("a=/relative", "http:// or https://"),
            ("a=http://user:secret@h/", "credentials"),
            ("a=http://h/,", "entry 2"),
            ("a=not a url", "not a valid"),
        ] {
            let err = Config::from_vars(vars(&[("TROUPE_UPSTREAMS", value)])).unwrap_err();
            assert_eq!(err.var, "TROUPE_UPSTREAMS", "{value}");
            let text = err.to_string();
            assert!(text.contains(expect), "{value}: {text}");
            assert!(!text.contains("secret"), "{text}");
            assert_eq!(text.lines().count(), 1);
        }
    }

    #[test]
    fn upstream_bounds_are_validated() {
        for var in [
            "TROUPE_UPSTREAM_TIMEOUT_MS",
            "TROUPE_UPSTREAM_DEADLINE_MS",
            "TROUPE_UPSTREAM_MAX_BYTES",
            "TROUPE_UPSTREAM_BREAKER_FAILURES",
            "TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS",
        ] {
            let err = Config::from_vars(vars(&[(var, "0")])).unwrap_err();
            assert_eq!(err.var, var);
        }
    }

    #[test]
    fn shutdown_settings_have_documented_defaults_and_name_a_bad_value() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.drain, Duration::from_millis(3000));
        assert_eq!(config.shutdown_timeout, Duration::from_millis(30_000));
        let config = Config::from_vars(vars(&[
            ("TROUPE_DRAIN_MS", "0"),
            ("TROUPE_SHUTDOWN_TIMEOUT_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(config.drain, Duration::ZERO);
        assert_eq!(config.shutdown_timeout, Duration::from_millis(250));
        for var in ["TROUPE_DRAIN_MS", "TROUPE_SHUTDOWN_TIMEOUT_MS"] {
            let err = Config::from_vars(vars(&[(var, "soon")])).unwrap_err();
            assert_eq!(err.var, var);
        }
    }

    #[test]
    fn urls_in_logs_lose_their_password_and_secret_looking_query_values() {
        for (url, expect) in [
            (
                "postgres://troupe:hunter2@db:5432/troupe",
                "postgres://troupe:***@db:5432/troupe",
            ),
            (
                "postgres://troupe@db/troupe?sslmode=disable",
                "postgres://troupe@db/troupe?sslmode=disable",
            ),
            (
                "postgresql://u:p%40ss@h/d?password=x&application_name=troupe",
                "postgresql://u:***@h/d?password=***&application_name=troupe",
            ),
            (
                "https://api.example.com/v1?api_key=abc&delay_ms=20&X-Amz-Signature=f00#top",
                "https://api.example.com/v1?api_key=***&delay_ms=20&X-Amz-Signature=***#top",
            ),
            ("http://h/a?id=Zm9vYmFyYmF6cXV4MTIz", "http://h/a?id=***"),
            (
                "http://h/a?name=a-very-long-plain-name",
                "http://h/a?name=a-very-long-plain-name",
            ),
        ] {
            assert_eq!(mask_url(url), expect, "{url}");
        }
    }

    const DIGEST: &str = "a3f1c2d4e5f60718293a4b5c6d7e8f90a3f1c2d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn without_keys_only_loopback_serves_open_unless_auth_is_off() {
        for bind in ["127.0.0.1:0", "[::1]:8080", "127.0.0.2:80"] {
            let config = Config::from_vars(vars(&[("TROUPE_BIND", bind)])).unwrap();
            assert!(config.is_open() && !config.auth_off, "{bind}");
        }
        for bind in ["0.0.0.0:8080", "[::]:8080", "192.168.1.4:80"] {
            let err = Config::from_vars(vars(&[("TROUPE_BIND", bind)])).unwrap_err();
            assert_eq!(err.var, "TROUPE_API_KEYS", "{bind}");
            assert!(err.problem.contains("TROUPE_AUTH=off"), "{err}");
            let config =
                Config::from_vars(vars(&[("TROUPE_BIND", bind), ("TROUPE_AUTH", "off")])).unwrap();
            assert!(config.auth_off && config.is_open(), "{bind}");
            let keys = format!("ci:admin:{DIGEST}");
            let config =
                Config::from_vars(vars(&[("TROUPE_BIND", bind), ("TROUPE_API_KEYS", &keys)]))
                    .unwrap();
            assert!(!config.is_open(), "{bind}");
        }
        let keys = format!("ci:admin:{DIGEST}");
        let err = Config::from_vars(vars(&[("TROUPE_AUTH", "off"), ("TROUPE_API_KEYS", &keys)]))
            .unwrap_err();
        assert_eq!(err.var, "TROUPE_AUTH");
        let err = Config::from_vars(vars(&[("TROUPE_AUTH", "no")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_AUTH");
    }

    #[test]
    fn a_malformed_key_entry_names_its_variable_and_entry() {
        let err =
            Config::from_vars(vars(&[("TROUPE_API_KEYS", "ci:users:read:nothex")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_API_KEYS");
        assert!(err.problem.contains("ci"), "{err}");
        assert!(Config::from_vars(vars(&[])).unwrap().api_keys.is_empty());
    }

    #[test]
    fn the_summary_is_one_line_naming_every_setting_without_secrets() {
        let config = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://troupe:hunter2@db/troupe"),
            (
                "TROUPE_UPSTREAMS",
                "a=http://h/a?token=t0ps3cret,b=http://h/b",
            ),
            ("TROUPE_DRAIN_MS", "1500"),
            (
                "TROUPE_API_KEYS",
                &format!("ci:users:read:{DIGEST},root:admin:{}", "b".repeat(64)),
            ),
        ]))
        .unwrap();
        let line = config.summary();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            !line.contains("hunter2") && !line.contains("t0ps3cret"),
            "{line}"
        );
        assert!(!line.contains(DIGEST) && !line.contains("bbbb"), "{line}");
        for part in [
            "DATABASE_URL=postgres://troupe:***@db/troupe ",
            "TROUPE_BIND=127.0.0.1:8080 ",
            "TROUPE_DRAIN_MS=1500 ",
            "TROUPE_SHUTDOWN_TIMEOUT_MS=30000 ",
            "TROUPE_UPSTREAMS=a=http://h/a?token=***,b=http://h/b ",
            "TROUPE_UPSTREAM_CA_FILE=none ",
            "TROUPE_API_KEYS=ci,root",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
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
