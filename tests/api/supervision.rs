//! Failure isolation: a panic fails one request, the actor serves the next one; a wedged
//! actor turns `/readyz` 503 until it is back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use troupe::actors::cpu::ComputeDigest;
use troupe::actors::supervise::{ask, InjectFault};
use troupe::digest::Algorithm;
use troupe::error::AppError;

use crate::helpers::{request_id, spawn_app, spawn_app_with, Backend};

async fn a_db_actor_panic_fails_that_request_with_500_and_the_next_one_is_served(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for kind in ["panic", "panic_in_future"] {
        let (status, _, body) = app.inject_fault("db", kind).await;
        assert_eq!(status, 500, "{kind}: {body}");
        assert_eq!(body["error"]["code"], "internal");
        assert!(
            !body.to_string().contains("injected"),
            "the panic text leaked: {body}"
        );

        let (status, _, body) = app.list_users("").await;
        assert_eq!(status, 200, "after {kind}: {body}");
    }
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

crate::both_backends!(db_actor_panic => a_db_actor_panic_fails_that_request_with_500_and_the_next_one_is_served);

#[actix_web::test]
async fn a_panicking_http_handler_answers_500_json_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for _ in 0..4 {
        let (status, headers, body) = app.inject_fault("none", "handler_panic").await;
        let id = request_id(&headers);
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["request_id"], id.as_str());
    }
    let (status, _, _) = app.get_json("/ping").await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_sync_arbiter_thread_survives_a_panic_in_its_handler() {
    // One CPU thread: if the panic killed it, nothing would answer afterwards.
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_CPU_THREADS", "1")])
        .await
        .unwrap();
    let cpu = app.services.cpu.addr();
    for _ in 0..3 {
        let err = ask(cpu, InjectFault::Panic, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::Internal(_)), "{err:?}");
        let digest = app
            .services
            .cpu
            .run(ComputeDigest {
                algorithm: Algorithm::Sha256,
                data: Bytes::from_static(b"abc"),
            })
            .await
            .unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn readyz_is_503_while_an_actor_is_wedged_and_200_when_it_is_back() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    // Blocks the DbActor's thread for 2 s, as a wedged actor would.
    let client = app.client.clone();
    let url = app.url("/_test/fault/db/block");
    let blocker =
        actix_web::rt::spawn(
            async move { client.post(url).send().await.map(|r| r.status().as_u16()) },
        );
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;

    let (status, headers, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["components"]["db_actor"]["state"], "down", "{body}");
    // Requests that need another actor, or none, are not held up.
    let started = Instant::now();
    let (status, _, _) = app.get_json("/ping").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));

    assert_eq!(blocker.await.unwrap().unwrap(), 204);
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn db_actor_unit_panic_then_serves_on_the_same_address() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let err = ask(
        app.services.db.addr(),
        InjectFault::Panic,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AppError::Internal(_)));
    let page = ask(
        app.services.db.addr(),
        troupe::actors::db::ListUsers(troupe::db::page::PageRequest {
            limit: 10,
            after: troupe::ids::UserId(0),
        }),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(page.users.is_empty());
}
