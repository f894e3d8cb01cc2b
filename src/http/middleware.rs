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
//!
//! The access line names the key a request presented (`key=NAME`, never the key) whenever
//! the access check found it configured, answered or not: the check notes it in a slot the
//! line reads ([`admit_key`]). Its text is `METHOD PATH STATUS TIMEms [outcome=…]
//! [body_bytes=N] [key=NAME] request_id=…`; in JSON (`logging`) the same line also has the
//! fields `method`, `route` (the matched pattern, null when none matched), `path`, `status`,
//! `duration_ms`, `bytes_in`, `bytes_out`, `client`, `user_agent`, `key_name` and `outcome`
//! (null unless unanswered).

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
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
    /// The name of the key the request presented, once the access check has found it.
    key: KeyName,
    /// What only JSON lines show, gathered only for them.
    seen: Option<Box<Seen>>,
}

/// The access line's fields that text lines leave out.
struct Seen {
    /// The pattern of the route the path matches (`/users/{id}`).
    route: Option<String>,
    /// The TCP peer's address.
    client: Option<String>,
    user_agent: Option<HeaderValue>,
}

impl Seen {
    fn of(req: &ServiceRequest) -> Box<Self> {
        Box::new(Self {
            route: req.match_pattern(),
            client: req.peer_addr().map(|peer| peer.ip().to_string()),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
        })
    }
}

/// The slot the access check notes a request's key name in, shared between the request
/// (its extensions) and its access line, which may be written after the request is gone.
#[derive(Clone, Default)]
struct KeyName(Rc<OnceCell<Arc<str>>>);

/// Lets a request through as the configured key `access` (the access check,
/// `http::auth`): its `Access` rides in the request's extensions, for the routes that act
/// on the key's behalf, and its access line names the key.
pub fn admit_key(req: &ServiceRequest, access: &Access) {
    let mut extensions = req.extensions_mut();
    if let Some(KeyName(slot)) = extensions.get::<KeyName>() {
        let _ = slot.set(access.shared_name());
    }
    extensions.insert(access.clone());
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
    let key = KeyName::default();
    req.extensions_mut().insert(key.clone());
    let seen = crate::logging::is_json().then(|| Seen::of(&req));
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
            key,
            seen,
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
            let sent = cx.body_len(res.response().body().size());
            cx.access_log(res.status().as_u16(), Answer::Sent(sent));
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
    // Rendered once more to be measured: this path is rare (a panic, a middleware's error).
    let sent = cx.body_len(failure.to_response(id_str(&cx.id)).body().size());
    cx.access_log(failure.status().as_u16(), Answer::Sent(sent));
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
            self.cx.access_log(499, Answer::Unanswered(outcome));
        }
    }
}

/// How a request ended, for its access line.
#[derive(Clone, Copy)]
enum Answer {
    /// Answered, with a body of this many bytes (`None`: streamed, length unknown).
    Sent(Option<u64>),
    /// Never answered (`499`, nginx's "client closed request"), and why.
    Unanswered(&'static str),
}

impl Context {
    /// The access-log line: method, path, status, time, why there was no answer (`499`),
    /// the body bytes read (requests with a body, and unanswered ones), the key's name when
    /// a configured one was presented (`key=NAME`, never the key) and the request id; in
    /// JSON, the fields of the module's doc too.
    fn access_log(&self, status: u16, answer: Answer) {
        let ms = self.elapsed_ms();
        let key = self.key.0.get().map(|name| &**name);
        let (outcome, bytes_out) = match answer {
            Answer::Sent(bytes) => (None, bytes),
            Answer::Unanswered(outcome) => (Some(outcome), Some(0)),
        };
        let bytes_in = self.body.as_ref().map(|seen| seen.get());
        let seen = self.seen.as_deref();
        log::info!(
            target: "troupe::access",
            request_id = id_str(&self.id),
            method = self.method.as_str(),
            route = seen.and_then(|s| s.route.as_deref()),
            path = self.uri.path(),
            status = status,
            duration_ms = (ms * 1000.0).round() / 1000.0,
            bytes_in = bytes_in.unwrap_or(0),
            bytes_out = bytes_out,
            client = seen.and_then(|s| s.client.as_deref()),
            user_agent = seen.and_then(|s| s.user_agent.as_ref()?.to_str().ok()),
            key_name = key,
            outcome = outcome;
            "{}",
            AccessText {
                cx: self,
                status,
                ms,
                outcome,
                bytes_in: bytes_in.or(outcome.map(|_| 0)),
                key,
            }
        );
    }

    /// The bytes of a response body of `size` that go out: none for `HEAD`, `None` for a
    /// stream of unknown length (counting it would cost every download a wrapper).
    fn body_len(&self, size: BodySize) -> Option<u64> {
        match size {
            _ if self.method == Method::HEAD => Some(0),
            BodySize::None => Some(0),
            BodySize::Sized(n) => Some(n),
            BodySize::Stream => None,
        }
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
            request_id = id_str(&self.id);
            "{} {} answered {} {}: {cause}",
            self.method,
            self.uri.path(),
            status.as_u16(),
            err.code(),
        );
    }
}

/// The text of an access line, before the request id the logger adds.
struct AccessText<'a> {
    cx: &'a Context,
    status: u16,
    ms: f64,
    outcome: Option<&'a str>,
    bytes_in: Option<u64>,
    key: Option<&'a str>,
}

impl std::fmt::Display for AccessText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cx = self.cx;
        write!(
            f,
            "{} {} {} {:.3}ms",
            cx.method,
            cx.uri.path(),
            self.status,
            self.ms
        )?;
        if let Some(outcome) = self.outcome {
            write!(f, " outcome={outcome}")?;
        }
        if let Some(bytes) = self.bytes_in {
            write!(f, " body_bytes={bytes}")?;
        }
        if let Some(name) = self.key {
            write!(f, " key={name}")?;
        }
        Ok(())
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
