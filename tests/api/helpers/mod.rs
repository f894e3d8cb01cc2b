//! What the tests share: the real troupe on port 0 over a fresh database ([`spawn_app`]),
//! the requests they send it, and the databases they stand on.

mod app;
mod http;
mod pg;
mod requests;

pub use app::{spawn_app, spawn_app_with, start, test_config, test_db, Backend, TestApp, TestDb};
pub use http::{read_json, request_id};
pub use pg::PgTestDb;

/// Declares one test per backend: `both_backends!(name, async_fn)` makes `name::sqlite`
/// and `name::postgres`, each calling `async_fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix::test]
                async fn sqlite() {
                    super::$body($crate::helpers::Backend::Sqlite).await
                }
                #[actix::test]
                async fn postgres() {
                    super::$body($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}
