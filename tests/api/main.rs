//! troupe's integration tests: one binary, the real server on port 0, real databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod access;
mod actors;
mod backpressure;
mod cli;
mod db_faults;
mod errors;
mod fetch;
mod health;
mod http_semantics;
mod json_logs;
mod log_lines;
mod logs;
mod metrics;
mod openapi;
mod ownership;
mod pg_tls;
mod rate_limits;
mod replicas;
mod s3;
mod shutdown;
mod stalled;
mod startup;
mod supervision;
mod tus;
mod tus_js;
mod tus_replicas;
mod tus_s3;
mod uploads;
mod users;
