//! Uploads belong to the key that made them: two keys and an `admin`, over HTTP, both
//! backends. Another key's upload answers 404 on every route and every tus verb, exactly
//! like an id that does not exist; `admin` sees and changes both; uploads made in open mode
//! are `admin`'s only once keys are set.

use awc::http::Method;
use serde_json::Value;
use troupe::auth::{entry_line, Scopes};

use crate::both_backends;
use crate::helpers::{content_type, form, header, spawn_app_with, start, Backend, Reply, TestApp};

const ALICE: &str = "alice-test-key-0123456789abcdefghijkl";
const BOB: &str = "bob-test-key-0123456789abcdefghijklmno";
const ROOT: &str = "root-test-key-0123456789abcdefghijklmn";

fn keys() -> String {
    let rw = Scopes::parse("uploads:read+uploads:write").unwrap();
    [
        entry_line("alice", rw, ALICE),
        entry_line("bob", rw, BOB),
        entry_line("root", Scopes::parse("admin").unwrap(), ROOT),
    ]
    .join(",")
}

async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let bearer = format!("Bearer {key}");
    let mut all = vec![("Authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    app.send(method, path, &all, body).await
}

async fn post_form(app: &TestApp, key: &str, name: &str, data: &[u8]) -> String {
    let ct = content_type();
    let (status, _, json) = call(
        app,
        key,
        Method::POST,
        "/upload",
        &[("content-type", &ct)],
        form(name, data),
    )
    .await;
    assert_eq!(status, 201, "{json}");
    json["id"].as_str().unwrap().to_owned()
}

async fn listed(app: &TestApp, key: &str) -> Vec<String> {
    let (status, _, json) = call(app, key, Method::GET, "/uploads", &[], vec![]).await;
    assert_eq!(status, 200, "{json}");
    let mut ids: Vec<String> = json["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// `method` on `/uploads/{id}` as `key`.
async fn on_upload(app: &TestApp, key: &str, method: Method, id: &str) -> Reply {
    call(app, key, method, &format!("/uploads/{id}"), &[], vec![]).await
}

/// The 404 of an upload that does not exist, as `key` gets it on `GET /uploads/{id}`.
async fn not_found_message(app: &TestApp, key: &str) -> Value {
    let path = format!("/uploads/{}", uuid::Uuid::new_v4());
    let (status, _, json) = call(app, key, Method::GET, &path, &[], vec![]).await;
    assert_eq!(status, 404, "{json}");
    json["error"]["message"].clone()
}

async fn form_uploads_are_their_keys(backend: Backend) {
    let keys = keys();
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    let a = post_form(&app, ALICE, "a.txt", b"alice's bytes").await;
    let b = post_form(&app, BOB, "b.txt", b"bob's bytes").await;
    assert_eq!(listed(&app, ALICE).await, vec![a.clone()]);
    assert_eq!(listed(&app, BOB).await, vec![b.clone()]);
    assert_eq!(listed(&app, ROOT).await, sorted(vec![a.clone(), b.clone()]));

    let missing = not_found_message(&app, ALICE).await;
    for path in [format!("/uploads/{b}"), format!("/uploads/{b}/content")] {
        let (status, _, json) = call(&app, ALICE, Method::GET, &path, &[], vec![]).await;
        assert_eq!(status, 404, "alice GET {path}: {json}");
        if !path.ends_with("content") {
            assert_eq!(json["error"]["message"], missing, "{json}");
        }
        let (status, _, _) = call(&app, BOB, Method::GET, &path, &[], vec![]).await;
        assert_eq!(status, 200, "bob GET {path}");
        let (status, _, _) = call(&app, ROOT, Method::GET, &path, &[], vec![]).await;
        assert_eq!(status, 200, "root GET {path}");
    }
    let (status, _, _) = on_upload(&app, ALICE, Method::HEAD, &b).await;
    assert_eq!(status, 404);

    // Alice cannot delete Bob's upload; it is still there, whole.
    let (status, _, json) = on_upload(&app, ALICE, Method::DELETE, &b).await;
    assert_eq!(status, 404, "{json}");
    let (status, _, json) = on_upload(&app, BOB, Method::GET, &b).await;
    assert_eq!((status, json["size"].as_u64()), (200, Some(11)), "{json}");
    // Bob deletes his own; root deletes Alice's.
    let (status, _, _) = on_upload(&app, BOB, Method::DELETE, &b).await;
    assert_eq!(status, 204);
    let (status, _, _) = on_upload(&app, ROOT, Method::DELETE, &a).await;
    assert_eq!(status, 204);
    assert!(listed(&app, ROOT).await.is_empty());
}

fn tus(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![("Tus-Resumable", "1.0.0")];
    headers.extend_from_slice(extra);
    headers
}

async fn tus_create(app: &TestApp, key: &str, length: &'static str) -> String {
    let (status, h, json) = call(
        app,
        key,
        Method::POST,
        "/files/",
        &tus(&[("Upload-Length", length)]),
        vec![],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    header(&h, "location").to_owned()
}

async fn tus_patch(app: &TestApp, key: &str, at: &str, offset: &'static str, data: &[u8]) -> Reply {
    let headers = tus(&[
        ("Upload-Offset", offset),
        ("Content-Type", "application/offset+octet-stream"),
    ]);
    call(app, key, Method::PATCH, at, &headers, data.to_vec()).await
}

async fn offset(app: &TestApp, key: &str, at: &str) -> (u16, String) {
    let (status, h, _) = call(app, key, Method::HEAD, at, &tus(&[]), vec![]).await;
    let offset = h
        .get("upload-offset")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, offset)
}

async fn tus_uploads_are_their_keys_on_every_verb(backend: Backend) {
    let keys = keys();
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    let at = tus_create(&app, ALICE, "10").await;
    // Bob can neither see, nor write, nor end Alice's upload: 404 each time, nothing changed.
    assert_eq!(offset(&app, BOB, &at).await, (404, String::new()));
    let (status, _, json) = tus_patch(&app, BOB, &at, "0", b"bobby").await;
    assert_eq!(status, 404, "{json}");
    assert_eq!(offset(&app, ALICE, &at).await, (200, "0".into()));
    let (status, _, _) = call(&app, BOB, Method::DELETE, &at, &tus(&[]), vec![]).await;
    assert_eq!(status, 404);
    // Alice writes half; root sees it and resumes it to the end.
    let (status, h, json) = tus_patch(&app, ALICE, &at, "0", b"01234").await;
    assert_eq!((status, header(&h, "upload-offset")), (204, "5"), "{json}");
    assert_eq!(offset(&app, BOB, &at).await.0, 404);
    assert_eq!(offset(&app, ROOT, &at).await, (200, "5".into()));
    let (status, h, json) = tus_patch(&app, ROOT, &at, "5", b"56789").await;
    assert_eq!((status, header(&h, "upload-offset")), (204, "10"), "{json}");
    // Finished, it is Alice's under /uploads, not Bob's.
    let id = at.trim_start_matches("/files/").to_owned();
    assert_eq!(listed(&app, ALICE).await, vec![id.clone()]);
    assert!(listed(&app, BOB).await.is_empty());
    let (status, _, _) = on_upload(&app, BOB, Method::GET, &id).await;
    assert_eq!(status, 404);

    // Termination: Bob's own works, and root ends anyone's.
    let theirs = tus_create(&app, BOB, "4").await;
    let (status, _, _) = call(&app, ALICE, Method::DELETE, &theirs, &tus(&[]), vec![]).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&app, BOB, Method::DELETE, &theirs, &tus(&[]), vec![]).await;
    assert_eq!(status, 204);
    let mine = tus_create(&app, ALICE, "4").await;
    let (status, _, _) = call(&app, ROOT, Method::DELETE, &mine, &tus(&[]), vec![]).await;
    assert_eq!(status, 204);
    assert_eq!(offset(&app, ALICE, &mine).await.0, 404);
}

async fn uploads_from_open_mode_are_admins_only(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[]).await else {
        return;
    };
    let (status, _, json) = app.post_upload("open.txt", b"made before keys").await;
    assert_eq!(status, 201, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let (db, dir) = app.stop().await;
    let keys = keys();
    let app = start(db, dir, &[("TROUPE_API_KEYS", &keys)]).await;
    assert!(listed(&app, ALICE).await.is_empty());
    let (status, _, _) = on_upload(&app, ALICE, Method::GET, &id).await;
    assert_eq!(status, 404);
    assert_eq!(listed(&app, ROOT).await, vec![id.clone()]);
    let (status, _, _) = on_upload(&app, ROOT, Method::GET, &id).await;
    assert_eq!(status, 200);
}

/// Another key's HEAD, PATCH and DELETE of an upload whose owner is PATCHing it right now are
/// 404 and leave that PATCH alone (no hand-over at their asking): it goes on and completes.
async fn another_key_cannot_interrupt_a_running_patch(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let keys = keys();
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    let at = tus_create(&app, ALICE, "10000").await;
    let id = at.trim_start_matches("/files/").parse().unwrap();
    let head = format!(
        "PATCH {at} HTTP/1.1\r\nHost: {{addr}}\r\nAuthorization: Bearer {ALICE}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: 10000\r\n\r\n"
    );
    let mut patch = app.send_partial(&head, &[b'a'; 4000]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.services.uploads.is_held(id).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the PATCH never took the upload"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    assert_eq!(offset(&app, BOB, &at).await.0, 404);
    let (status, _, json) = tus_patch(&app, BOB, &at, "0", b"bobby").await;
    assert_eq!(status, 404, "{json}");
    let (status, _, _) = call(&app, BOB, Method::DELETE, &at, &tus(&[]), vec![]).await;
    assert_eq!(status, 404);
    assert!(
        app.services.uploads.is_held(id).await,
        "Alice's PATCH was interrupted"
    );

    patch.write_all(&[b'b'; 6000]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = patch.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(offset(&app, ALICE, &at).await, (200, "10000".into()));
}

both_backends!(
    form_uploads => form_uploads_are_their_keys,
    tus_uploads => tus_uploads_are_their_keys_on_every_verb,
    running_patch => another_key_cannot_interrupt_a_running_patch,
    open_mode_uploads => uploads_from_open_mode_are_admins_only,
);
