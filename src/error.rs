//! `AppError`: every failure a client can cause or meet, with a stable code and a status.
//!
//! What the client reads and what only the log reads is in the type: most variants carry
//! the message the client is shown; the variants that must not show their cause (a bug, a
//! panic, a full disk, a database that is down, an overload) carry a [`Hidden`] cause
//! instead, and the client reads a fixed sentence. The request-context middleware
//! (`http::middleware`) logs every 5xx once, with its request id and its cause; nothing else
//! logs a failure that reaches a client.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One invalid field of a request, for 422 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as the client sent it (`email`, `limit`, ...).
    pub field: String,
    /// What is wrong with it, for humans.
    pub message: String,
}

impl FieldError {
    /// A field error from anything string-like.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The cause of a failure that the client is not shown: what failed, and why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// What was being done (`upload file operation`, `panic in DbActor`, ...).
    pub what: &'static str,
    /// Why it failed: the underlying error's text, with its sources.
    pub cause: String,
}

impl Hidden {
    /// A cause from anything printable.
    pub fn new(what: &'static str, cause: impl fmt::Display) -> Self {
        Self {
            what,
            cause: cause.to_string(),
        }
    }
}

impl fmt::Display for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cause.is_empty() {
            f.write_str(self.what)
        } else {
            write!(f, "{}: {}", self.what, self.cause)
        }
    }
}

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// `WWW-Authenticate` on a 401 for a request without a key.
pub const WWW_AUTHENTICATE_BEARER: &str = r#"Bearer realm="troupe""#;

/// `WWW-Authenticate` on a 401 for a key that is not valid (RFC 6750's `invalid_token`).
pub const WWW_AUTHENTICATE_INVALID_TOKEN: &str = r#"Bearer realm="troupe", error="invalid_token""#;

/// Every error troupe answers with. `code()` is the stable string clients match on,
/// `message()` what they read.
#[derive(Debug, Clone)]
pub enum AppError {
    /// Malformed JSON, query string or path.
    BadRequest(String),
    /// Well-formed input with invalid fields.
    Validation(Vec<FieldError>),
    /// No such route or resource.
    NotFound(String),
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// A protected route without a key (`invalid_token: false`), or with one that is not
    /// valid (`true`).
    Unauthorized {
        /// Whether a key was sent but is not one of the configured keys (or the
        /// `Authorization` header is not `Bearer KEY`).
        invalid_token: bool,
    },
    /// A valid key without the scope the route needs; the message names the scope.
    Forbidden(String),
    /// The client is over its rate limit.
    RateLimited {
        /// Whole seconds until it may send again (at least 1), for `Retry-After`.
        retry_after_secs: u64,
    },
    /// A unique value is already taken.
    Conflict(String),
    /// The request body delivered no byte for `TROUPE_BODY_TIMEOUT_MS`.
    RequestTimeout(String),
    /// A tus PATCH stopped because another request for its upload asked for the lock; the
    /// bytes it had received are kept.
    UploadInterrupted,
    /// The body is over its limit.
    PayloadTooLarge(String),
    /// The body's media type is not one this route takes.
    UnsupportedMediaType(String),
    /// Too much work in flight: a pool wait timed out, a mailbox or queue is full.
    Overloaded(Hidden),
    /// A dependency (the database) cannot be reached right now.
    DatabaseUnavailable(Hidden),
    /// The object store uploads live in (`TROUPE_STORAGE=s3://…`) is down or refuses.
    StorageUnavailable(Hidden),
    /// An upstream answered badly.
    Upstream(String),
    /// An upstream did not answer in time.
    UpstreamTimeout(String),
    /// A tus request's `Upload-Offset` is not the upload's offset (nothing was written).
    OffsetMismatch(String),
    /// A tus request's body does not match its `Upload-Checksum` (nothing was appended).
    ChecksumMismatch,
    /// A tus request without `Tus-Resumable: 1.0.0`.
    UnsupportedTusVersion,
    /// Another request is writing this upload right now.
    Locked(String),
    /// The resource existed but has expired.
    Gone(String),
    /// A `Range` that lies outside the content.
    RangeNotSatisfiable,
    /// A conditional request (`If-Match`, `If-Unmodified-Since`) whose condition fails.
    PreconditionFailed,
    /// The upload storage is full (or over its quota): nothing of the failed write is kept.
    InsufficientStorage(Hidden),
    /// A bug, a panic or a failing disk.
    Internal(Hidden),
}

