//! troupe's binary: configuration, logging, run.

use std::process::ExitCode;

use troupe::config::Config;
use troupe::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
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
