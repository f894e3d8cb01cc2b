//! `AppError`: every failure a client can cause or meet, with a stable code and a status.
//!
//! The message a client sees is kept apart from the cause that is logged: `Internal` and
//! `Unavailable` carry their cause for the log only, never for the response body.

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

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Every error troupe answers with. `code()` is the stable string clients match on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// Malformed JSON, query string or path.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input with invalid fields.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A unique value is already taken.
    #[error("{0}")]
    Conflict(String),
    /// The body is over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's media type is not one this route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too much work in flight: a pool wait timed out, a mailbox or queue is full.
    #[error("the service is overloaded, retry later")]
    Overloaded(String),
    /// A dependency (the database) cannot be reached right now.
    #[error("the database is unavailable, retry later")]
    DatabaseUnavailable(String),
    /// An upstream answered badly.
    #[error("{0}")]
    Upstream(String),
    /// An upstream did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A tus request's `Upload-Offset` is not the upload's offset (nothing was written).
    #[error("{0}")]
    OffsetMismatch(String),
    /// A tus request's body does not match its `Upload-Checksum` (nothing was appended).
    #[error("the body does not match Upload-Checksum")]
    ChecksumMismatch,
    /// A tus request without `Tus-Resumable: 1.0.0`.
    #[error("this server speaks tus 1.0.0 only (Tus-Resumable: 1.0.0)")]
    UnsupportedTusVersion,
    /// Another request is writing this upload right now.
    #[error("{0}")]
    Locked(String),
    /// The resource existed but has expired.
    #[error("{0}")]
    Gone(String),
    /// A `Range` that lies outside the content.
    #[error("the requested range is outside the content")]
    RangeNotSatisfiable,
    /// A conditional request (`If-Match`, `If-Unmodified-Since`) whose condition fails.
    #[error("a precondition of the request failed")]
    PreconditionFailed,
    /// The upload storage is full (or over its quota): nothing of the failed write is kept.
    #[error("the server's storage is full; retry later")]
    InsufficientStorage(String),
    /// A bug or a panic; the cause is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

/// tus's status for a checksum mismatch (not in the HTTP registry).
const CHECKSUM_MISMATCH: u16 = 460;

impl AppError {
    /// The stable snake_case code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Validation(_) => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Overloaded(_) => "overloaded",
            Self::DatabaseUnavailable(_) => "database_unavailable",
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

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded(_) | Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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

    /// A 422 about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
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
            503 => Self::Overloaded(String::new()),
            507 => Self::InsufficientStorage(String::new()),
            _ => Self::Internal(format!("unmapped status {status}")),
        }
    }

    /// The JSON body of this error, as `API.md` shapes it.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "request_id": request_id,
        });
        if let Self::Validation(fields) = self {
            error["fields"] = serde_json::json!(fields);
        }
        serde_json::json!({ "error": error })
    }

    /// The full response: status, JSON body, and `Retry-After` on 503.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        let mut res = HttpResponse::build(self.status());
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        res.json(self.body(request_id))
    }
}

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

impl From<actix::MailboxError> for AppError {
    fn from(err: actix::MailboxError) -> Self {
        match err {
            actix::MailboxError::Timeout => Self::Overloaded("actor did not answer in time".into()),
            actix::MailboxError::Closed => Self::Overloaded("actor mailbox closed".into()),
        }
    }
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
        let err = AppError::Internal("SELECT * FROM secret at /etc/x".into());
        let text = err.body("r").to_string();
        assert!(!text.contains("SELECT"), "{text}");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn overload_answers_503_with_retry_after() {
        let res = AppError::Overloaded("pool".into()).to_response("r");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }
}
