//! The request id: taken from a sane `X-Request-Id`, else made up; set on every response
//! and in every log line about the request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage as _, HttpRequest};

/// The request id header, read from clients and set on every response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, for handlers that want it in their logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id the middleware gave `req`, as text (empty outside the middleware).
    pub fn of(req: &HttpRequest) -> String {
        req.extensions()
            .get::<Self>()
            .map(|id| id_str(&id.0).to_owned())
            .unwrap_or_default()
    }
}

/// Takes the client's id when it is sane (1..=64 of `[A-Za-z0-9._:-]`), else makes one.
pub fn request_id(req: &ServiceRequest) -> HeaderValue {
    if let Some(value) = req.headers().get(&REQUEST_ID) {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b));
        if sane {
            return value.clone();
        }
    }
    new_request_id()
}

/// A process-unique id: a random per-process prefix and a counter (no syscall per request).
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(rand::random::<u32>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix:08x}-{n:012x}` without the formatting machinery: this runs on every request.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'-'; 21];
    for (i, slot) in id[..8].iter_mut().enumerate() {
        *slot = DIGITS[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    for (i, slot) in id[9..].iter_mut().enumerate() {
        *slot = DIGITS[((n >> (44 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

tokio::task_local! {
    /// The id of the request whose handler is running on this task (set by the middleware
    /// around the whole handler, body streaming included).
    static CURRENT: HeaderValue;
}

/// Runs `fut` (a request's handler) with `id` as the [`current`] request id.
pub async fn scope<F: std::future::Future>(id: HeaderValue, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// Runs `fut` with `id`, when there is one, as the [`current`] request id: for actors serving
/// a message that carries one.
pub async fn scope_opt<F: std::future::Future>(id: Option<HeaderValue>, fut: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(id, fut).await,
        None => fut.await,
    }
}

/// Runs `f` with `id` as the [`current`] request id: for actors serving a message that
/// carries one, so their log lines name it too.
pub fn sync_scope<R>(id: Option<HeaderValue>, f: impl FnOnce() -> R) -> R {
    match id {
        Some(id) => CURRENT.sync_scope(id, f),
        None => f(),
    }
}

/// The id of the request being served on this task, if any: what a handle copies into the
/// messages it sends, and what every log line written meanwhile ends with.
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The id as text, for logs and bodies.
pub fn id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_prefix_dash_counter_in_lowercase_hex_and_unique() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            let text = id.to_str().unwrap();
            let (prefix, counter) = text.split_once('-').unwrap();
            assert_eq!((prefix.len(), counter.len()), (8, 12), "{text}");
            assert!(text
                .chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
        }
        assert_ne!(a, b);
        let n = |id: &HeaderValue| u64::from_str_radix(&id.to_str().unwrap()[9..], 16).unwrap();
        assert!(n(&b) > n(&a));
    }
}
