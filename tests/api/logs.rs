//! The log of the real binary: a 500 caused by a failing database or disk leaves exactly one
//! line naming the cause, with the request id, while the client sees none of it.

use std::time::Duration;

use crate::helpers::{content_type, form, refused_url, Backend, PgTestDb, RunningBinary};

/// The 500 a request with id `request_id` got, and the binary's log lines that name `cause`.
async fn fail_and_read_log(
    bin: &RunningBinary,
    request_id: &str,
    request: awc::ClientRequest,
    body: Vec<u8>,
    cause: &str,
) -> (u16, serde_json::Value, Vec<String>) {
    let mut res = request
        .insert_header(("x-request-id", request_id))
        .send_body(body)
        .await
        .expect("request failed");
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    // The access-log line is written last: once it is there, so is the failure's. (Other
    // lines of the request, an actor's warning say, may come before either.)
    let id = format!("request_id={request_id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !bin
        .lines()
        .iter()
        .any(|line| line.contains("troupe::access") && line.contains(&id))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no access line with {id}: {:#?}",
            bin.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = bin
        .lines()
        .into_iter()
        .filter(|line| line.contains(cause))
        .collect();
    (status, body, lines)
}

fn assert_hidden_500(status: u16, body: &serde_json::Value, cause: &str) {
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(
        !body.to_string().contains(cause),
        "the cause leaked: {body}"
    );
}

async fn database_failure_is_logged_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg, cause) = match backend {
        Backend::Sqlite => {
            let path = dir.path().join("t.db");
            (
                format!("sqlite://{}", path.display()),
                None,
                "no such table",
            )
        }
        Backend::Postgres => {
            let Some(pg) = PgTestDb::create().await else {
                return;
            };
            (pg.url.clone(), Some(pg), "does not exist")
        }
    };
    let bin = RunningBinary::start(dir.path(), &[("DATABASE_URL", &url)]);
    // The table goes away under the running server.
    match &pg {
        Some(pg) => pg
            .client()
            .await
            .batch_execute("DROP TABLE users CASCADE")
            .await
            .unwrap(),
        None => {
            use diesel::{Connection as _, RunQueryDsl as _};
            let mut conn =
                diesel::SqliteConnection::establish(&dir.path().join("t.db").to_string_lossy())
                    .unwrap();
            diesel::sql_query("DROP TABLE users")
                .execute(&mut conn)
                .unwrap();
        }
    }
    let client = awc::Client::default();
    let request = client.get(format!("{}/users/1", bin.address));
    let (status, body, lines) =
        fail_and_read_log(&bin, "probe-db-500", request, Vec::new(), cause).await;
    assert_hidden_500(status, &body, cause);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("request_id=probe-db-500"), "{}", lines[0]);
    assert!(
        lines[0].contains("GET /users/1 answered 500 internal"),
        "{}",
        lines[0]
    );
}

crate::both_backends!(a_500_from_the_database_logs_its_cause_once => database_failure_is_logged_once);

#[actix::test]
async fn a_500_from_a_failing_disk_logs_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let uploads = dir.path().join("up");
    let bin = RunningBinary::start(
        dir.path(),
        &[("TROUPE_UPLOAD_DIR", uploads.to_str().unwrap())],
    );
    // Where partial uploads go is a file now: creating one fails (ENOTDIR) as a broken
    // disk would, whoever the server runs as.
    std::fs::remove_dir_all(uploads.join(".tmp")).unwrap();
    std::fs::write(uploads.join(".tmp"), b"not a directory").unwrap();
    let client = awc::Client::default();
    let request = client
        .post(format!("{}/upload", bin.address))
        .insert_header(("content-type", content_type()));
    let cause = "Not a directory";
    let (status, body, lines) = fail_and_read_log(
        &bin,
        "probe-disk-500",
        request,
        form("a.txt", b"abc"),
        cause,
    )
    .await;
    assert_hidden_500(status, &body, cause);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("request_id=probe-disk-500"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("creating an upload's file"),
        "{}",
        lines[0]
    );
}

#[actix::test]
async fn a_502_the_fan_out_shapes_itself_is_logged_once_too() {
    let dir = tempfile::tempdir().unwrap();
    let sources = format!("gone={}", refused_url());
    let bin = RunningBinary::start(dir.path(), &[("TROUPE_UPSTREAMS", &sources)]);
    let client = awc::Client::default();
    let request = client.get(format!("{}/aggregate", bin.address));
    let cause = "every source failed";
    let (status, body, lines) =
        fail_and_read_log(&bin, "probe-502", request, Vec::new(), cause).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("answered 502 upstream_error"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("request_id=probe-502"), "{}", lines[0]);
}
