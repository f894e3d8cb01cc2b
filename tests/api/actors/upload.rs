//! `UploadActor` and `CpuActor` alone: started under an actix system, sent messages,
//! both result layers asserted (no HTTP server).

use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use troupe::actors::cpu::{CpuPool, HashChunk};
use troupe::actors::db::{AdvanceUpload, Db, DbActor, GetUpload};
use troupe::actors::supervise::{ask, InjectFault};
use troupe::actors::upload::{
    BeginPatch, CreateFile, CreateTusUpload, EndSession, FinishFile, SessionGuard, SweepExpired,
    UploadActor, WriteChunk,
};
use troupe::config::Config;
use troupe::db::uploads::Upload;
use troupe::db::DbPool;
use troupe::digest::{hex, Algorithm, Hasher};
use troupe::error::AppError;
use troupe::ids::UploadId;
use troupe::time::now;
use troupe::upload::Store;
use uuid::Uuid;

use crate::helpers::files_under;

const T: Duration = Duration::from_secs(10);

struct Rig {
    dir: TempDir,
    upload: Addr<UploadActor>,
    db: Addr<DbActor>,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("t.db").display());
    let config = Config::from_vars([("DATABASE_URL".to_string(), db_url)]).unwrap();
    let pool = DbPool::connect(&config).await.unwrap();
    let db = DbActor::new(pool, 64).start();
    let store = Store::open(&dir.path().join("uploads")).unwrap();
    let cpu = CpuPool::start(1, T);
    let upload = UploadActor::new(
        store,
        Db::new(db.clone(), T),
        cpu,
        Duration::from_secs(3600),
        Default::default(),
    )
    .start();
    Rig { dir, upload, db }
}

fn row(id: UploadId, size: u64, complete: bool) -> Upload {
    let at = now();
    Upload {
        id,
        filename: "f.bin".into(),
        content_type: "application/octet-stream".into(),
        size,
        upload_offset: if complete { size } else { 0 },
        sha256: None,
        complete,
        tus_metadata: None,
        expires_at: (!complete).then(|| at + chrono::Duration::hours(1)),
        created_at: at,
        updated_at: at,
        owner: None,
        multipart_id: None,
    }
}

