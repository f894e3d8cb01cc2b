//! troupe: an HTTP microservice in which actix-web handlers forward every request, as a
//! message, to supervised actors (`DbActor`, `CpuActor`, ...). See `docs/API.md`.

pub mod actors;
pub mod config;
pub mod cpu;
pub mod db;
pub mod error;
pub mod middleware;
pub mod routes;
pub mod startup;
