//! What the tests share: the real troupe on port 0 over a fresh database ([`spawn_app`]),
//! the requests they send it, and what they stand on (databases, files, forms, a small
//! disk, an upstream server, an S3-compatible server, real tus clients, the binary itself,
//! replicas of it behind HAProxy).

mod app;
mod binary;
mod clients;
mod files;
mod forms;
mod haproxy;
mod http;
mod lock_replicas;
mod pg;
mod raw_http;
mod replicas;
mod requests;
mod s3;
mod skip;
mod small_disk;
mod upstream_stub;
mod write_lock;

pub use app::{
    spawn_app, spawn_app_with, start, test_config, test_db, troupe, Backend, TestApp, TestDb,
};
pub use binary::RunningBinary;
pub use clients::{
    client_source, run_client, tus_client_required, tuspy_python, Access, OTHER_KEY,
};
pub use files::{assert_no_files_left, files_under, hex, sha256_hex, Noise};
pub use forms::{content_type, form, framing, BOUNDARY};
pub use haproxy::{logged_status, Haproxy};
pub use http::{header, read_json, request_id};
pub use lock_replicas::{patch_answer, LockReplicas};
pub use pg::{PgTestDb, PrivateCluster, ServerCert};
pub use raw_http::{
    ends_unanswered, send_partial, wait_until_read, wait_until_read_blocking, Answer, Failure,
    KeepAlive,
};
pub use replicas::{free_port, Replicas, Storage};
pub use requests::Reply;
#[allow(
    unused_imports,
    reason = "Moto: the name cases written against moto alone use"
)]
pub use s3::{Moto, S3Kind, S3Server};
pub use skip::skip;
pub use small_disk::app_on_small_disk;
pub use upstream_stub::{refused_url, Event, Stub};
pub use write_lock::WriteLock;

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

/// Declares each case on moto as `name::sqlite` and `name::postgres`, and on SeaweedFS as
/// `seaweedfs::name` (SQLite only: what it adds is the store, not the database).
#[macro_export]
macro_rules! on_each_store {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix::test]
                async fn sqlite() {
                    super::$body($crate::helpers::Backend::Sqlite, $crate::helpers::S3Kind::Moto)
                        .await
                }
                #[actix::test]
                async fn postgres() {
                    super::$body(
                        $crate::helpers::Backend::Postgres,
                        $crate::helpers::S3Kind::Moto,
                    )
                    .await
                }
            }
        )*
        mod seaweedfs {
            $(
                #[actix::test]
                async fn $name() {
                    super::$body(
                        $crate::helpers::Backend::Sqlite,
                        $crate::helpers::S3Kind::Seaweedfs,
                    )
                    .await
                }
            )*
        }
    };
}
