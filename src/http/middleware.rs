//! The request context every response passes through: request id, access log, panic
//! catching, the JSON error shape for every failure whichever layer produced it, the one
//! log line of every 5xx's cause, and `Connection: close` on every response once the process
//! is shutting down (`lifecycle`).
//!
//! Every request gets its access-log line, also one whose handler never answered: a client
//! that went away (its connection dropped, and the handler's future with it) or a request cut
//! by the shutdown timeout is logged when its future is dropped, with status `499`, an
//! `outcome=` and the body bytes the handler had read. Only requests that have a body pay for
//! counting them (the body deadline's wrapper, `body.rs`); the others cost one counter increment.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, Method, Uri};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use futures::FutureExt;

use super::body::hold_to_deadline;
use super::request_id::{id_str, request_id, RequestId, REQUEST_ID};
use crate::auth::Access;
use crate::bulk::{is_interactive, Pace};
use crate::error::{AppError, ShapedError};
use crate::lifecycle::WorkerRequests;
use crate::services::Services;

/// What the log lines of one request share.
struct Context {
    started: Instant,
    id: HeaderValue,
    method: Method,
    uri: Uri,
    /// The body bytes the handler has read, for requests that have a body.
    body: Option<Rc<Cell<u64>>>,
}

/// The body deadline of an app built without `Services` (none troupe builds).
const FALLBACK_BODY_TIMEOUT: std::time::Duration =
    std::time::Duration::from_millis(crate::config::DEFAULT_BODY_TIMEOUT_MS);

/// The middleware itself (`actix_web::middleware::from_fn`).
pub async fn request_context(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    // One wrapper for a body: its deadline between bytes, and the bytes for the log.
    let timeout = req
        .app_data::<web::Data<Services>>()
        .map_or(FALLBACK_BODY_TIMEOUT, |services| {
            services.limits.body_timeout
        });
    let body = hold_to_deadline(&mut req, timeout);
    let requests = req.app_data::<web::Data<WorkerRequests>>().cloned();
    // Kept for the log line of a request whose handler panicked or was dropped (routing
    // needs the request itself unshared, so it cannot be cloned here). Declared before the
    // handler's future, so that a dropped request drops its handler first (a tus PATCH's
    // session sends its last bytes on) and is counted out after.
    let mut flight = Flight::begin(
        Context {
            started,
            id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            body,
        },
        requests,
    );
    let cx = &flight.cx;
    // Uploads yield to the requests noted here (`bulk`).
    if is_interactive(&cx.method, cx.uri.path()) {
        if let Some(pace) = req.app_data::<web::Data<Pace>>() {
            pace.note_interactive(started);
        }
    }

    // Everything the handler logs, wherever it runs, names the request.
    let outcome =
        std::panic::AssertUnwindSafe(super::request_id::scope(cx.id.clone(), next.call(req)))
            .catch_unwind()
            .await;
    let cx = &flight.cx;
    let close = flight.closing_connections();
    let failure = match outcome {
        Ok(Ok(res)) => {
            let mut res = render_error(res.map_into_boxed_body(), cx);
            res.headers_mut().insert(REQUEST_ID.clone(), cx.id.clone());
            if close {
                res.response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            let key = res.request().extensions().get::<Access>().cloned();
            cx.access_log(res.status().as_u16(), key.as_ref().map(Access::name));
            flight.answered = true;
            return Ok(res);
        }
        // An error that escaped the service (middleware-level failures).
        Ok(Err(err)) => err
            .as_error::<AppError>()
            .map_or_else(|| classify(&err), Clone::clone),
        Err(payload) => AppError::internal(
            "panic in an HTTP handler",
            crate::error::panic_text(&*payload),
        ),
    };
    cx.log_failure(&failure);
    cx.access_log(failure.status().as_u16(), None);
    flight.answered = true;
    Err(Rendered {
        error: failure,
        id: cx.id.clone(),
        close,
    }
    .into())
}

/// One request from its start until it is answered or dropped: counted in its worker's
/// requests in flight, and logged when dropped unanswered.
struct Flight {
    cx: Context,
    requests: Option<web::Data<WorkerRequests>>,
    answered: bool,
}

impl Flight {
    fn begin(cx: Context, requests: Option<web::Data<WorkerRequests>>) -> Self {
        if let Some(requests) = &requests {
            requests.begin();
        }
        Self {
            cx,
            requests,
            answered: false,
        }
    }

    fn closing_connections(&self) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|r| r.closing_connections())
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let cut = self.requests.as_ref().is_some_and(|r| r.end(self.answered));
        if !self.answered {
            // The future was dropped before an answer: no response was sent.
            let outcome = if cut {
                "cut_by_shutdown"
            } else {
                "client_gone"
            };
            self.cx.access_log_unanswered(outcome);
        }
    }
}

