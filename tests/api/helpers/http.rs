//! Reading what the server answered.

/// A header as text: "" when it is missing (or not visible ASCII), so that tests compare it
/// to what they expect; `contains_key` tells a missing header from an empty one.
pub fn header<'a>(headers: &'a awc::http::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The `x-request-id` an answer carries (the test fails when it carries none).
pub fn request_id(headers: &awc::http::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .expect("ASCII request id")
        .to_owned()
}

/// Reads a response's status, headers and JSON body (`Null` when empty or not JSON).
pub async fn read_json<S>(
    mut res: awc::ClientResponse<S>,
) -> (u16, awc::http::header::HeaderMap, serde_json::Value)
where
    S: futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("body failed");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}
