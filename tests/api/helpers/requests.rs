//! The requests tests send to a [`TestApp`], each answering what a client would see.

use crate::helpers::{read_json, TestApp};

impl TestApp {
    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET `path`, returning status, headers and the body as JSON (`Null` when empty or not JSON).
    pub async fn get_json(
        &self,
        path: &str,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed");
        read_json(res).await
    }

    /// Sends `body` as JSON with `method` to `path`.
    pub async fn send_json(
        &self,
        method: awc::http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let res = self
            .client
            .request(method, self.url(path))
            .send_json(body)
            .await
            .expect("request failed");
        read_json(res).await
    }
}