/// Every code [`AppError::code`] answers, in variant order: the `code` enum of the OpenAPI
/// document (a test holds it to the variants).
pub const CODES: [&str; 26] = [
    "bad_request",
    "validation_failed",
    "not_found",
    "method_not_allowed",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "conflict",
    "request_timeout",
    "upload_interrupted",
    "payload_too_large",
    "unsupported_media_type",
    "overloaded",
    "database_unavailable",
    "storage_unavailable",
    "upstream_error",
    "upstream_timeout",
    "offset_mismatch",
    "checksum_mismatch",
    "unsupported_tus_version",
    "upload_locked",
    "gone",
    "range_not_satisfiable",
    "precondition_failed",
    "insufficient_storage",
    "internal",
];

/// tus's status for a checksum mismatch (not in the HTTP registry).
const CHECKSUM_MISMATCH: u16 = 460;

impl AppError {
    /// A 500 whose cause only the log sees.
    pub fn internal(what: &'static str, cause: impl fmt::Display) -> Self {
        Self::Internal(Hidden::new(what, cause))
    }

    /// A 503 `overloaded` whose cause only the log sees.
    pub fn overloaded(what: &'static str, cause: impl fmt::Display) -> Self {
        Self::Overloaded(Hidden::new(what, cause))
    }

    /// A 503 `database_unavailable` whose cause only the log sees.
    pub fn database_unavailable(what: &'static str, cause: impl fmt::Display) -> Self {
        Self::DatabaseUnavailable(Hidden::new(what, cause))
    }

    /// A 503 `storage_unavailable` (the object store is down or refuses) whose cause only
    /// the log sees.
    pub fn storage_unavailable(what: &'static str, cause: impl fmt::Display) -> Self {
        Self::StorageUnavailable(Hidden::new(what, cause))
    }

