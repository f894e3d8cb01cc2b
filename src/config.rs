//! Every setting troupe reads, from the environment, validated once at start-up.
//!
//! A bad value is a [`ConfigError`] naming the variable; `main` prints it as one line and
//! exits non-zero. [`VARS`] is the one list of variables: what is read, what `--help` and
//! the README say, and what unknown `TROUPE_*` names are warned about.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs as _};
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

/// One environment variable troupe reads: its name, its default as a person reads it, and
/// what it means. [`VARS`] lists them all; `troupe --help` prints them ([`help_text`]), the
/// start-up line and `troupe check-config` show their values in its order
/// ([`Config::effective`]), and a test holds the README's table to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    /// The environment variable.
    pub name: &'static str,
    /// What applies when it is unset or empty.
    pub default: &'static str,
    /// What it sets, with its range where it has one.
    pub meaning: &'static str,
}

/// Every variable troupe reads, and nothing else: [`Config::from_vars`] reads each of these
/// but `RUST_LOG` and `TROUPE_LOG_FORMAT` (the logger's), and no other; any other `TROUPE_*`
/// variable gets a warning at start ([`unknown_variables`]).
pub const VARS: &[Var] = &[
    Var {
        name: "DATABASE_URL",
        default: "unset → SQLite file ./data/troupe.db",
        meaning: "postgres://user@host:port/db for PostgreSQL, sqlite://PATH for another \
                  SQLite file",
    },
    Var {
        name: BIND_VAR,
        default: "127.0.0.1:8080",
        meaning: "address to listen on, HOST:PORT: an IP address, or a host name resolved at \
                  start (its first IPv4 address, else its first; localhost is loopback); \
                  0.0.0.0:8080 in a container; port 0 picks a free one",
    },
    Var {
        name: "TROUPE_WORKERS",
        default: "number of cores",
        meaning: "HTTP worker threads (1–256)",
    },
    Var {
        name: "TROUPE_DB_POOL_SIZE",
        default: "10",
        meaning: "database connections (1–1000)",
    },
    Var {
        name: "TROUPE_DB_TIMEOUT_MS",
        default: "2000",
        meaning: "longest wait for a database connection; past it a request gets 503 + \
                  Retry-After (10–600000)",
    },
    Var {
        name: "TROUPE_DB_STATEMENT_TIMEOUT_MS",
        default: "2000",
        meaning: "longest one statement runs, lock waits included; past it the database ends \
                  it, nothing of it is kept, and the request gets 503 overloaded (10–600000)",
    },
    Var {
        name: "TROUPE_CPU_THREADS",
        default: "number of cores",
        meaning: "CpuActor threads (1–256)",
    },
    Var {
        name: STORAGE_VAR,
        default: "file://data/uploads",
        meaning: "where uploaded files live, named by id: file://DIR, a directory created at \
                  start-up (unset: TROUPE_UPLOAD_DIR's, if set), or s3://BUCKET/PREFIX, \
                  objects in an S3-compatible bucket (the AWS_* variables below; tus needs \
                  file://)",
    },
    Var {
        name: UPLOAD_DIR_VAR,
        default: "./data/uploads",
        meaning: "the older name of TROUPE_STORAGE=file://DIR; both set naming different \
                  places stops start-up",
    },
    Var {
        name: "AWS_ACCESS_KEY_ID",
        default: "none",
        meaning: "with s3:// storage: the access key (required; instance and profile \
                  credentials are not looked up)",
    },
    Var {
        name: "AWS_SECRET_ACCESS_KEY",
        default: "none",
        meaning: "with s3:// storage: the secret key (required; shown as *** at start-up)",
    },
    Var {
        name: "AWS_REGION",
        default: "us-east-1",
        meaning: "with s3:// storage: the bucket's region",
    },
    Var {
        name: "AWS_ENDPOINT_URL",
        default: "none",
        meaning: "with s3:// storage: an S3-compatible server's URL (http or https), \
                  addressed path-style (ENDPOINT/BUCKET/KEY); unset, AWS's endpoint for \
                  the region, virtual-hosted style",
    },
    Var {
        name: "TROUPE_MAX_UPLOAD_BYTES",
        default: "1073741824 (1 GiB)",
        meaning: "largest upload (POST /upload and tus); over it → 413 at once, nothing kept",
    },
    Var {
        name: "TROUPE_TUS_EXPIRY_SECS",
        default: "86400",
        meaning: "an unfinished tus upload untouched this long expires and is deleted",
    },
    Var {
        name: "TROUPE_BODY_TIMEOUT_MS",
        default: "60000",
        meaning: "a request body that sends no byte for this long is aborted (408; a tus \
                  PATCH keeps what arrived)",
    },
    Var {
        name: "TROUPE_MAX_ACTIVE_UPLOADS",
        default: "256",
        meaning: "upload bodies streaming at once (POST /upload and PATCH together); past it \
                  → 503 + Retry-After",
    },
    Var {
        name: "TROUPE_UPLOAD_SHARED_RATE_MIB",
        default: "32",
        meaning: "MiB/s each upload may take while other requests are being served; alone, \
                  uploads are not limited (0: never limited; 0–1048576)",
    },
    Var {
        name: "TROUPE_DRAIN_MS",
        default: "3000",
        meaning: "after SIGTERM, how long troupe goes on serving with /readyz at 503 draining \
                  and Connection: close on every response, before it closes its listener \
                  (0–600000)",
    },
    Var {
        name: "TROUPE_SHUTDOWN_TIMEOUT_MS",
        default: "30000",
        meaning: "once the listener is closed, how long requests in flight have to finish \
                  before they are cut (0–3600000)",
    },
    Var {
        name: "TROUPE_UPSTREAMS",
        default: "none",
        meaning: "fan-out sources, name=url,name=url; names [a-z0-9][a-z0-9_-]*, unique; \
                  http and https only",
    },
    Var {
        name: "TROUPE_UPSTREAM_TIMEOUT_MS",
        default: "5000",
        meaning: "one attempt at one source: connect, head and whole body (1–600000)",
    },
    Var {
        name: "TROUPE_UPSTREAM_DEADLINE_MS",
        default: "10000",
        meaning: "one request's whole fan-out, retries included (1–600000)",
    },
    Var {
        name: "TROUPE_UPSTREAM_MAX_BYTES",
        default: "2097152",
        meaning: "largest body taken from a source, enforced while it streams in \
                  (1–268435456)",
    },
    Var {
        name: "TROUPE_UPSTREAM_BREAKER_FAILURES",
        default: "5",
        meaning: "consecutive failures that open a source's circuit breaker (1–1000)",
    },
    Var {
        name: "TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS",
        default: "5000",
        meaning: "how long an open breaker fails calls at once before one trial (1–3600000)",
    },
    Var {
        name: "TROUPE_UPSTREAM_CA_FILE",
        default: "none",
        meaning: "PEM file of CA certificates trusted for https sources besides the built-in \
                  Mozilla roots",
    },
    Var {
        name: API_KEYS_VAR,
        default: "none",
        meaning: "API keys, NAME:SCOPES:DIGEST,… (troupe hash-key NAME SCOPES makes one); \
                  without keys troupe serves open, and only on a loopback address",
    },
    Var {
        name: AUTH_VAR,
        default: "on",
        meaning: "off: serve open on a non-loopback address on purpose (no keys may be set)",
    },
    Var {
        name: CORS_ORIGINS_VAR,
        default: "none",
        meaning: "browser origins that may call troupe: * or exact origins, comma-separated; \
                  unset, no CORS headers at all",
    },
    Var {
        name: RATE_LIMIT_VAR,
        default: "off",
        meaning: "requests per client, N/s or N/m; over it → 429 + Retry-After; the client is \
                  its key's name, else its address",
    },
    Var {
        name: RATE_BURST_VAR,
        default: "2 × N a second",
        meaning: "the burst the limit allows (1–1000000)",
    },
    Var {
        name: TRUSTED_PROXIES_VAR,
        default: "none",
        meaning: "CIDRs of proxies whose X-Forwarded-For names the client for the limit",
    },
    Var {
        name: "RUST_LOG",
        default: "info",
        meaning: "log filter (env_logger syntax); troupe::access=info is the access log; \
                  an invalid one (lots) is replaced by info, with one warning",
    },
    Var {
        name: LOG_FORMAT_VAR,
        default: "text",
        meaning: "text, or json: one JSON object per line",
    },
];