#[actix_web::test]
async fn upload_actor_writes_batches_in_order_and_finishes_into_place() {
    let rig = rig().await;
    let (id, session) = (UploadId::new(), Uuid::new_v4());
    ask(&rig.upload, CreateFile { session, id }, T)
        .await
        .unwrap();
    let parts = [
        Bytes::from_static(b"hello "),
        Bytes::from_static(b"actor "),
        Bytes::from_static(b"world"),
    ];
    let mut total = 0;
    for part in &parts {
        total = ask(
            &rig.upload,
            WriteChunk {
                session,
                chunks: vec![part.clone()],
            },
            T,
        )
        .await
        .unwrap();
    }
    assert_eq!(total, 17);
    let temp = rig.dir.path().join(format!("uploads/.tmp/{id}.part"));
    assert!(temp.exists(), "written to a temp name first");
    assert!(!rig.dir.path().join(format!("uploads/{id}")).exists());

    let done = ask(
        &rig.upload,
        FinishFile {
            session,
            row: row(id, 17, true),
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(done.id, id.to_string());
    assert_eq!(
        std::fs::read(rig.dir.path().join(format!("uploads/{id}"))).unwrap(),
        b"hello actor world"
    );
    assert!(!temp.exists());
    assert!(ask(&rig.db, GetUpload(id), T).await.unwrap().complete);
    // The session is over: more writes are refused.
    let late = ask(
        &rig.upload,
        WriteChunk {
            session,
            chunks: vec![Bytes::from_static(b"x")],
        },
        T,
    )
    .await;
    assert!(matches!(late, Err(AppError::Internal(_))), "{late:?}");
}

#[actix_web::test]
async fn upload_actor_discards_an_abandoned_session_and_keeps_no_row() {
    let rig = rig().await;
    let (id, session) = (UploadId::new(), Uuid::new_v4());
    let guard = SessionGuard::new(rig.upload.clone(), session, false);
    ask(&rig.upload, CreateFile { session, id }, T)
        .await
        .unwrap();
    ask(
        &rig.upload,
        WriteChunk {
            session,
            chunks: vec![Bytes::from(vec![1u8; 100_000])],
        },
        T,
    )
    .await
    .unwrap();
    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_under(&rig.dir.path().join("uploads")).is_empty() {
        assert!(Instant::now() < deadline, "temp file left behind");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = ask(&rig.db, GetUpload(id), T).await;
    assert!(matches!(missing, Err(AppError::NotFound(_))), "{missing:?}");
}

/// What `HEAD` would report: the offset in the database.
async fn recorded_offset(rig: &Rig, id: UploadId) -> u64 {
    ask(&rig.db, GetUpload(id), T).await.unwrap().upload_offset
}

/// A new PATCH session on `id`.
async fn begin(rig: &Rig, id: UploadId, checkpoint_every: Option<u64>) -> Uuid {
    let session = Uuid::new_v4();
    let begin = BeginPatch {
        session,
        id,
        checkpoint_every,
        access: None,
    };
    ask(&rig.upload, begin, T).await.unwrap();
    session
}

async fn end_session(rig: &Rig, session: Uuid, keep: bool) -> troupe::actors::upload::SessionEnd {
    ask(&rig.upload, EndSession { session, keep }, T)
        .await
        .unwrap()
}

async fn write(rig: &Rig, session: Uuid, bytes: &'static [u8]) -> u64 {
    ask(
        &rig.upload,
        WriteChunk {
            session,
            chunks: vec![Bytes::from_static(bytes)],
        },
        T,
    )
    .await
    .unwrap()
}

#[actix_web::test]
async fn a_long_patch_records_its_offset_at_each_checkpoint() {
    let rig = rig().await;
    let id = UploadId::new();
    ask(&rig.upload, CreateTusUpload(row(id, 12, false)), T)
        .await
        .unwrap();
    let session = begin(&rig, id, Some(4)).await;

    write(&rig, session, b"123").await;
    assert_eq!(recorded_offset(&rig, id).await, 0, "under a checkpoint");
    write(&rig, session, b"45").await;
    assert_eq!(recorded_offset(&rig, id).await, 5, "checkpoint at 5");
    let tus_file = rig.dir.path().join(format!("uploads/tus/{id}"));
    assert_eq!(std::fs::read(&tus_file).unwrap(), b"12345");
    write(&rig, session, b"678").await;
    assert_eq!(
        recorded_offset(&rig, id).await,
        5,
        "3 bytes past the last one"
    );

    // A session that keeps nothing more goes back to its last checkpoint, not its start.
    let end = end_session(&rig, session, false).await;
    assert_eq!(end.offset, 5);
    assert_eq!(std::fs::read(&tus_file).unwrap(), b"12345");

    // The bytes that complete an upload are never a checkpoint: the end completes it.
    let session = begin(&rig, id, Some(4)).await;
    write(&rig, session, b"6789abc").await;
    assert_eq!(recorded_offset(&rig, id).await, 5);
    let end = end_session(&rig, session, true).await;
    assert_eq!(end.offset, 12);
    let done = end.completed.expect("completed");
    assert_eq!(done.sha256.unwrap(), hex(&Sha256::digest(b"123456789abc")));
}

#[actix_web::test]
async fn upload_actor_lets_one_patch_session_hold_a_tus_upload_at_a_time() {
    let rig = rig().await;
    let id = UploadId::new();
    ask(&rig.upload, CreateTusUpload(row(id, 10, false)), T)
        .await
        .unwrap();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let at = ask(
        &rig.upload,
        BeginPatch {
            session: first,
            id,
            checkpoint_every: None,
            access: None,
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(at.row.upload_offset, 0);
    let refused = ask(
        &rig.upload,
        BeginPatch {
            session: second,
            id,
            checkpoint_every: None,
            access: None,
        },
        T,
    )
    .await;
    assert!(matches!(refused, Err(AppError::Locked(_))), "{refused:?}");

    ask(
        &rig.upload,
        WriteChunk {
            session: first,
            chunks: vec![Bytes::from_static(b"12345")],
        },
        T,
    )
    .await
    .unwrap();
    let end = ask(
        &rig.upload,
        EndSession {
            session: first,
            keep: true,
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(end.offset, 5);
    assert!(end.completed.is_none());

    // Free again; a session that keeps nothing leaves the offset where it was.
    let third = Uuid::new_v4();
    let at = ask(
        &rig.upload,
        BeginPatch {
            session: third,
            id,
            checkpoint_every: None,
            access: None,
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(at.row.upload_offset, 5);
    ask(
        &rig.upload,
        WriteChunk {
            session: third,
            chunks: vec![Bytes::from_static(b"6789")],
        },
        T,
    )
    .await
    .unwrap();
    let end = ask(
        &rig.upload,
        EndSession {
            session: third,
            keep: false,
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(end.offset, 5);
    let tus_file = rig.dir.path().join(format!("uploads/tus/{id}"));
    assert_eq!(std::fs::read(&tus_file).unwrap(), b"12345");

    // The last bytes complete it: digested, moved into place, marked complete.
    let fourth = Uuid::new_v4();
    ask(
        &rig.upload,
        BeginPatch {
            session: fourth,
            id,
            checkpoint_every: None,
            access: None,
        },
        T,
    )
    .await
    .unwrap();
    ask(
        &rig.upload,
        WriteChunk {
            session: fourth,
            chunks: vec![Bytes::from_static(b"67890")],
        },
        T,
    )
    .await
    .unwrap();
    let end = ask(
        &rig.upload,
        EndSession {
            session: fourth,
            keep: true,
        },
        T,
    )
    .await
    .unwrap();
    let done = end.completed.unwrap();
    assert_eq!(done.sha256.unwrap(), hex(&Sha256::digest(b"1234567890")));
    assert!(!tus_file.exists());
    assert!(rig.dir.path().join(format!("uploads/{id}")).exists());
}

#[actix_web::test]
async fn upload_actor_panic_fails_one_message_and_it_serves_the_next() {
    let rig = rig().await;
    let addr = Supervisor::start({
        let dir = rig.dir.path().join("uploads2");
        let store = Store::open(&dir).unwrap();
        let db = Db::new(rig.db.clone(), T);
        move |_| {
            UploadActor::new(
                store,
                db,
                CpuPool::start(1, T),
                Duration::from_secs(3600),
                Default::default(),
            )
        }
    });
    let failed = ask(&addr, InjectFault::Panic, T).await;
    assert!(matches!(failed, Err(AppError::Internal(_))), "{failed:?}");
    let (id, session) = (UploadId::new(), Uuid::new_v4());
    ask(&addr, CreateFile { session, id }, T).await.unwrap();
}

#[actix_web::test]
async fn cpu_actor_chains_hash_jobs_to_the_one_shot_digest() {
    let pool = CpuPool::start(2, T);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut hasher = Box::new(Hasher::new(Algorithm::Sha256));
    for batch in data.chunks(1 << 20) {
        let chunks = batch.chunks(65_536).map(Bytes::copy_from_slice).collect();
        hasher = pool.run(HashChunk { hasher, chunks }).await.unwrap();
    }
    assert_eq!(hex(&hasher.finish()), hex(&Sha256::digest(&data)));
}

#[actix_web::test]
async fn cpu_pool_refuses_at_once_or_after_a_bounded_wait_when_saturated() {
    // One thread, so two places: both taken by blocked jobs.
    let pool = CpuPool::start(1, T);
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            actix_web::rt::spawn(async move {
                pool.run(InjectFault::Block(Duration::from_millis(1500)))
                    .await
            })
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let job = || HashChunk {
        hasher: Box::new(Hasher::new(Algorithm::Sha1)),
        chunks: vec![Bytes::from_static(b"abc")],
    };
    let at_once = pool.run(job()).await;
    assert!(
        matches!(at_once, Err(AppError::Overloaded(_))),
        "{:?}",
        at_once.map(|_| ())
    );
    let started = Instant::now();
    let bounded = pool.run_waiting(job(), Duration::from_millis(200)).await;
    assert!(matches!(bounded, Err(AppError::Overloaded(_))));
    assert!(started.elapsed() < Duration::from_millis(1000));
    // Waiting long enough gets the job done, once a place frees.
    let waited = pool
        .run_waiting(job(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        hex(&waited.finish()),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    for blocker in blockers {
        blocker.await.unwrap().unwrap();
    }
    // A panicking job fails alone; the thread serves the next one.
    let panicked = pool.run(InjectFault::Panic).await;
    assert!(matches!(panicked, Err(AppError::Internal(_))));
    assert!(pool.run(job()).await.is_ok());
}

/// A crash between a last PATCH's offset and the upload's completion (before or after the
/// rename) leaves it whole but unfinished: the sweep finishes it instead of expiring it.
#[actix_web::test]
async fn upload_actor_finishes_uploads_a_crash_left_whole_but_unfinished() {
    let rig = rig().await;
    for moved in [false, true] {
        let id = UploadId::new();
        ask(&rig.upload, CreateTusUpload(row(id, 5, false)), T)
            .await
            .unwrap();
        let tus_file = rig.dir.path().join(format!("uploads/tus/{id}"));
        std::fs::write(&tus_file, b"whole").unwrap();
        if moved {
            std::fs::rename(&tus_file, rig.dir.path().join(format!("uploads/{id}"))).unwrap();
        }
        let advance = AdvanceUpload {
            id,
            from: 0,
            to: 5,
            expires_at: now() - chrono::Duration::hours(1),
            parts: Vec::new(),
        };
        assert!(ask(&rig.db, advance, T).await.unwrap());

        // The actor's own start-up sweep may be finishing it at the same moment (it then
        // holds the file, and this sweep leaves the upload to it): sweep until it is done.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let done = loop {
            ask(&rig.upload, SweepExpired, T).await.unwrap();
            let row = ask(&rig.db, GetUpload(id), T).await.unwrap();
            if row.complete || std::time::Instant::now() > deadline {
                break row;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(done.complete, "moved={moved}");
        assert_eq!(done.sha256.unwrap(), hex(&Sha256::digest(b"whole")));
        assert_eq!(
            std::fs::read(rig.dir.path().join(format!("uploads/{id}"))).unwrap(),
            b"whole"
        );
        assert!(!tus_file.exists());
    }
}
