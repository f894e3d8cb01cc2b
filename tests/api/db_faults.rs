//! The database failing under a running troupe: a write that outlives its statement timeout
//! is ended by the database before troupe answers 503, so the retry the 503 invites is a
//! first try; connections the server ended cost no request; while the database is down,
//! requests fail at once with `database_unavailable` and succeed again once it is back; the
//! database side's log lines name the request they serve.

use std::time::{Duration, Instant};

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::{
    read_json, spawn_app, spawn_app_with, Backend, PgTestDb, PrivateCluster, Reply, RunningBinary,
    TestApp, WriteLock,
};

/// The emails of the users `app` lists, in id order.
async fn emails(app: &TestApp) -> Vec<String> {
    let (status, _, page) = app.list_users("limit=1000").await;
    assert_eq!(status, 200, "{page}");
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_unavailable((status, headers, body): &Reply) {
    assert_eq!(*status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert!(headers.contains_key("retry-after"));
}

async fn a_write_that_outlives_its_statement_timeout_is_not_made(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("TROUPE_DB_STATEMENT_TIMEOUT_MS", "300")]).await
    else {
        return;
    };
    let (status, _, _) = app.create_user("Early", "early@example.com").await;
    assert_eq!(status, 201);

    let lock = WriteLock::hold(&app.db).await;
    let (status, headers, body) = app.create_user("Late", "late@example.com").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(headers.contains_key("retry-after"));
    // Held well past the answer: a statement still waiting for the lock would go on now.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    lock.release().await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(emails(&app).await, ["early@example.com"]);
    // The retry the 503 invites is a first try, not a 409.
    let (status, _, body) = app.create_user("Late", "late@example.com").await;
    assert_eq!(status, 201, "{body}");
}

crate::both_backends!(a_503_write_was_not_made => a_write_that_outlives_its_statement_timeout_is_not_made);

/// Reads and writes of every kind, one after another, each of which must succeed; the
/// first is a write when `write_first`.
async fn every_kind_of_request_succeeds(app: &TestApp, tag: &str, write_first: bool) {
    if !write_first {
        assert_eq!(app.list_users("").await.0, 200);
    }
    let (status, _, user) = app
        .create_user("After", &format!("{tag}@example.com"))
        .await;
    assert_eq!(status, 201, "{tag}: {user}");
    let (status, _, got) = app.get_user(&user["id"]).await;
    assert_eq!(status, 200, "{tag}: {got}");
    let (status, _, body) = app
        .update_user(&user["id"], &json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, 200, "{tag}: {body}");
    assert_eq!(app.list_users("").await.0, 200);
    let (status, _, body) = app.delete_user(&user["id"]).await;
    assert_eq!(status, 204, "{tag}: {body}");
}

#[actix_web::test]
async fn connections_the_server_ended_cost_no_request() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    // Several pooled connections, all idle.
    let warm = futures::future::join_all((0..8).map(|_| app.list_users(""))).await;
    assert!(warm.iter().all(|(status, _, _)| *status == 200));
    let pg = app.db.pg();
    for round in 0..4 {
        let ended = pg.terminate_sessions().await;
        assert!(ended >= 1, "round {round}: no session to end");
        every_kind_of_request_succeeds(&app, &format!("round{round}"), round % 2 == 0).await;
    }
    // Many requests at once, each meeting a connection the server ended.
    assert!(pg.terminate_sessions().await >= 1);
    let emails: Vec<_> = (0..4).map(|i| format!("many{i}@example.com")).collect();
    let writes = emails.iter().map(|email| app.create_user("Many", email));
    let reads = (0..4).map(|_| app.list_users(""));
    let (writes, reads) = futures::join!(
        futures::future::join_all(writes),
        futures::future::join_all(reads)
    );
    for (status, _, body) in writes {
        assert_eq!(status, 201, "{body}");
    }
    for (status, _, body) in reads {
        assert_eq!(status, 200, "{body}");
    }
}

#[actix_web::test]
async fn a_read_cut_off_mid_statement_runs_again_and_a_write_is_not_resent() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let (_, _, user) = app.create_user("Kept", "kept@example.com").await;
    let pg = app.db.pg();
    let get = |path: String| {
        let req = app.client.get(app.url(&path));
        async move { read_json(req.send().await.expect("request failed")).await }
    };

    // A read waits on the lock; the server ends its connection; it runs again and, once the
    // lock is gone, answers.
    let locker = pg.lock_users().await;
    let read = actix_web::rt::spawn(get(format!("/users/{}", user["id"])));
    pg.terminate_a_waiting_session().await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (status, _, got) = read.await.unwrap();
    assert_eq!((status, got), (200, user));

    // A write cut off the same way may have reached the server: it is not sent again.
    let locker = pg.lock_users().await;
    let post = app
        .client
        .request(Method::POST, app.url("/users"))
        .send_json(&json!({"name": "Cut", "email": "cut@example.com"}));
    let write = actix_web::rt::spawn(async move { read_json(post.await.unwrap()).await });
    pg.terminate_a_waiting_session().await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_unavailable(&write.await.unwrap());
    assert_eq!(emails(&app).await, ["kept@example.com"]);
    let (status, _, body) = app.create_user("Cut", "cut@example.com").await;
    assert_eq!(status, 201, "{body}");
}

