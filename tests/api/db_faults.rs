//! The database failing under a running troupe: a write that outlives its statement timeout
//! is ended by the database before troupe answers 503, so the retry the 503 invites is a
//! first try.

use std::time::Duration;

use crate::helpers::{spawn_app_with, Backend, TestApp, WriteLock};

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
