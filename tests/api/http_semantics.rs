//! HTTP itself, as a careful client reads it: error answers that describe only themselves.
//!
//! Exchanges go over a raw socket: what is asserted is what is on the wire (a header that is
//! absent rather than ignored).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::both_backends;
use crate::helpers::{spawn_app, Backend, TestApp};

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

/// The id of a fresh upload of `data`.
async fn upload(app: &TestApp, data: &[u8]) -> String {
    let (status, _, body) = app.post_upload("file.bin", data).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
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

both_backends!(
    error_headers => an_error_answer_carries_none_of_the_files_headers,
);