/// The variable that sets the listening address.
pub const BIND_VAR: &str = "TROUPE_BIND";

/// The variable that says where uploads live.
pub const STORAGE_VAR: &str = "TROUPE_STORAGE";

/// The older name of `TROUPE_STORAGE=file://DIR`.
pub const UPLOAD_DIR_VAR: &str = "TROUPE_UPLOAD_DIR";

/// The log's format; read by the logger (`logging`), listed here so that `--help` shows it.
pub use crate::logging::LOG_FORMAT_VAR;

/// Whether troupe reads `name`.
pub fn is_known(name: &str) -> bool {
    VARS.iter().any(|var| var.name == name)
}

/// The variables as `troupe --help` lists them: each name with its default, then its
/// meaning, indented and wrapped to 80 columns.
pub fn help_text() -> String {
    let mut text = wrap(
        "Configuration: these environment variables, validated once at start (a bad value \
         stops troupe with exit code 2 and one line naming it):",
        "",
    );
    for var in VARS {
        text.push_str(&format!("\n  {}  [default: {}]\n", var.name, var.default));
        text.push_str(&wrap(var.meaning, "      "));
    }
    text
}

/// `words` as lines of at most 80 columns (a longer word stays whole), each after `indent`.
fn wrap(words: &str, indent: &str) -> String {
    let mut text = String::new();
    let mut line = String::new();
    for word in words.split_whitespace() {
        if !line.is_empty() && indent.len() + line.chars().count() + 1 + word.chars().count() > 80 {
            text.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    text.push_str(&format!("{indent}{line}\n"));
    text
}

/// One warning line for each `TROUPE_*` name in `names` that troupe does not read (a typo
/// such as `TROUPE_WORKER`), naming the known variable it was most likely meant to be when
/// one is clearly closest. Values are never shown: they may be secrets.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with("TROUPE_") && !is_known(name))
        .collect();
    unknown.sort();
    unknown
        .into_iter()
        .map(|name| match closest_variable(&name) {
            Some(known) => format!(
                "unknown variable {name} is ignored: did you mean {known}? (troupe --help \
                 lists every variable)"
            ),
            None => {
                format!("unknown variable {name} is ignored (troupe --help lists every variable)")
            }
        })
        .collect()
}

/// The known variable nearest `name` in edits, if it is near (two edits, more for long
/// names) and nearer than any other.
fn closest_variable(name: &str) -> Option<&'static str> {
    let mut by_distance: Vec<(usize, &'static str)> = VARS
        .iter()
        .map(|var| (strsim::damerau_levenshtein(name, var.name), var.name))
        .collect();
    by_distance.sort();
    match by_distance.as_slice() {
        [(best, known), rest @ ..]
            if *best <= 2.max(name.len() / 8) && rest.first().is_none_or(|(d, _)| d > best) =>
        {
            Some(known)
        }
        _ => None,
    }
}

/// `TROUPE_BIND`, resolved: where to listen, and whether every address the value names is
/// a loopback address (the secure-by-default check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    /// The address troupe listens on.
    pub addr: SocketAddr,
    /// Whether every address the value resolved to is loopback (`localhost` is).
    pub loopback: bool,
}