    /// A file operation on the upload storage failed: a full disk (or quota) is 507,
    /// anything else 500; the cause is for the log either way.
    pub fn storage(what: &'static str, err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Self::InsufficientStorage(Hidden::new(what, err))
            }
            _ => Self::internal(what, err),
        }
    }

    /// 404 for an upload id that names no upload the route may show.
    pub fn no_upload() -> Self {
        Self::NotFound("no upload with this id".into())
    }

    /// 404 for a user id that names no user.
    pub fn no_user() -> Self {
        Self::NotFound("no user with this id".into())
    }

    /// A 422 about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable snake_case code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Validation(_) => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Conflict(_) => "conflict",
            Self::RequestTimeout(_) => "request_timeout",
            Self::UploadInterrupted => "upload_interrupted",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Overloaded(_) => "overloaded",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::StorageUnavailable(_) => "storage_unavailable",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::OffsetMismatch(_) => "offset_mismatch",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::UnsupportedTusVersion => "unsupported_tus_version",
            Self::Locked(_) => "upload_locked",
            Self::Gone(_) => "gone",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::PreconditionFailed => "precondition_failed",
            Self::InsufficientStorage(_) => "insufficient_storage",
            Self::Internal(_) => "internal",
        }
    }

    /// What the client reads: the variant's own message, or a fixed sentence for the
    /// variants whose cause is hidden.
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Forbidden(m)
            | Self::RequestTimeout(m)
            | Self::PayloadTooLarge(m)
            | Self::UnsupportedMediaType(m)
            | Self::Upstream(m)
            | Self::UpstreamTimeout(m)
            | Self::OffsetMismatch(m)
            | Self::Locked(m)
            | Self::Gone(m) => m,
            Self::Validation(_) => "the request has invalid fields",
            Self::MethodNotAllowed => "method not allowed",
            Self::Unauthorized {
                invalid_token: false,
            } => "this route needs an API key: send Authorization: Bearer KEY",
            Self::Unauthorized {
                invalid_token: true,
            } => "the API key is not valid",
            Self::RateLimited { .. } => {
                "too many requests; retry after the number of seconds in Retry-After"
            }
            Self::UploadInterrupted => {
                "another request for this upload took it over; the bytes received are kept"
            }
            Self::Overloaded(_) => "the service is overloaded, retry later",
            Self::DatabaseUnavailable(_) => "the database is unavailable, retry later",
            Self::StorageUnavailable(_) => "the upload storage is unavailable, retry later",
            Self::ChecksumMismatch => "the body does not match Upload-Checksum",
            Self::UnsupportedTusVersion => {
                "this server speaks tus 1.0.0 only (Tus-Resumable: 1.0.0)"
            }
            Self::RangeNotSatisfiable => "the requested range is outside the content",
            Self::PreconditionFailed => "a precondition of the request failed",
            Self::InsufficientStorage(_) => "the server's storage is full; retry later",
            Self::Internal(_) => "internal error",
        }
    }

    /// The cause only the log sees, for the variants that hide theirs.
    pub fn hidden(&self) -> Option<&Hidden> {
        match self {
            Self::Overloaded(h)
            | Self::DatabaseUnavailable(h)
            | Self::StorageUnavailable(h)
            | Self::InsufficientStorage(h)
            | Self::Internal(h) => Some(h),
            _ => None,
        }
    }

    /// What the log says of this error: the hidden cause, or else the client's message.
    pub fn cause(&self) -> String {
        self.hidden()
            .map_or_else(|| self.message().to_owned(), ToString::to_string)
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UploadInterrupted => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded(_) | Self::DatabaseUnavailable(_) | Self::StorageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::OffsetMismatch(_) => StatusCode::CONFLICT,
            Self::ChecksumMismatch => {
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::UnsupportedTusVersion => StatusCode::PRECONDITION_FAILED,
            Self::Locked(_) => StatusCode::LOCKED,
            Self::Gone(_) => StatusCode::GONE,
            Self::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error a response with this status and no `AppError` behind it stands for
    /// (actix-web's own answers: 404 from routing, 405 from a resource, ...).
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::BadRequest("bad request".into()),
            404 => Self::NotFound("no such route".into()),
            405 => Self::MethodNotAllowed,
            412 => Self::PreconditionFailed,
            413 => Self::PayloadTooLarge("the request body is too large".into()),
            415 => Self::UnsupportedMediaType("unsupported media type".into()),
            416 => Self::RangeNotSatisfiable,
            503 => Self::overloaded("a 503 from the HTTP layer", ""),
            507 => Self::InsufficientStorage(Hidden::new("a 507 from the HTTP layer", "")),
            _ => Self::internal("an unmapped status", status),
        }
    }

    /// The JSON body of this error, as `API.md` shapes it.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.message(),
            "request_id": request_id,
        });
        if let Self::Validation(fields) = self {
            error["fields"] = serde_json::json!(fields);
        }
        serde_json::json!({ "error": error })
    }

    /// The full response: status, JSON body, `Retry-After` on 503 and 429, and
    /// `WWW-Authenticate` on 401.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        let mut res = HttpResponse::build(self.status());
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        match self {
            Self::Unauthorized { invalid_token } => {
                let challenge = if *invalid_token {
                    WWW_AUTHENTICATE_INVALID_TOKEN
                } else {
                    WWW_AUTHENTICATE_BEARER
                };
                res.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            Self::RateLimited { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        res.json(self.body(request_id))
    }
}

/// Marks a response a handler shaped itself (a richer body than [`AppError::body`]: the
/// fan-out's per-source errors, `/readyz`'s components) as standing for an error, so that the
/// middleware logs its cause like any other 5xx's.
#[derive(Debug, Clone)]
pub struct ShapedError(pub AppError);

impl ShapedError {
    /// Attaches `err` to `res`.
    pub fn attach(err: AppError, res: &mut HttpResponse) {
        res.extensions_mut().insert(Self(err));
    }
}

impl fmt::Display for AppError {
    /// The client's message; the log line of a hidden cause is the middleware's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AppError {}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    /// Rendered without a request id; the request-context middleware renders it again
    /// with the id of the request it belongs to.
    fn error_response(&self) -> HttpResponse {
        self.to_response("")
    }
}

/// An error and its sources, as one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The message a panic carried, for the log.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_body_lists_fields_and_request_id() {
        let err = AppError::invalid("email", "must contain @");
        let body = err.body("req-1");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["request_id"], "req-1");
        assert_eq!(body["error"]["fields"][0]["field"], "email");
    }

    #[test]
    fn internal_cause_never_reaches_the_body() {
        let err = AppError::internal("query", "SELECT * FROM secret at /etc/x");
        let text = err.body("r").to_string();
        assert!(!text.contains("SELECT"), "{text}");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            err.hidden().map(ToString::to_string).as_deref(),
            Some("query: SELECT * FROM secret at /etc/x")
        );
    }

    #[test]
    fn overload_answers_503_with_retry_after() {
        let res = AppError::overloaded("pool", "busy").to_response("r");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_full_disk_is_507_and_any_other_file_error_500() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(
            AppError::storage("write", &full).code(),
            "insufficient_storage"
        );
        let other = std::io::Error::other("bad sector");
        assert_eq!(AppError::storage("write", &other).code(), "internal");
    }

    /// Every variant, once; the match below stops compiling when one is added and not listed.
    fn every_variant() -> Vec<AppError> {
        let hidden = || Hidden::new("x", "y");
        let all = vec![
            AppError::BadRequest(String::new()),
            AppError::Validation(Vec::new()),
            AppError::NotFound(String::new()),
            AppError::MethodNotAllowed,
            AppError::Unauthorized {
                invalid_token: false,
            },
            AppError::Forbidden(String::new()),
            AppError::RateLimited {
                retry_after_secs: 1,
            },
            AppError::Conflict(String::new()),
            AppError::RequestTimeout(String::new()),
            AppError::UploadInterrupted,
            AppError::PayloadTooLarge(String::new()),
            AppError::UnsupportedMediaType(String::new()),
            AppError::Overloaded(hidden()),
            AppError::DatabaseUnavailable(hidden()),
            AppError::StorageUnavailable(hidden()),
            AppError::Upstream(String::new()),
            AppError::UpstreamTimeout(String::new()),
            AppError::OffsetMismatch(String::new()),
            AppError::ChecksumMismatch,
            AppError::UnsupportedTusVersion,
            AppError::Locked(String::new()),
            AppError::Gone(String::new()),
            AppError::RangeNotSatisfiable,
            AppError::PreconditionFailed,
            AppError::InsufficientStorage(hidden()),
            AppError::Internal(hidden()),
        ];
        for err in &all {
            match err {
                AppError::BadRequest(_)
                | AppError::Validation(_)
                | AppError::NotFound(_)
                | AppError::MethodNotAllowed
                | AppError::Unauthorized { .. }
                | AppError::Forbidden(_)
                | AppError::RateLimited { .. }
                | AppError::Conflict(_)
                | AppError::RequestTimeout(_)
                | AppError::UploadInterrupted
                | AppError::PayloadTooLarge(_)
                | AppError::UnsupportedMediaType(_)
                | AppError::Overloaded(_)
                | AppError::DatabaseUnavailable(_)
                | AppError::StorageUnavailable(_)
                | AppError::Upstream(_)
                | AppError::UpstreamTimeout(_)
                | AppError::OffsetMismatch(_)
                | AppError::ChecksumMismatch
                | AppError::UnsupportedTusVersion
                | AppError::Locked(_)
                | AppError::Gone(_)
                | AppError::RangeNotSatisfiable
                | AppError::PreconditionFailed
                | AppError::InsufficientStorage(_)
                | AppError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn the_documented_codes_are_every_variants_code() {
        let codes: Vec<&str> = every_variant().iter().map(AppError::code).collect();
        assert_eq!(
            codes, CODES,
            "CODES (the OpenAPI `code` enum) is out of date"
        );
    }

    /// The source of every file under `src/` but this one.
    fn other_sources() -> String {
        fn walk(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/error.rs")
                {
                    out.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut out = String::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut out,
        );
        out
    }

    #[test]
    fn every_error_code_is_unique_snake_case_and_used() {
        let all = every_variant();
        let codes: std::collections::HashSet<_> = all.iter().map(AppError::code).collect();
        assert_eq!(codes.len(), all.len(), "two variants share a code");
        for code in &codes {
            let snake = !code.is_empty()
                && code.starts_with(|c: char| c.is_ascii_lowercase())
                && code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !code.contains("__")
                && !code.ends_with('_');
            assert!(snake, "{code:?} is not snake_case");
        }
        // Used: some code outside this file builds it, by its variant or its constructor, or
        // it stands for a status actix-web answers itself (a resource's 405, actix-files' 412
        // and 416, ...).
        let sources = other_sources();
        let from_http: std::collections::HashSet<_> = [400, 404, 405, 412, 413, 415, 416]
            .into_iter()
            .filter_map(|s| StatusCode::from_u16(s).ok())
            .map(|s| AppError::from_status(s).code())
            .collect();
        for err in &all {
            let variant = format!("{err:?}");
            let variant = variant
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned();
            let constructor = match err {
                AppError::Internal(_) => Some("AppError::internal("),
                AppError::Overloaded(_) => Some("AppError::overloaded("),
                AppError::DatabaseUnavailable(_) => Some("AppError::database_unavailable("),
                AppError::StorageUnavailable(_) => Some("AppError::storage_unavailable("),
                AppError::InsufficientStorage(_) => Some("AppError::storage("),
                AppError::NotFound(_) => Some("AppError::no_upload("),
                AppError::Validation(_) => Some("AppError::invalid("),
                _ => None,
            };
            let used = sources.contains(&format!("AppError::{variant}"))
                || constructor.is_some_and(|c| sources.contains(c))
                || from_http.contains(err.code());
            assert!(used, "{} ({variant}) is never built", err.code());
        }
    }
}
