//! HTTP itself, as a careful client reads it: `HEAD` on every GET route, 405 with `Allow` on
//! every path that exists, error answers that describe only themselves, `Range` as RFC 9110
//! has it, and upstream bodies delimited by the end of the connection.
//!
//! Most exchanges go over a raw socket: what is asserted is what is on the wire (a HEAD
//! answer with no byte after its head, a header that is absent rather than ignored).

use std::collections::BTreeSet;
use std::time::Duration;

use awc::http::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::both_backends;
use crate::helpers::{header, spawn_app, spawn_app_with, Backend, Stub, TestApp};

/// An answer read off the wire: status, headers (names lowercased, in order) and every byte
/// after the head.
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    /// The first value of header `name` ("" when absent).
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    /// The headers that describe the answer, not the moment or the request, sorted.
    fn lasting_headers(&self) -> BTreeSet<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n != "date" && n != "x-request-id")
            .cloned()
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `method path` with `headers` on a fresh connection that the request closes, and
/// reads the answer to the end of the connection.
async fn exchange(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)]) -> Wire {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Wire {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The methods an `Allow` value lists.
fn methods(allow: &str) -> BTreeSet<String> {
    allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The id of a fresh upload of `data`.
async fn upload(app: &TestApp, data: &[u8]) -> String {
    let (status, _, body) = app.post_upload("file.bin", data).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn head_answers_every_get_route_like_get_without_the_body(backend: Backend) {
    let stub = Stub::start();
    let upstreams = format!("a={},b={}", stub.url("tag=a"), stub.url("tag=b"));
    let Some(app) = spawn_app_with(backend, &[("TROUPE_UPSTREAMS", &upstreams)]).await else {
        return;
    };
    let (_, _, user) = app.create_user("Ada", "ada@example.com").await;
    let user = user["id"].to_string();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let id = upload(&app, &data).await;

    let gzip = [("Accept-Encoding", "gzip")];
    let none: [(&str, &str); 0] = [];
    let routes: Vec<(String, &[(&str, &str)])> = vec![
        // First, while the sources' statistics in its body are still all zero.
        ("/readyz".into(), &none),
        ("/ping".into(), &none),
        ("/healthz".into(), &none),
        ("/users".into(), &none),
        ("/users".into(), &gzip),
        (format!("/users/{user}"), &none),
        ("/users/999999".into(), &none),
        ("/uploads".into(), &none),
        (format!("/uploads/{id}"), &none),
        (format!("/uploads/{id}/content"), &none),
        (
            "/uploads/00000000-0000-0000-0000-000000000000/content".into(),
            &none,
        ),
        ("/aggregate".into(), &none),
        ("/aggregate?sources=b".into(), &gzip),
        ("/parallel".into(), &none),
    ];
    for (path, headers) in routes {
        let get = exchange(&app, "GET", &path, headers).await;
        let head = exchange(&app, "HEAD", &path, headers).await;
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert_eq!(head.lasting_headers(), get.lasting_headers(), "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
        assert!(head.has("x-request-id"), "HEAD {path}");
        if get.has("content-length") {
            assert_eq!(
                get.header("content-length"),
                get.body.len().to_string(),
                "GET {path}"
            );
        }
    }
    // A HEAD on the sources calls them, as the GET does: its headers depend on what they say.
    assert_eq!(stub.requests("tag=a"), 4, "{:?}", stub.events());

    // The file's HEAD: its length and validators, conditional requests as for GET.
    let path = format!("/uploads/{id}/content");
    let head = exchange(&app, "HEAD", &path, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "100000");
    assert_eq!(head.header("accept-ranges"), "bytes");
    let etag = head.header("etag").to_owned();
    assert!(!etag.is_empty());
    let not_modified = exchange(&app, "HEAD", &path, &[("If-None-Match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    // Range is defined for GET only: a HEAD with one describes the whole file.
    let ranged = exchange(&app, "HEAD", &path, &[("Range", "bytes=0-9")]).await;
    assert_eq!(ranged.status, 200);
    assert_eq!(ranged.header("content-length"), "100000");
    assert!(!ranged.has("content-range"));
    assert!(ranged.body.is_empty());
}

/// Every path troupe serves, with the methods it answers.
fn served_paths() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("/ping", &["GET", "HEAD"]),
        ("/healthz", &["GET", "HEAD"]),
        ("/readyz", &["GET", "HEAD"]),
        ("/users", &["GET", "HEAD", "POST"]),
        ("/users/1", &["GET", "HEAD", "PATCH", "DELETE"]),
        ("/aggregate", &["GET", "HEAD"]),
        ("/parallel", &["GET", "HEAD"]),
        ("/upload", &["POST"]),
        ("/uploads", &["GET", "HEAD"]),
        (
            "/uploads/00000000-0000-0000-0000-000000000000",
            &["GET", "HEAD", "DELETE"],
        ),
        (
            "/uploads/00000000-0000-0000-0000-000000000000/content",
            &["GET", "HEAD"],
        ),
        ("/files", &["POST", "OPTIONS"]),
        ("/files/", &["POST", "OPTIONS"]),
        (
            "/files/00000000-0000-0000-0000-000000000000",
            &["HEAD", "PATCH", "DELETE", "OPTIONS"],
        ),
    ]
}

const PROBED: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[actix_web::test]
async fn a_method_a_path_lacks_is_405_with_the_allow_the_path_has() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for (path, allowed) in served_paths() {
        let allowed: BTreeSet<String> = allowed.iter().map(|m| m.to_string()).collect();
        for method in PROBED {
            let (status, headers, body) = app
                .tus_request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    path,
                    &[],
                    vec![],
                )
                .await;
            if allowed.contains(method) {
                assert_ne!(status, 405, "{method} {path}: {body}");
                assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
                continue;
            }
            assert_eq!(status, 405, "{method} {path}: {body}");
            assert_eq!(
                methods(header(&headers, "allow")),
                allowed,
                "{method} {path}"
            );
            if method != "HEAD" {
                assert_eq!(
                    body["error"]["code"], "method_not_allowed",
                    "{method} {path}"
                );
                assert!(
                    !body["error"]["request_id"].as_str().unwrap().is_empty(),
                    "{body}"
                );
            }
        }
    }
    // A path that does not exist stays 404, whatever the method.
    for path in [
        "/nope",
        "/ping/",
        "/users/1/x",
        "/uploads/a/b/c",
        "/files/a/b",
        "/upload/x",
    ] {
        for method in PROBED {
            let (status, headers, body) = app
                .tus_request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    path,
                    &[],
                    vec![],
                )
                .await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert!(!headers.contains_key("allow"), "{method} {path}");
            if method != "HEAD" {
                assert_eq!(body["error"]["code"], "not_found", "{method} {path}");
            }
        }
    }
    // Under /files/, a method tus does not define there is 405 like anywhere, whatever its
    // `Tus-Resumable`; one it defines without `Tus-Resumable: 1.0.0` is tus's 412.
    let (status, headers, body) = app
        .tus_request(
            Method::PUT,
            "/files/",
            &[("Tus-Resumable", "0.2.2")],
            vec![],
        )
        .await;
    assert_eq!(status, 405, "{body}");
    let allow = header(&headers, "allow");
    assert!(
        allow.contains("POST") && allow.contains("OPTIONS"),
        "{allow}"
    );
    let (status, _, body) = app
        .tus_request(
            Method::PATCH,
            "/files/0b5f1f5e-8d4c-4a3b-9b7e-1c2d3e4f5a6b",
            &[("Tus-Resumable", "0.2.2")],
            vec![],
        )
        .await;
    assert_eq!(status, 412, "{body}");
}

async fn an_error_answer_carries_none_of_the_files_headers(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data: Vec<u8> = (0..100u8).collect();
    let id = upload(&app, &data).await;
    let path = format!("/uploads/{id}/content");
    let entity = [
        "content-disposition",
        "etag",
        "last-modified",
        "accept-ranges",
        "content-encoding",
    ];

    let ok = exchange(&app, "GET", &path, &[]).await;
    for name in entity.iter().take(4) {
        assert!(ok.has(name), "a 200 has {name}");
    }

    let unsatisfiable = exchange(&app, "GET", &path, &[("Range", "bytes=500-600")]).await;
    let refused = exchange(&app, "GET", &path, &[("If-Match", "\"another\"")]).await;
    for (err, status, code) in [
        (&unsatisfiable, 416, "range_not_satisfiable"),
        (&refused, 412, "precondition_failed"),
    ] {
        assert_eq!(err.status, status);
        assert_eq!(err.json()["error"]["code"], code);
        assert!(err.header("content-type").starts_with("application/json"));
        assert_eq!(err.header("content-length"), err.body.len().to_string());
        for name in entity {
            assert!(
                !err.has(name),
                "a {status} carries {name}: {:?}",
                err.headers
            );
        }
    }
    assert_eq!(unsatisfiable.header("content-range"), "bytes */100");
    assert!(!refused.has("content-range"));

    // A compressed route's error is JSON as it is, not labelled with the encoding the
    // failed answer would have had.
    let err = exchange(
        &app,
        "GET",
        "/users?limit=many",
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(err.status, 400);
    assert!(!err.has("content-encoding"), "{:?}", err.headers);
    assert_eq!(err.json()["error"]["code"], "bad_request");
}

async fn ranges_are_served_as_rfc_9110_has_them(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data: Vec<u8> = (0..100u8).collect();
    let id = upload(&app, &data).await;
    let path = format!("/uploads/{id}/content");

    // Ignored, whole body: malformed, another unit, several ranges.
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "items=0-1",
        "bytes=",
        "bytes=--5",
        "bytes=1-2-3",
        "bytes 0-5",
        "bytes=99999999999999999999-",
        "bytes=0-1,5-6",
        "bytes=0-1,500-600",
    ] {
        let res = exchange(&app, "GET", &path, &[("Range", range)]).await;
        assert_eq!(res.status, 200, "{range}: {:?}", res.headers);
        assert!(!res.has("content-range"), "{range}");
        assert_eq!(res.header("content-length"), "100", "{range}");
        assert_eq!(res.body, data, "{range}");
    }

    // One satisfiable range: 206 with exactly its bytes.
    for (range, from, to) in [
        ("bytes=10-19", 10, 19),
        ("bytes=-5", 95, 99),
        ("bytes=95-", 95, 99),
        ("bytes=90-200", 90, 99),
        ("bytes=0-0", 0, 0),
        ("BYTES=0-1, ", 0, 1),
    ] {
        let res = exchange(&app, "GET", &path, &[("Range", range)]).await;
        assert_eq!(res.status, 206, "{range}: {:?}", res.headers);
        assert_eq!(
            res.header("content-range"),
            format!("bytes {from}-{to}/100"),
            "{range}"
        );
        assert_eq!(res.body, &data[from..=to], "{range}");
    }

    // Unsatisfiable: 416 with the length.
    for range in ["bytes=100-", "bytes=-0", "bytes=500-600"] {
        let res = exchange(&app, "GET", &path, &[("Range", range)]).await;
        assert_eq!(res.status, 416, "{range}");
        assert_eq!(res.header("content-range"), "bytes */100", "{range}");
        assert_eq!(res.json()["error"]["code"], "range_not_satisfiable");
    }

    // If-Range: the range while the file is the one the client has, else the whole file.
    let whole = exchange(&app, "GET", &path, &[]).await;
    let etag = whole.header("etag").to_owned();
    let modified = whole.header("last-modified").to_owned();
    for (validator, status) in [
        (etag.as_str(), 206),
        (modified.as_str(), 206),
        ("\"old\"", 200),
    ] {
        let res = exchange(
            &app,
            "GET",
            &path,
            &[("Range", "bytes=0-9"), ("If-Range", validator)],
        )
        .await;
        assert_eq!(res.status, status, "If-Range: {validator}");
        let want: &[u8] = if status == 206 { &data[..10] } else { &data };
        assert_eq!(res.body, want, "If-Range: {validator}");
    }

    // Conditional requests: 304 with the validators, no body.
    for (name, value) in [
        ("If-None-Match", etag.as_str()),
        ("If-Modified-Since", &modified),
    ] {
        let res = exchange(&app, "GET", &path, &[(name, value)]).await;
        assert_eq!(res.status, 304, "{name}");
        assert_eq!(res.header("etag"), etag, "{name}");
        assert!(res.body.is_empty(), "{name}");
    }

    // An empty file has no byte for a range to point at: any range gets the whole (empty)
    // body.
    let empty = upload(&app, b"").await;
    for range in ["bytes=-5", "bytes=0-", "bytes=0-0"] {
        let res = exchange(
            &app,
            "GET",
            &format!("/uploads/{empty}/content"),
            &[("Range", range)],
        )
        .await;
        assert_eq!(res.status, 200, "{range}: {:?}", res.headers);
        assert_eq!(res.header("content-length"), "0");
        assert!(res.body.is_empty());
    }
}

both_backends!(
    head_like_get => head_answers_every_get_route_like_get_without_the_body,
    error_headers => an_error_answer_carries_none_of_the_files_headers,
    ranges => ranges_are_served_as_rfc_9110_has_them,
);

#[actix_web::test]
async fn an_upstream_body_delimited_by_the_end_of_its_connection_is_read_whole() {
    let stub = Stub::start();
    let upstreams = format!(
        "small={},big={},over={}",
        stub.url("eof=1&tag=small"),
        stub.url("eof=1&big=300000"),
        stub.url("eof=1&big=3000000"),
    );
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_UPSTREAMS", &upstreams)])
        .await
        .unwrap();

    let (status, _, body) = app.aggregate("sources=small,big").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["small"],
        serde_json::json!({"tag": "small", "status": 200})
    );
    assert_eq!(body["big"].as_str().unwrap().len(), 300_000 - 2);

    let (status, _, body) = app.parallel("sources=small").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["tag"], "small");

    // Still under the body cap (2 MiB by default) while it streams in.
    let (status, _, body) = app.aggregate("sources=over").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["sources"]["over"]["code"], "upstream_too_large",
        "{body}"
    );
}
