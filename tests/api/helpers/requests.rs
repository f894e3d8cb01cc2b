//! The requests tests send to a [`TestApp`], one method per route they call, each answering
//! what a client would see. Tests that mean to send something unusual (a raw socket, a
//! stalled or streamed body, another client) build it themselves.

use std::fmt::Display;

use awc::http::header::HeaderMap;
use awc::http::Method;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::helpers::{content_type, read_json, TestApp};

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

    /// `POST /upload` of a whole multipart `body` framed by [`crate::helpers::BOUNDARY`].
    pub async fn post_form(&self, body: Vec<u8>) -> Reply {
        let res = self
            .client
            .post(self.url("/upload"))
            .insert_header(("content-type", content_type()))
            .send_body(body)
            .await
            .expect("request failed");
        read_json(res).await
    }

    /// GETs `path` (with `Range: range` if given) and returns status, headers and the body,
    /// read as a stream.
    pub async fn get_bytes(&self, path: &str, range: Option<&str>) -> (u16, HeaderMap, Vec<u8>) {
        let mut req = self.client.get(self.url(path));
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
