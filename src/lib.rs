//! troupe: an HTTP microservice in which actix-web handlers forward every request, as a
//! message, to supervised actors (`DbActor`, `CpuActor`, ...). See `docs/API.md`.

pub mod actors;
pub mod config;
pub mod cpu;
pub mod db;
pub mod error;
pub mod fetch;
pub mod middleware;
pub mod routes;
pub mod startup;
pub mod upload;

/// Installs rustls' `ring` crypto provider for the process (awc's TLS needs one before any
/// client is built). Idempotent: later calls, and a provider installed by someone else, are fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
