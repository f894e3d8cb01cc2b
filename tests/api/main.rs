//! troupe's integration tests: one binary, the real server on port 0, real databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod backpressure;
mod errors;
mod health;
mod startup;
mod supervision;
mod tus;
mod upload_actors;
mod uploads;
mod users;
