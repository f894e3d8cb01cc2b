//! Each actor on its own, under `#[actix::test]`: started as `Actors::start` starts it, sent
//! its messages directly, both result layers asserted (no HTTP server).

mod db;
mod fetch;
mod upload;
