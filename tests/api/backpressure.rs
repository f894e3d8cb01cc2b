//! Backpressure and outages: an exhausted pool or a lost database answers 503 with
//! `Retry-After` within the timeout, and the service recovers by itself.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, start, Backend};

#[actix_web::test]
async fn an_exhausted_pool_answers_503_with_retry_after_within_the_timeout() {
    let Some(app) = spawn_app_with(
        Backend::Postgres,
        &[
            ("TROUPE_DB_POOL_SIZE", "2"),
            ("TROUPE_DB_TIMEOUT_MS", "300"),
        ],
    )
    .await
    else {
        return;
    };
    // An outside transaction holds the table: the pool's 2 connections block on it.
    let pg = app.db.pg();
    let locker = pg.lock_users().await;

    let started = Instant::now();
    let requests = (0..6).map(|_| app.list_users(""));
    let answers = futures::future::join_all(requests).await;
    let elapsed = started.elapsed();

    let overloaded: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .collect();
    assert!(
        overloaded.len() >= 4,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (_, headers, body) in &overloaded {
        assert!(headers.contains_key("retry-after"));
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
    }
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    locker.batch_execute("ROLLBACK").await.unwrap();
    let (status, _, body) = app.list_users("").await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn a_lost_database_answers_503_and_the_service_recovers_without_a_restart() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let (status, _, _) = app.list_users("").await;
    assert_eq!(status, 200);
    let pg = app.db.pg();
    let name = &pg.name;
    pg.cut_off().await;

    let started = Instant::now();
    for _ in 0..3 {
        let (status, headers, body) = app.list_users("").await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.contains_key("retry-after"));
        assert!(
            ["database_unavailable", "overloaded"]
                .contains(&body["error"]["code"].as_str().unwrap()),
            "{body}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["components"]["database"]["state"], "down");

    pg.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = app.list_users("").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_client_that_goes_away_leaves_no_open_transaction_behind() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let pg = app.db.pg();
    let locker = pg.lock_users().await;
    // Clients that give up while their writes wait on the lock.
    let impatient = awc::Client::builder()
        .timeout(Duration::from_millis(100))
        .finish();
    for i in 0..4 {
        let res = impatient
            .post(app.url("/users"))
            .send_json(&json!({"name": "Gone", "email": format!("gone{i}@example.com")}))
            .await;
        assert!(
            res.is_err(),
            "the request should have timed out on the client side"
        );
    }
    locker.batch_execute("ROLLBACK").await.unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;

    let rows = locker
        .query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            &[&pg.name],
        )
        .await
        .unwrap();
    let open: i64 = rows[0].get(0);
    assert_eq!(open, 0);
    let (status, _, _) = app.create_user("Next", "next@example.com").await;
    assert_eq!(status, 201);
}

async fn data_survives_a_restart(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, _, user) = app.create_user("Kept", "kept@example.com").await;
    assert_eq!(status, 201);
    let (db, dir) = app.stop().await;
    let app = start(db, dir, &[]).await;
    let (status, _, again) = app.get_user(&user["id"]).await;
    assert_eq!((status, again), (200, user));
}

crate::both_backends!(restart_keeps_data => data_survives_a_restart);