impl Context {
    /// The access-log line: method, path, status, time, the body bytes read (requests with
    /// a body), the key's name when one was presented (`key=NAME`, never the key) and the
    /// request id.
    fn access_log(&self, status: u16, key: Option<&str>) {
        let key = KeyField(key);
        match &self.body {
            None => log::info!(
                target: "troupe::access",
                "{} {} {status} {:.3}ms {key}request_id={}",
                self.method,
                self.uri.path(),
                self.elapsed_ms(),
                id_str(&self.id),
            ),
            Some(seen) => log::info!(
                target: "troupe::access",
                "{} {} {status} {:.3}ms body_bytes={} {key}request_id={}",
                self.method,
                self.uri.path(),
                self.elapsed_ms(),
                seen.get(),
                id_str(&self.id),
            ),
        }
    }

    /// The access-log line of a request that got no answer: `499` (nginx's "client closed
    /// request"), why, and the body bytes read before it ended.
    fn access_log_unanswered(&self, outcome: &str) {
        log::info!(
            target: "troupe::access",
            "{} {} 499 {:.3}ms outcome={outcome} body_bytes={} request_id={}",
            self.method,
            self.uri.path(),
            self.elapsed_ms(),
            self.body.as_ref().map_or(0, |seen| seen.get()),
            id_str(&self.id),
        );
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// The one log line of a 5xx: its code and cause (hidden from the client or not), with
    /// the request id. Client errors are the client's to read and are not logged.
    fn log_failure(&self, err: &AppError) {
        let status = err.status();
        if !status.is_server_error() {
            return;
        }
        let cause = err.cause();
        let level = if status == actix_web::http::StatusCode::INTERNAL_SERVER_ERROR {
            log::Level::Error
        } else {
            log::Level::Warn
        };
        log::log!(
            level,
            "{} {} answered {} {}: {cause} request_id={}",
            self.method,
            self.uri.path(),
            status.as_u16(),
            err.code(),
            id_str(&self.id),
        );
    }
}

/// `key=NAME ` in an access-log line, or nothing (open mode, no key, or an unknown one).
struct KeyField<'a>(Option<&'a str>);

impl std::fmt::Display for KeyField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(name) => write!(f, "key={name} "),
            None => Ok(()),
        }
    }
}

/// An error already tied to its request id: what the middleware answers when the service
/// itself failed or panicked and no response is left to re-render.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct Rendered {
    error: AppError,
    id: HeaderValue,
    /// Whether the answer closes its connection (the process is shutting down).
    close: bool,
}

impl actix_web::ResponseError for Rendered {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = self.error.to_response(id_str(&self.id));
        res.headers_mut()
            .insert(REQUEST_ID.clone(), self.id.clone());
        if self.close {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }
        res
    }
}

/// Re-renders every error response as `API.md`'s JSON with this request's id: responses
/// built from an error (handlers, extractors) and bare error statuses (routing's 404,
/// a resource's 405). A 5xx's cause is logged here, once.
fn render_error(res: ServiceResponse<BoxBody>, cx: &Context) -> ServiceResponse<BoxBody> {
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
                // A handler shaped this error itself (`/readyz`, the fan-out's 502s).
                if let Some(ShapedError(err)) = res.response().extensions().get::<ShapedError>() {
                    cx.log_failure(err);
                }
                return res;
            }
            AppError::from_status(status)
        }
    };
    cx.log_failure(&app);
    let mut fresh = app.to_response(id_str(&cx.id));
    // What describes the failed answer's body or the resource's representation: the JSON
    // replaces that body, so these would lie about it (a browser saving the error as the file
    // `Content-Disposition` names, a cache or a resumed download taking it for the file's
    // `ETag`). A 416 keeps its `Content-Range: bytes */N`: it tells the client the length.
    const ENTITY: [header::HeaderName; 11] = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
        header::CONTENT_DISPOSITION,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
        header::EXPIRES,
    ];
    let keeps = |name: &header::HeaderName| {
        if *name == header::CONTENT_RANGE {
            status == actix_web::http::StatusCode::RANGE_NOT_SATISFIABLE
        } else {
            !ENTITY.contains(name)
        }
    };
    // Everything else the original answer set is kept, every value of it (Allow, tus
    // headers, Retry-After, WWW-Authenticate, ...), unless the error sets its own.
    for name in res.headers().keys() {
        if keeps(name) && !fresh.headers().contains_key(name) {
            for value in res.headers().get_all(name) {
                fresh.headers_mut().append(name.clone(), value.clone());
            }
        }
    }
    res.into_response(fresh)
}

/// An error from actix-web or another crate, by the status it answers with.
fn classify(err: &actix_web::Error) -> AppError {
    let status = err.as_response_error().status_code();
    match AppError::from_status(status) {
        AppError::BadRequest(_) => AppError::BadRequest(err.to_string()),
        AppError::Internal(_) => AppError::internal("an error from the HTTP layer", err),
        other => other,
    }
}