/// Parses `TROUPE_BIND`: `IP:PORT` (`[IPv6]:PORT`), or `HOST:PORT` with a host name,
/// resolved now. A name that resolves to several addresses listens on the first IPv4 one
/// (else the first), and is loopback only if all of them are.
pub fn parse_bind(value: Option<&str>) -> Result<Bind, ConfigError> {
    let Some(value) = value else {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        return Ok(Bind {
            addr,
            loopback: true,
        });
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(Bind {
            addr,
            loopback: addr.ip().is_loopback(),
        });
    }
    let bad = |problem: String| ConfigError {
        var: BIND_VAR,
        problem,
    };
    let port = value
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains([':', '[', ']', '/']))
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
    let Some((host, port)) = port else {
        return Err(bad(format!(
            "expected HOST:PORT such as 127.0.0.1:8080 or localhost:8080, got {value:?}"
        )));
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve {host:?}: {e}")))?
        .collect();
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
    else {
        return Err(bad(format!("{host:?} resolves to no address")));
    };
    Ok(Bind {
        addr,
        loopback: addrs.iter().all(|a| a.ip().is_loopback()),
    })
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
    /// `TROUPE_STORAGE` (or its older name `TROUPE_UPLOAD_DIR`), default the directory
    /// `./data/uploads`, created at start-up if missing.
    pub storage: Storage,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` as
    /// given: what an `s3://` storage connects with (checked only then).
    pub aws: AwsSettings,
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
        let get = |name: &'static str| {
            debug_assert!(
                is_known(name),
                "{name} is read but not listed in config::VARS"
            );
            vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let bind = parse_bind(get(BIND_VAR))?;
        let config = Self {
            database: parse_database(get("DATABASE_URL"), |name| vars.get(name).cloned())?,
            bind: bind.addr,
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
            storage: parse_storage(get(STORAGE_VAR), get(UPLOAD_DIR_VAR))?,
            aws: AwsSettings {
                access_key_id: get("AWS_ACCESS_KEY_ID").map(str::to_owned),
                secret_access_key: get("AWS_SECRET_ACCESS_KEY").map(|s| Secret(s.to_owned())),
                region: get("AWS_REGION").map(str::to_owned),
                endpoint: get("AWS_ENDPOINT_URL").map(str::to_owned),
            },
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
        crate::logging::LogFormat::parse(get(LOG_FORMAT_VAR))?;
        config.check_access(bind.loopback, get(BIND_VAR))?;
        if let Storage::S3(location) = &config.storage {
            config.aws.check(location)?;
        }
        Ok(config)
    }

    /// Secure by default: without keys, open only on a loopback address (`loopback`: every
    /// address `TROUPE_BIND`, as `given`, resolved to), unless `TROUPE_AUTH=off` says so (and
    /// then no keys may be set, which would say otherwise).
    fn check_access(&self, loopback: bool, given: Option<&str>) -> Result<(), ConfigError> {
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
        if self.api_keys.is_empty() && !loopback {
            let bind = match given {
                Some(name) if name.parse::<SocketAddr>().is_err() => {
                    format!("{name} resolves to an address that")
                }
                _ => format!("{} is", self.bind),
            };
            return Err(ConfigError {
                var: API_KEYS_VAR,
                problem: format!(
                    "unset, and TROUPE_BIND={bind} not a loopback address: set keys (troupe \
                     hash-key NAME SCOPES makes one), or TROUPE_AUTH=off to serve open on purpose"
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
        self.effective()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The effective value of every variable this configuration holds, in [`VARS`]' order,
    /// defaults filled in and secrets masked: the database password and secret-looking URL
    /// query values as `***`, keys by name only. The logger's variables are not in it.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        VARS.iter()
            .filter_map(|var| Some((var.name, self.value_of(var.name)?)))
            .collect()
    }

    /// One variable's effective value, masked; `None` for a variable `Config` does not hold.
    fn value_of(&self, name: &str) -> Option<String> {
        let up = &self.upstream;
        let ms = |d: Duration| d.as_millis().to_string();
        Some(match name {
            "DATABASE_URL" => match &self.database {
                DatabaseUrl::Postgres(url) => mask_url(url),
                DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            },
            BIND_VAR => self.bind.to_string(),
            "TROUPE_WORKERS" => self.workers.to_string(),
            "TROUPE_DB_POOL_SIZE" => self.db_pool_size.to_string(),
            "TROUPE_DB_TIMEOUT_MS" => ms(self.db_timeout),
            "TROUPE_DB_STATEMENT_TIMEOUT_MS" => ms(self.db_statement_timeout),
            "TROUPE_CPU_THREADS" => self.cpu_threads.to_string(),
            STORAGE_VAR => self.storage.to_string(),
            UPLOAD_DIR_VAR => match &self.storage {
                Storage::Dir(dir) => dir.display().to_string(),
                Storage::S3(_) => "none".to_owned(),
            },
            "AWS_ACCESS_KEY_ID" => self
                .aws
                .access_key_id
                .as_deref()
                .unwrap_or("none")
                .to_owned(),
            "AWS_SECRET_ACCESS_KEY" => match self.aws.secret_access_key {
                Some(_) => "***".to_owned(),
                None => "none".to_owned(),
            },
            "AWS_REGION" => self.aws.region().to_owned(),
            "AWS_ENDPOINT_URL" => self
                .aws
                .endpoint
                .as_deref()
                .map_or_else(|| "none".to_owned(), mask_url),
            "TROUPE_MAX_UPLOAD_BYTES" => self.max_upload_bytes.to_string(),
            "TROUPE_TUS_EXPIRY_SECS" => self.tus_expiry.as_secs().to_string(),
            "TROUPE_BODY_TIMEOUT_MS" => ms(self.body_timeout),
            "TROUPE_MAX_ACTIVE_UPLOADS" => self.max_active_uploads.to_string(),
            "TROUPE_UPLOAD_SHARED_RATE_MIB" => self.upload_shared_rate_mib.to_string(),
            "TROUPE_DRAIN_MS" => ms(self.drain),
            "TROUPE_SHUTDOWN_TIMEOUT_MS" => ms(self.shutdown_timeout),
            "TROUPE_UPSTREAMS" if up.sources.is_empty() => "none".to_owned(),
            "TROUPE_UPSTREAMS" => up
                .sources
                .iter()
                .map(|s| format!("{}={}", s.name, mask_url(&s.url)))
                .collect::<Vec<_>>()
                .join(","),
            "TROUPE_UPSTREAM_TIMEOUT_MS" => ms(up.timeout),
            "TROUPE_UPSTREAM_DEADLINE_MS" => ms(up.deadline),
            "TROUPE_UPSTREAM_MAX_BYTES" => up.max_bytes.to_string(),
            "TROUPE_UPSTREAM_BREAKER_FAILURES" => up.breaker_failures.to_string(),
            "TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS" => ms(up.breaker_cooldown),
            "TROUPE_UPSTREAM_CA_FILE" => match up.extra_roots.len() {
                0 => "none".to_owned(),
                n => format!("{n}_certificates"),
            },
            API_KEYS_VAR => keys_summary(&self.api_keys),
            AUTH_VAR => if self.auth_off { "off" } else { "on" }.to_owned(),
            CORS_ORIGINS_VAR => match &self.cors {
                CorsConfig::Off => "none".to_owned(),
                CorsConfig::AnyOrigin => "*".to_owned(),
                CorsConfig::Origins(origins) => origins.join(","),
            },
            RATE_LIMIT_VAR => self.rate_limit.map_or_else(
                || "off".to_owned(),
                |r| match r.per {
                    Per::Second => format!("{}/s", r.requests),
                    Per::Minute => format!("{}/m", r.requests),
                },
            ),
            RATE_BURST_VAR => self
                .rate_limit
                .map_or_else(|| "none".to_owned(), |r| r.burst.to_string()),
            TRUSTED_PROXIES_VAR if self.trusted_proxies.is_empty() => "none".to_owned(),
            TRUSTED_PROXIES_VAR => "set".to_owned(),
            _ => return None,
        })
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
    fn from_vars<'a>(get: impl Fn(&'static str) -> Option<&'a str>) -> Result<Self, ConfigError> {
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

/// Where uploads live (`TROUPE_STORAGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `file://DIR`: files in a directory (`upload::Store`).
    Dir(PathBuf),
    /// `s3://BUCKET/PREFIX`: objects in an S3-compatible bucket (`upload::Bucket`).
    S3(S3Location),
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "file://{}", dir.display()),
            Self::S3(S3Location { bucket, prefix }) if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            Self::S3(S3Location { bucket, prefix }) => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A bucket and the key prefix under which uploads are named (`{prefix}/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket's name.
    pub bucket: String,
    /// Slash-separated, without a leading or trailing slash; empty for the bucket's root.
    pub prefix: String,
}

/// A value that is never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The standard AWS variables, as given; an `s3://` storage needs the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
    /// `AWS_REGION`; `us-east-1` when unset.
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL`: an S3-compatible server, addressed path-style.
    pub endpoint: Option<String>,
}

/// The region when `AWS_REGION` is unset.
pub const DEFAULT_AWS_REGION: &str = "us-east-1";

impl AwsSettings {
    /// The region, defaulted.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_AWS_REGION)
    }

    /// What an `s3://` storage at `location` needs: both keys (troupe never asks an
    /// instance metadata service), and an endpoint, when given, that is an http(s) URL.
    fn check(&self, location: &S3Location) -> Result<(), ConfigError> {
        let needs = |var: &'static str| ConfigError {
            var,
            problem: format!(
                "unset, and TROUPE_STORAGE=s3://{} needs it (instance and profile credentials \
                 are not looked up)",
                location.bucket
            ),
        };
        if self.access_key_id.is_none() {
            return Err(needs("AWS_ACCESS_KEY_ID"));
        }
        if self.secret_access_key.is_none() {
            return Err(needs("AWS_SECRET_ACCESS_KEY"));
        }
        if let Some(endpoint) = &self.endpoint {
            check_upstream_url(endpoint).map_err(|problem| ConfigError {
                var: "AWS_ENDPOINT_URL",
                problem: format!("{problem} (the URL is not shown: it may hold a secret)"),
            })?;
        }
        Ok(())
    }
}

/// Parses `TROUPE_STORAGE`, with `TROUPE_UPLOAD_DIR` as its older name for `file://DIR`:
/// either alone says where; both may be set only when they name the same directory.
fn parse_storage(storage: Option<&str>, upload_dir: Option<&str>) -> Result<Storage, ConfigError> {
    let bad = |problem: String| ConfigError {
        var: STORAGE_VAR,
        problem,
    };
    let Some(value) = storage else {
        return Ok(Storage::Dir(PathBuf::from(
            upload_dir.unwrap_or(DEFAULT_UPLOAD_DIR),
        )));
    };
    let parsed = if let Some(dir) = value.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(bad("file:// needs a directory (file://DIR)".into()));
        }
        Storage::Dir(PathBuf::from(dir))
    } else if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !bucket_ok {
            return Err(bad(format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.' and '-'): expected \
                 s3://BUCKET/PREFIX"
            )));
        }
        let prefix = prefix.trim_end_matches('/');
        let segment_ok =
            |s: &str| !s.is_empty() && s != "." && s != ".." && !s.chars().any(|c| c.is_control());
        if !prefix.is_empty() && !prefix.split('/').all(segment_ok) {
            return Err(bad(format!(
                "the prefix {prefix:?} has an empty, '.' or '..' segment"
            )));
        }
        Storage::S3(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    } else {
        return Err(bad(format!(
            "expected file://DIR or s3://BUCKET/PREFIX, got {value:?}"
        )));
    };
    match (&parsed, upload_dir) {
        (Storage::Dir(dir), Some(old)) if dir == &PathBuf::from(old) => Ok(parsed),
        (_, Some(old)) => Err(bad(format!(
            "set to {parsed}, and TROUPE_UPLOAD_DIR (its older name) to {old:?}: unset one of \
             them"
        ))),
        (_, None) => Ok(parsed),
    }
}

