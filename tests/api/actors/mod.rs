//! Each actor on its own, under `#[actix::test]`: started as `Services` start them, sent
//! its messages directly, both result layers asserted (no HTTP server).

mod db;
mod fetch;
mod upload;
