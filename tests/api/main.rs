//! troupe's integration tests: one binary, the real server on port 0, real databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod backpressure;
mod db_actor;
mod errors;
mod fetch;
mod fetch_actor;
mod health;
mod startup;
mod supervision;
mod tus;
mod tus_js;
mod upload_actors;
mod uploads;
mod users;
