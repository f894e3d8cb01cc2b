//! troupe's binary: the command line (clap), then configuration, logging, run. With no
//! command it serves; `--help` lists every variable from [`troupe::config::VARS`].

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use troupe::config::{self, Config};
use troupe::db::DbPool;
use troupe::startup::Application;

/// An HTTP microservice on actix actors: users, upstream fan-out, resumable uploads.
///
/// With no command, troupe serves, configured by the environment alone.
#[derive(Parser)]
#[command(name = "troupe", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print its values, secrets masked
    ///
    /// One VARIABLE=value line each, defaults filled in, as the server would run; exit 0.
    /// A bad value: exit 2 and one line naming the variable.
    CheckConfig,
    /// Run the database's pending migrations and exit
    ///
    /// What start-up does before it binds, against DATABASE_URL; exit 0, or 1 and the
    /// driver's cause.
    Migrate,
    /// Ask /readyz on TROUPE_BIND's address: exit 0 on 200, else 1
    ///
    /// For a container's HEALTHCHECK: one GET over a plain socket, to 127.0.0.1 (or ::1)
    /// when troupe listens on every address.
    Healthcheck,
    /// Print a new API key and its TROUPE_API_KEYS entry
    ///
    /// Line 1 is the key, for the client (troupe keeps no copy); line 2 is the entry.
    HashKey {
        /// The key's name, as logs show it
        name: String,
        /// Its scopes joined by +, e.g. users:read+uploads:write (or admin)
        scopes: String,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let matches = Cli::command().after_help(config::help_text()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match cli.command {
        None => serve().await,
        Some(Command::CheckConfig) => check_config(),
        Some(Command::Migrate) => migrate().await,
        Some(Command::Healthcheck) => healthcheck(),
        Some(Command::HashKey { name, scopes }) => hash_key(&name, &scopes),
    }
}

/// The configuration, or the one line that says which variable is wrong (exit 2).
fn config() -> Result<Config, ExitCode> {
    Config::from_env().map_err(|err| {
        eprintln!("troupe: invalid configuration: {err}");
        ExitCode::from(2)
    })
}

/// The unknown `TROUPE_*` variables of the environment, one warning each.
fn unknown_variables() -> Vec<String> {
    config::unknown_variables(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
}

async fn serve() -> ExitCode {
    troupe::logging::init();
    troupe::install_crypto_provider();
    let config = match config() {
        Ok(config) => config,
        Err(code) => return code,
    };
    for warning in unknown_variables() {
        log::warn!("{warning}");
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("troupe: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    match app.run().await {
        Ok(()) => {
            log::info!("exiting with status 0");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("troupe: server failed: {err}");
            ExitCode::from(1)
        }
    }
}

/// `troupe check-config`: `VARIABLE=value` lines on stdout, as the server would run.
fn check_config() -> ExitCode {
    let config = match config() {
        Ok(config) => config,
        Err(code) => return code,
    };
    for warning in unknown_variables() {
        eprintln!("troupe: warning: {warning}");
    }
    for (name, value) in config.effective() {
        println!("{name}={value}");
    }
    ExitCode::SUCCESS
}

/// `troupe migrate`: what start-up does before it binds, and nothing more.
async fn migrate() -> ExitCode {
    troupe::logging::init();
    troupe::install_crypto_provider();
    let config = match config() {
        Ok(config) => config,
        Err(code) => return code,
    };
    match DbPool::migrate(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("troupe: cannot migrate: {err}");
            ExitCode::from(1)
        }
    }
}

/// How long the health check waits to connect, and then for the answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `troupe healthcheck`: one HTTP/1.1 `GET /readyz` to the configured address over a plain
/// socket. Exit 1, never 2, on any failure: 2 is reserved in Docker's HEALTHCHECK.
fn healthcheck() -> ExitCode {
    let bind = match config::parse_bind(
        std::env::var(config::BIND_VAR)
            .ok()
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty()),
    ) {
        Ok(bind) => bind.addr,
        Err(err) => {
            eprintln!("troupe: healthcheck: invalid configuration: {err}");
            return ExitCode::from(1);
        }
    };
    let addr = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, bind.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, bind.port()))
        }
        _ => bind,
    };
    match readyz_status(addr) {
        Ok(200) => {
            println!("troupe: healthcheck: http://{addr}/readyz answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("troupe: healthcheck: http://{addr}/readyz answered {status}");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("troupe: healthcheck: http://{addr}/readyz: {err}");
            ExitCode::from(1)
        }
    }
}

/// The status code of `GET /readyz` at `addr`.
fn readyz_status(addr: SocketAddr) -> std::io::Result<u16> {
    let mut conn = TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT)?;
    conn.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    conn.set_write_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    // One write: `write!` on the socket would send each piece of the format by itself, and
    // a server that answers after the first could close before the rest (a broken pipe).
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: troupe-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())?;
    // The status line is all it needs: `HTTP/1.1 200 OK`.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 64 && !head.ends_with(b"\r\n") && conn.read(&mut byte)? == 1 {
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {:?}", line.trim_end()),
            )
        })
}

/// `troupe hash-key NAME SCOPES`: a fresh key on the first line of stdout, the
/// `TROUPE_API_KEYS` entry that accepts it on the second. troupe keeps neither.
fn hash_key(name: &str, scopes: &str) -> ExitCode {
    match troupe::auth::new_key(name, scopes) {
        Ok(new) => {
            println!("{}", new.key);
            println!("{}", new.entry);
            eprintln!(
                "troupe: the first line is the key (give it to the client, as \
                 Authorization: Bearer KEY); the second goes in TROUPE_API_KEYS"
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("troupe: hash-key: {err}");
            ExitCode::from(2)
        }
    }
}
