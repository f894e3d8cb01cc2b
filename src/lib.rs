//! troupe: an HTTP microservice in which actix-web handlers forward every request, as a
//! message, to supervised actors, through one typed handle per actor. See `docs/API.md`
//! for the contract and the README's "How it is built" for the layers.

pub mod actors;
pub mod auth;
pub mod bulk;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod services;
pub mod shutdown;
pub mod startup;
pub mod time;
pub mod upload;

/// Installs rustls' `ring` crypto provider for the process (awc's TLS needs one before any
/// client is built). Idempotent: later calls, and a provider installed by someone else, are fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
