//! The requests tests send to a [`TestApp`], each answering what a client would see.

use awc::http::header::HeaderMap;
use awc::http::Method;
use futures::StreamExt as _;
use serde_json::Value;

use crate::helpers::{content_type, read_json, TestApp};

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
pub type Reply = (u16, HeaderMap, Value);

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

    /// `POST /upload` with a whole multipart `body` framed by [`crate::helpers::BOUNDARY`].
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
}