#[actix_web::test]
async fn a_database_that_refuses_connections_fails_requests_at_once() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    assert_eq!(app.list_users("").await.0, 200);
    let pg = app.db.pg();
    pg.cut_off().await;

    // Each would wait the whole TROUPE_DB_TIMEOUT_MS (1 s here) without the circuit.
    let started = Instant::now();
    for i in 0..3 {
        assert_unavailable(&app.list_users("").await);
        assert_unavailable(&app.create_user("No", &format!("no{i}@example.com")).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["components"]["database"]["code"], "database_unavailable",
        "{body}"
    );

    pg.admin(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        pg.name
    ))
    .await;
    wait_until_served(|| app.list_users("")).await;
    every_kind_of_request_succeeds(&app, "back", true).await;
    assert_eq!(app.get_json("/readyz").await.0, 200);
}

/// Polls `request` until it answers 200, for at most 10 s.
async fn wait_until_served<F, Fut>(request: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = request().await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never served again: {body}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a request to the binary at `address`.
async fn call(address: &str, method: Method, path: &str, body: Option<Value>, id: &str) -> Reply {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let req = client
        .request(method, format!("{address}{path}"))
        .insert_header(("x-request-id", id));
    let res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    };
    read_json(res.expect("request failed")).await
}

#[actix_web::test]
async fn while_postgres_is_down_requests_fail_at_once_and_succeed_once_it_is_back() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(
        dir.path(),
        &[
            ("DATABASE_URL", &cluster.url),
            ("TROUPE_DB_TIMEOUT_MS", "2000"),
        ],
    );
    let at = bin.address.as_str();
    let user = |n: &str| Some(json!({"name": "U", "email": format!("{n}@example.com")}));
    assert_eq!(
        call(at, Method::POST, "/users", user("before"), "b")
            .await
            .0,
        201
    );

    cluster.stop();
    let started = Instant::now();
    for i in 0..3 {
        assert_unavailable(&call(at, Method::GET, "/users", None, "d").await);
        let write = call(at, Method::POST, "/users", user(&format!("down{i}")), "d").await;
        assert_unavailable(&write);
    }
    // Six requests; without the circuit each would wait the 2 s connect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (status, _, body) = call(at, Method::GET, "/readyz", None, "r").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["components"]["database"]["code"], "database_unavailable",
        "{body}"
    );
    // A few seconds into the outage nothing has changed: at once, and unavailable.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, body) = call(at, Method::GET, "/readyz", None, "r").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["components"]["database"]["code"], "database_unavailable",
        "{body}"
    );
    let started = Instant::now();
    assert_unavailable(&call(at, Method::GET, "/users", None, "d").await);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(bin
        .wait_for_line("database unreachable", Duration::from_secs(5))
        .is_some());

    cluster.start_again();
    wait_until_served(|| call(at, Method::GET, "/users", None, "w")).await;
    for i in 0..3 {
        let (status, _, body) =
            call(at, Method::POST, "/users", user(&format!("up{i}")), "u").await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(call(at, Method::GET, "/users", None, "u").await.0, 200);
    }
    assert_eq!(call(at, Method::GET, "/readyz", None, "r").await.0, 200);
    assert!(bin
        .wait_for_line("database reachable again", Duration::from_secs(5))
        .is_some());
}

#[actix_web::test]
async fn the_database_sides_log_lines_name_the_request_they_serve() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(dir.path(), &[("DATABASE_URL", &pg.url)]);
    let at = bin.address.clone();
    let body = Some(json!({"name": "Logged", "email": "logged@example.com"}));
    let (status, _, user) = call(&at, Method::POST, "/users", body, "first").await;
    assert_eq!(status, 201);

    // A read the server cuts off runs again: the line saying so names its request.
    let locker = pg.lock_users().await;
    let path = format!("/users/{}", user["id"]);
    let read =
        actix_web::rt::spawn(
            async move { call(&at, Method::GET, &path, None, "cut-read-1").await },
        );
    pg.terminate_a_waiting_session().await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(read.await.unwrap().0, 200);
    let line = bin
        .wait_for_line("reading again on a fresh one", Duration::from_secs(5))
        .expect("no line about the read that ran again");
    assert!(line.ends_with("request_id=cut-read-1"), "{line}");

    // A pooled connection the server ended: whichever request meets it names itself.
    assert!(pg.terminate_sessions().await >= 1);
    assert_eq!(
        call(&bin.address, Method::GET, "/users", None, "stale-1")
            .await
            .0,
        200
    );
    bin.wait_for_line("request_id=stale-1", Duration::from_secs(5))
        .expect("no access-log line");
    let lines: Vec<_> = bin
        .lines()
        .into_iter()
        .filter(|l| {
            l.contains("closed by the server") || l.contains("lost its database connection")
        })
        .filter(|l| !l.contains("cut-read-1"))
        .collect();
    assert!(!lines.is_empty(), "no line about the closed connection");
    for line in lines {
        assert!(line.ends_with("request_id=stale-1"), "{line}");
    }
}
