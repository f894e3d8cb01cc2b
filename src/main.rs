//! troupe's binary: configuration, logging, run; `troupe hash-key NAME SCOPES` makes a key.

use std::process::ExitCode;

use troupe::config::Config;
use troupe::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(command) = args.first() {
        return match (command.as_str(), &args[1..]) {
            ("hash-key", [name, scopes]) => hash_key(name, scopes),
            _ => {
                eprintln!(
                    "usage: troupe                       serve (configured by the environment)\n       \
                     troupe hash-key NAME SCOPES  print a new key and its TROUPE_API_KEYS entry \
                     (SCOPES joined by +, e.g. users:read+uploads:write)"
                );
                ExitCode::from(2)
            }
        };
    }
    troupe::logging::init();
    troupe::install_crypto_provider();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("troupe: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
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
