//! The requests tests send to a [`TestApp`], one method per route they call, each answering
//! what a client would see. Tests that mean to send something unusual (a raw socket, a
//! stalled or streamed body, another client) build it themselves.

use std::fmt::Display;

use awc::http::header::HeaderMap;
use awc::http::Method;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::helpers::{content_type, form, read_json, TestApp};

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
pub type Reply = (u16, HeaderMap, Value);

/// `path`, with `?query` unless `query` is empty.
fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

impl TestApp {
    /// A raw connection that has sent `head` (an HTTP/1.1 request head, ending in its blank
    /// line; `{addr}` stands for the server's address) and the first `body` bytes of its
    /// body: the socket stays open, silent, until it is dropped.
    pub async fn send_partial(&self, head: &str, body: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let addr = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(head.replace("{addr}", addr).as_bytes())
            .await
            .unwrap();
        stream.write_all(body).await.unwrap();
        stream.flush().await.unwrap();
        stream
    }

    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET `path`.
    pub async fn get_json(&self, path: &str) -> Reply {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed");
        read_json(res).await
    }

    /// Sends `body` as JSON with `method` to `path`.
    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Reply {
        let res = self
            .client
            .request(method, self.url(path))
            .send_json(body)
            .await
            .expect("request failed");
        read_json(res).await
    }

    /// Sends `body` with `method` to `path`, with `headers` (in order) and nothing else.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let res = req.send_body(body).await.expect("request failed");
        read_json(res).await
    }

    /// `POST /users` with this name and email.
    pub async fn create_user(&self, name: &str, email: &str) -> Reply {
        self.send_json(
            Method::POST,
            "/users",
            &json!({"name": name, "email": email}),
        )
        .await
    }

    /// `GET /users/{id}`.
    pub async fn get_user(&self, id: impl Display) -> Reply {
        self.get_json(&format!("/users/{id}")).await
    }

    /// `GET /users?{query}` (no query when empty).
    pub async fn list_users(&self, query: &str) -> Reply {
        self.get_json(&with_query("/users", query)).await
    }

    /// `PATCH /users/{id}` with `changes`.
    pub async fn update_user(&self, id: impl Display, changes: &Value) -> Reply {
        self.send_json(Method::PATCH, &format!("/users/{id}"), changes)
            .await
    }

    /// `DELETE /users/{id}`.
    pub async fn delete_user(&self, id: impl Display) -> Reply {
        self.send(Method::DELETE, &format!("/users/{id}"), &[], vec![])
            .await
    }

    /// `POST /upload` of `data` as the form's one `file` part, named `filename`.
    pub async fn post_upload(&self, filename: &str, data: &[u8]) -> Reply {
        self.post_form(form(filename, data)).await
    }

    /// `POST /upload` of a whole multipart `body` framed by [`crate::helpers::BOUNDARY`].
    pub async fn post_form(&self, body: Vec<u8>) -> Reply {
        self.post_upload_as(&content_type(), body).await
    }

    /// `POST /upload` of `body` sent as `content_type`.
    pub async fn post_upload_as(&self, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(
            Method::POST,
            "/upload",
            &[("content-type", content_type)],
            body,
        )
        .await
    }

    /// `GET /uploads/{id}`.
    pub async fn get_upload(&self, id: impl Display) -> Reply {
        self.get_json(&format!("/uploads/{id}")).await
    }

    /// `GET /uploads?{query}` (no query when empty).
    pub async fn list_uploads(&self, query: &str) -> Reply {
        self.get_json(&with_query("/uploads", query)).await
    }

    /// `GET /uploads/{id}/content` (with `Range: range` if given): status, headers and the
    /// body, read as a stream.
    pub async fn get_content(
        &self,
        id: impl Display,
        range: Option<&str>,
    ) -> (u16, HeaderMap, Vec<u8>) {
        let mut req = self.client.get(self.url(&format!("/uploads/{id}/content")));
        if let Some(range) = range {
            req = req.insert_header(("range", range));
        }
        let mut res = req.send().await.expect("request failed");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = res.next().await {
            body.extend_from_slice(&chunk.expect("body failed"));
        }
        (status, headers, body)
    }

    /// `DELETE /uploads/{id}`.
    pub async fn delete_upload(&self, id: impl Display) -> Reply {
        self.send(Method::DELETE, &format!("/uploads/{id}"), &[], vec![])
            .await
    }

    /// A tus request: `Tus-Resumable: 1.0.0` unless `extra` sets it, then `extra`.
    pub async fn tus_request(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut headers = Vec::with_capacity(extra.len() + 1);
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("tus-resumable"))
        {
            headers.push(("Tus-Resumable", "1.0.0"));
        }
        headers.extend_from_slice(extra);
        self.send(method, path, &headers, body).await
    }

    /// tus creation: `POST /files/` with `Upload-Length: length`, then `extra`.
    pub async fn tus_create(&self, length: usize, extra: &[(&str, &str)]) -> Reply {
        let length = length.to_string();
        let mut headers = vec![("Upload-Length", length.as_str())];
        headers.extend_from_slice(extra);
        self.tus_request(Method::POST, "/files/", &headers, vec![])
            .await
    }

    /// tus `HEAD` of an upload.
    pub async fn tus_head(&self, location: &str) -> Reply {
        self.tus_request(Method::HEAD, location, &[], vec![]).await
    }

    /// tus `PATCH` of `data` at `offset`, then `extra` (a checksum, say).
    pub async fn tus_patch(
        &self,
        location: &str,
        offset: usize,
        data: &[u8],
        extra: &[(&str, &str)],
    ) -> Reply {
        let offset = offset.to_string();
        let mut headers = vec![
            ("Upload-Offset", offset.as_str()),
            ("Content-Type", "application/offset+octet-stream"),
        ];
        headers.extend_from_slice(extra);
        self.tus_request(Method::PATCH, location, &headers, data.to_vec())
            .await
    }

    /// tus termination: `DELETE` of an upload.
    pub async fn tus_delete(&self, location: &str) -> Reply {
        self.tus_request(Method::DELETE, location, &[], vec![])
            .await
    }

    /// `GET /aggregate?{query}` (no query when empty).
    pub async fn aggregate(&self, query: &str) -> Reply {
        self.get_json(&with_query("/aggregate", query)).await
    }

    /// `GET /parallel?{query}` (no query when empty).
    pub async fn parallel(&self, query: &str) -> Reply {
        self.get_json(&with_query("/parallel", query)).await
    }

    /// `POST /_test/fault/{actor}/{kind}`: the fault routes test builds mount.
    pub async fn inject_fault(&self, actor: &str, kind: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/_test/fault/{actor}/{kind}"),
            &[],
            vec![],
        )
        .await
    }
}
