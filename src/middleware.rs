//! The request context every response passes through: request id, access log, panic
//! catching, and the JSON error shape for every failure, whichever layer produced it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use futures::FutureExt;

use crate::actors::Actors;
use crate::error::AppError;
use crate::upload::pace::is_bulk;

/// The request id header, read from clients and set on every response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, for handlers that want it in their logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Takes the client's id when it is sane (1..=64 of `[A-Za-z0-9._:-]`), else makes one.
fn request_id(req: &ServiceRequest) -> HeaderValue {
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

/// The middleware itself (`actix_web::middleware::from_fn`).
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    // Kept for the log line of a request whose handler panicked (routing needs the request
    // itself unshared, so it cannot be cloned here).
    let (method, uri) = (req.method().clone(), req.uri().clone());
    // Uploads yield to the requests noted here (`upload::pace`).
    if !is_bulk(&method, uri.path()) {
        if let Some(actors) = req.app_data::<web::Data<Actors>>() {
            actors.pace.note_interactive(started);
        }
    }

    let outcome = std::panic::AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .await;
    let failure = match outcome {
        Ok(Ok(res)) => {
            let mut res = render_error(res.map_into_boxed_body(), &id);
            res.headers_mut().insert(REQUEST_ID.clone(), id.clone());
            access_log(&method, &uri, res.status().as_u16(), started, &id);
            return Ok(res);
        }
        // An error that escaped the service (middleware-level failures).
        Ok(Err(err)) => err
            .as_error::<AppError>()
            .map_or_else(|| classify(&err), Clone::clone),
        Err(_) => {
            log::error!("panic while handling {method} {}", uri.path());
            AppError::Internal("handler panicked".into())
        }
    };
    access_log(&method, &uri, failure.status().as_u16(), started, &id);
    Err(Rendered { error: failure, id }.into())
}

fn access_log(
    method: &actix_web::http::Method,
    uri: &actix_web::http::Uri,
    status: u16,
    started: Instant,
    id: &HeaderValue,
) {
    log::info!(
        target: "troupe::access",
        "{method} {} {status} {:.3}ms request_id={}",
        uri.path(),
        started.elapsed().as_secs_f64() * 1000.0,
        id_str(id),
    );
}

/// An error already tied to its request id: what the middleware answers when the service
/// itself failed or panicked and no response is left to re-render.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct Rendered {
    error: AppError,
    id: HeaderValue,
}

impl actix_web::ResponseError for Rendered {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = self.error.to_response(id_str(&self.id));
        res.headers_mut()
            .insert(REQUEST_ID.clone(), self.id.clone());
        res
    }
}

fn id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("unknown")
}

/// Re-renders every error response as `API.md`'s JSON with this request's id: responses
/// built from an error (handlers, extractors) and bare error statuses (routing's 404,
/// a resource's 405).
fn render_error(res: ServiceResponse<BoxBody>, id: &HeaderValue) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !status.is_client_error() && !status.is_server_error() {
        return res;
    }
    let app = match res.response().error() {
        Some(err) => err
            .as_error::<AppError>()
            .map_or_else(|| classify(err), Clone::clone),
        None => {
            let is_json = res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
            if is_json {
                return res;
            }
            AppError::from_status(status)
        }
    };
    let mut fresh = app.to_response(id_str(id));
    // Keep headers the original answer set on purpose (Allow, tus headers, ...).
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !fresh.headers().contains_key(name)
        {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    res.into_response(fresh)
}

/// An error from actix-web or another crate, by the status it answers with.
fn classify(err: &actix_web::Error) -> AppError {
    let status = err.as_response_error().status_code();
    match AppError::from_status(status) {
        AppError::BadRequest(_) => AppError::BadRequest(err.to_string()),
        AppError::Internal(_) => {
            log::error!("unexpected error: {err}");
            AppError::Internal(err.to_string())
        }
        other => other,
    }
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