/// `DATABASE_URL`; a PostgreSQL URL's TLS settings (with libpq's `PGSSLMODE` and
/// `PGSSLROOTCERT` from `env`) are checked here, root file included, so that a typo is a
/// configuration error (exit 2, and `check-config` says so) rather than a failed start.
fn parse_database(
    value: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DatabaseUrl, ConfigError> {
    let Some(url) = value else {
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        crate::db::postgres::PgTarget::parse_with(url, env).map_err(|said| {
            // `VAR: problem`, VAR being DATABASE_URL or PGSSLMODE.
            let (var, problem) = match said.split_once(": ") {
                Some(("PGSSLMODE", problem)) => ("PGSSLMODE", problem),
                Some(("DATABASE_URL", problem)) => ("DATABASE_URL", problem),
                _ => ("DATABASE_URL", said.as_str()),
            };
            ConfigError {
                var,
                problem: problem.to_owned(),
            }
        })?;
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
    fn a_postgres_url_s_tls_settings_are_checked_with_the_configuration() {
        let err = Config::from_vars(vars(&[("DATABASE_URL", "postgres://u@h/db?sslmode=on")]))
            .unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.problem.starts_with("sslmode must be"), "{err}");
        let err = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("PGSSLMODE", "on"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "PGSSLMODE");
        let err = Config::from_vars(vars(&[(
            "DATABASE_URL",
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        )]))
        .unwrap_err();
        assert!(err.problem.starts_with("sslrootcert: cannot read"), "{err}");
        Config::from_vars(vars(&[(
            "DATABASE_URL",
            "postgres://u@h/db?sslmode=disable",
        )]))
        .unwrap();
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
        assert_eq!(
            config.storage,
            Storage::Dir(PathBuf::from(DEFAULT_UPLOAD_DIR))
        );
        assert_eq!(config.max_upload_bytes, 1 << 30);
        let config = Config::from_vars(vars(&[("TROUPE_MAX_UPLOAD_BYTES", "4294967296")])).unwrap();
        assert_eq!(config.max_upload_bytes, 4 << 30);
        let err = Config::from_vars(vars(&[("TROUPE_MAX_UPLOAD_BYTES", "1GB")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_MAX_UPLOAD_BYTES");
        let err = Config::from_vars(vars(&[("TROUPE_TUS_EXPIRY_SECS", "0")])).unwrap_err();
        assert_eq!(err.var, "TROUPE_TUS_EXPIRY_SECS");
    }

    #[test]
    fn storage_is_a_directory_or_a_bucket_and_upload_dir_is_its_older_name() {
        let dir = |pairs: &[(&str, &str)]| Config::from_vars(vars(pairs)).map(|c| c.storage);
        assert_eq!(
            dir(&[("TROUPE_UPLOAD_DIR", "/srv/up")]),
            Ok(Storage::Dir("/srv/up".into()))
        );
        assert_eq!(
            dir(&[("TROUPE_STORAGE", "file:///srv/up")]),
            Ok(Storage::Dir("/srv/up".into()))
        );
        // Both, naming the same directory: fine; naming two places: refused, in one line.
        assert_eq!(
            dir(&[
                ("TROUPE_STORAGE", "file://data/x"),
                ("TROUPE_UPLOAD_DIR", "data/x")
            ]),
            Ok(Storage::Dir("data/x".into()))
        );
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
        ];
        for both in [
            vec![("TROUPE_STORAGE", "file://a"), ("TROUPE_UPLOAD_DIR", "b")],
            vec![
                ("TROUPE_STORAGE", "s3://bucket"),
                ("TROUPE_UPLOAD_DIR", "b"),
            ],
        ] {
            let mut pairs = both.clone();
            pairs.extend(keys);
            let err = dir(&pairs).unwrap_err();
            assert_eq!(err.var, "TROUPE_STORAGE", "{err}");
            assert!(err.problem.contains("unset one"), "{err}");
            assert_eq!(err.to_string().lines().count(), 1);
        }
        let mut pairs = vec![("TROUPE_STORAGE", "s3://my-bucket/a/b/")];
        pairs.extend(keys);
        assert_eq!(
            dir(&pairs),
            Ok(Storage::S3(S3Location {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }))
        );
        for bad in [
            "s3://",
            "s3://B",
            "s3://ok-bucket/a//b",
            "s3://ok-bucket/../x",
            "ftp://x",
        ] {
            let mut pairs = vec![("TROUPE_STORAGE", bad)];
            pairs.extend(keys);
            assert_eq!(dir(&pairs).unwrap_err().var, "TROUPE_STORAGE", "{bad}");
        }
    }

    #[test]
    fn a_bucket_needs_both_keys_and_never_shows_the_secret() {
        let err = Config::from_vars(vars(&[("TROUPE_STORAGE", "s3://bucket")])).unwrap_err();
        assert_eq!(err.var, "AWS_ACCESS_KEY_ID");
        let err = Config::from_vars(vars(&[
            ("TROUPE_STORAGE", "s3://bucket"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "AWS_SECRET_ACCESS_KEY");
        let err = Config::from_vars(vars(&[
            ("TROUPE_STORAGE", "s3://bucket"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_ENDPOINT_URL", "minio:9000"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "AWS_ENDPOINT_URL");
        let config = Config::from_vars(vars(&[
            ("TROUPE_STORAGE", "s3://bucket/up"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
        let line = config.summary();
        assert!(!line.contains("s3cr3t"), "{line}");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        for part in [
            "TROUPE_STORAGE=s3://bucket/up ",
            "TROUPE_UPLOAD_DIR=none ",
            "AWS_ACCESS_KEY_ID=AKIDEXAMPLE ",
            "AWS_SECRET_ACCESS_KEY=*** ",
            "AWS_REGION=us-east-1 ",
            "AWS_ENDPOINT_URL=http://127.0.0.1:9000 ",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
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

    /// The variables the logger reads, not `Config`.
    const LOGGER_VARS: [&str; 2] = ["RUST_LOG", LOG_FORMAT_VAR];

    #[test]
    fn every_variable_of_the_table_is_read_and_shown() {
        // Reading a variable that is not in VARS trips a debug assertion in from_vars.
        let defaults = Config::from_vars(vars(&[])).unwrap().effective();
        let shown: Vec<&str> = defaults.iter().map(|(name, _)| *name).collect();
        let held: Vec<&str> = VARS
            .iter()
            .map(|v| v.name)
            .filter(|name| !LOGGER_VARS.contains(name))
            .collect();
        assert_eq!(shown, held);
        // Each is read: a value of its own is refused naming it, or shows (a secret as ***).
        for name in held {
            let shown = if name == "AWS_SECRET_ACCESS_KEY" {
                "***"
            } else {
                "x-unlikely-x"
            };
            match Config::from_vars(vars(&[(name, "x-unlikely-x")])) {
                Err(err) => assert_eq!(err.var, name, "{err}"),
                Ok(config) => assert!(
                    config.effective().contains(&(name, shown.to_owned())),
                    "{name} is not read"
                ),
            }
        }
    }

    #[test]
    fn the_table_says_the_defaults_the_code_applies() {
        let defaults: HashMap<&str, String> = Config::from_vars(vars(&[]))
            .unwrap()
            .effective()
            .into_iter()
            .collect();
        let mut checked = 0;
        for var in VARS.iter().filter(|v| !LOGGER_VARS.contains(&v.name)) {
            // A literal default (a number, an address, a path, a word; perhaps with a note
            // in parentheses) is what the code applies; a description ("number of cores")
            // is not compared.
            let first = var.default.split_whitespace().next().unwrap();
            let rest = var.default[first.len()..].trim();
            if rest.is_empty() || rest.starts_with('(') {
                assert_eq!(
                    first.trim_start_matches("./"),
                    defaults[var.name],
                    "{}",
                    var.name
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn unknown_troupe_variables_are_named_with_the_closest_known_one() {
        let names = [
            "TROUPE_WORKER",
            "TROUPE_BIND",
            "TROUPE_LOG_FORMAT",
            "TROUPE_UPSTREAM_BREAKER_COOLDOWN",
            "TROUPE_SOMETHING_ELSE",
            "PATH",
            "troupe_bind",
        ]
        .map(String::from);
        let warnings = unknown_variables(names);
        assert_eq!(
            warnings,
            [
                "unknown variable TROUPE_SOMETHING_ELSE is ignored (troupe --help lists every \
                 variable)",
                "unknown variable TROUPE_UPSTREAM_BREAKER_COOLDOWN is ignored: did you mean \
                 TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS? (troupe --help lists every variable)",
                "unknown variable TROUPE_WORKER is ignored: did you mean TROUPE_WORKERS? \
                 (troupe --help lists every variable)",
            ]
        );
    }

    #[test]
    fn a_host_name_binds_and_localhost_is_loopback() {
        let bind = parse_bind(Some("localhost:0")).unwrap();
        assert!(bind.loopback && bind.addr.ip().is_loopback(), "{bind:?}");
        assert!(bind.addr.is_ipv4(), "{bind:?}");
        let config = Config::from_vars(vars(&[("TROUPE_BIND", "localhost:8080")])).unwrap();
        assert!(config.is_open());
        assert_eq!(config.bind.port(), 8080);
        for bad in ["localhost", "localhost:http", ":8080", "::1:80", "a/b:80"] {
            let err = Config::from_vars(vars(&[("TROUPE_BIND", bad)])).unwrap_err();
            assert_eq!(err.var, "TROUPE_BIND", "{bad}");
            assert!(err.problem.contains("HOST:PORT"), "{bad}: {err}");
        }
        let err = parse_bind(Some("no-such-host.invalid:80")).unwrap_err();
        assert!(err.problem.contains("cannot resolve"), "{err}");
    }

    #[test]
    fn help_lists_every_variable_within_80_columns() {
        let help = help_text();
        for var in VARS {
            assert!(
                help.contains(&format!("  {}  [default: {}]\n", var.name, var.default)),
                "{}",
                var.name
            );
        }
        assert!(help.lines().all(|l| l.chars().count() <= 80), "{help}");
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
