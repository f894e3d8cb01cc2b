//! `POST /upload` (seed) and `/uploads`: handlers read the form and shape the answers; the
//! file itself goes through an upload session, metadata through the `Db` handle.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_files::NamedFile;
use actix_web::body::{BodySize, BoxBody, MessageBody, SizedStream};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    self, ContentDisposition, DispositionParam, DispositionType, EntityTag, ExtendedValue,
    HeaderValue, HttpDate,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{mime, web, HttpMessage as _, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Each;

use crate::actors::upload::UploadSession;
use crate::auth::{may_use, Access};
use crate::db::page::{parse_limit, PageRequest};
use crate::db::uploads::{Upload, UploadPage};
use crate::error::{AppError, FieldError};
use crate::http::conditional::{self, Answer, Validators};
use crate::http::multipart::{form_data_type, Boundary, MultipartReader, PartBody, PartHeaders};
use crate::ids::UploadId;
use crate::openapi::{Binary, ErrorBody, UploadForm};
use crate::services::Services;
use crate::time::Rfc3339;
use crate::upload::filename::{ascii_filename, sanitize_filename};
use crate::upload::{Bucket, Storage};

/// Most parts a `POST /upload` body may have (the `file` part and a few plain fields).
pub const MAX_PARTS: usize = 16;
/// Largest plain (non-file) field, in bytes; such fields are read and dropped.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Room for multipart framing and small fields on top of `TROUPE_MAX_UPLOAD_BYTES`, when a
/// body's `Content-Length` is judged before reading it.
const FRAMING_SLACK: u64 = MAX_PARTS as u64 * MAX_FIELD_BYTES as u64;
/// What a file's type is when the client gave none (or a malformed one).
const OCTET_STREAM: &str = "application/octet-stream";

/// A complete upload as the API shows it; `POST /upload` adds `"status": "uploaded"`.
#[derive(Serialize, ToSchema)]
#[schema(as = Upload)]
struct UploadAnswer<'a> {
    #[schema(value_type = String, format = Uuid)]
    id: UploadId,
    /// The client's file name, sanitised (metadata only).
    filename: &'a str,
    /// As uploaded, or `application/octet-stream`.
    content_type: &'a str,
    /// In bytes.
    size: u64,
    /// Lowercase hex SHA-256 of the content.
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{64}$")]
    sha256: Option<&'a str>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Rfc3339,
    /// `uploaded`, in `POST /upload`'s answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false, pattern = "^uploaded$")]
    status: Option<&'static str>,
}

impl<'a> From<&'a Upload> for UploadAnswer<'a> {
    fn from(upload: &'a Upload) -> Self {
        Self {
            id: upload.id,
            filename: &upload.filename,
            content_type: &upload.content_type,
            size: upload.size,
            sha256: upload.sha256.as_deref(),
            created_at: Rfc3339(upload.created_at),
            status: None,
        }
    }
}

/// A page of uploads as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = UploadPage)]
struct PageAnswer<'a> {
    /// In id order.
    #[schema(value_type = Vec<UploadAnswer>)]
    uploads: Each<'a, Upload, UploadAnswer<'a>>,
    /// The `after` of the next page; `null` on the last one.
    #[schema(value_type = Option<String>)]
    next_after: Option<&'a str>,
}

impl<'a> From<&'a UploadPage> for PageAnswer<'a> {
    fn from(page: &'a UploadPage) -> Self {
        Self {
            uploads: Each::new(&page.uploads),
            next_after: page.next_after.as_deref(),
        }
    }
}

/// `POST /upload`: `multipart/form-data` with one field `file`, streamed to disk → 201.
/// Refused (503) before its body is read when `TROUPE_MAX_ACTIVE_UPLOADS` bodies stream.
#[utoipa::path(
    post,
    path = "/upload",
    tag = "uploads",
    operation_id = "upload_file",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 201, description = "Stored; `status` is `uploaded`", body = UploadAnswer,
            headers(("Location" = String, description = "`/uploads/{id}`"))),
        (status = 400, description = "`bad_request`: a malformed form (no boundary, too many parts or headers, two `file` fields, truncated)", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled; nothing is kept", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the file is over `TROUPE_MAX_UPLOAD_BYTES`, or a plain field over 64 KiB; nothing is kept", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `multipart/form-data`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: no `file` field", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many upload bodies streaming, or the digest threads are saturated; `storage_unavailable`: the object store is down or refuses (`s3://` storage), nothing is kept", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the disk is full; nothing is kept", body = ErrorBody),
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    services: web::Data<Services>,
) -> Result<HttpResponse, AppError> {
    let form_data = form_data_type(req.headers().get(header::CONTENT_TYPE))?;
    let max = services.limits.max_upload_bytes;
    if declared_length(&req).is_some_and(|len| len > max.saturating_add(FRAMING_SLACK)) {
        return Err(AppError::PayloadTooLarge(format!(
            "the upload is over its limit of {max} bytes"
        )));
    }
    let boundary = Boundary::of(&form_data)?;
    let owner = owner_of(&req);
    let _admitted = services.uploads.admit()?;

    let mut form = MultipartReader::new(&boundary, payload);
    let mut received: Option<UploadSession> = None;
    let mut parts = 0;
    while let Some(part) = form.next_part().await? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(AppError::BadRequest(format!(
                "the form has more than {MAX_PARTS} parts"
            )));
        }
        if part.name == "file" {
            if received.is_some() {
                return Err(AppError::BadRequest(
                    "the form has more than one `file` field".into(),
                ));
            }
            received = Some(receive_file(&services, &mut form, part, owner.clone()).await?);
        } else {
            skip_field(form.part_body()).await?;
        }
    }
    let Some(session) = received else {
        return Err(AppError::Validation(vec![FieldError::new(
            "file",
            "a multipart field named `file` is required",
        )]));
    };
    let upload = session.finish().await?;
    let answer = UploadAnswer {
        status: Some("uploaded"),
        ..UploadAnswer::from(&upload)
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/uploads/{}", upload.id)))
        .json(answer))
}

/// A request's `Content-Length`, when it declared one.
pub fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Streams the current part (the `file` field) into a new upload session.
async fn receive_file(
    services: &Services,
    form: &mut MultipartReader<web::Payload>,
    part: PartHeaders,
    owner: Option<String>,
) -> Result<UploadSession, AppError> {
    let filename = sanitize_filename(part.filename.as_deref().unwrap_or_default());
    let content_type = part
        .content_type
        .map_or_else(|| OCTET_STREAM.to_owned(), |m| m.essence_str().to_owned());
    let mut session = services
        .uploads
        .open_form_file(filename, content_type, owner)
        .await?;
    // The session keeps only the text of an error the body gave; the reader has the error.
    session
        .receive(form.part_body())
        .await
        .map_err(|err| form.failure().cloned().unwrap_or(err))?;
    Ok(session)
}

/// Reads a plain form field to its end and drops it (bounded, so it cannot be a way around
/// the upload limit).
async fn skip_field(mut field: PartBody<'_, web::Payload>) -> Result<(), AppError> {
    let mut seen = 0usize;
    while let Some(chunk) = field.next().await {
        seen += chunk?.len();
        if seen > MAX_FIELD_BYTES {
            return Err(AppError::PayloadTooLarge(format!(
                "a form field other than `file` is over {MAX_FIELD_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// `GET /uploads` query (other parameters are ignored).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::param::limit")]
    limit: Option<i64>,
    /// Only uploads with an id above this one (as text): the `next_after` of the page before.
    #[param(pattern = r"^[^\x00]*$")]
    after: Option<String>,
}

/// An upload's id in a path (documentation only: the handlers take the text and answer 404
/// for one that is not a UUID).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UploadPath {
    /// The upload's id.
    #[param(format = Uuid)]
    id: String,
}

/// `GET /uploads?limit=N&after=ID`: complete uploads in id order; a key without `admin`
/// sees only its own.
#[utoipa::path(
    get,
    path = "/uploads",
    tag = "uploads",
    operation_id = "list_uploads",
    params(ListQuery),
    security(("bearer" = ["uploads:read"])),
    responses(
        (status = 200, description = "A page of complete uploads in id order (a key without `admin` sees its own only)", body = PageAnswer),
        (status = 400, description = "`bad_request`: a malformed query string", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `limit` outside 1..=1000, or a NUL in `after`", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    req: HttpRequest,
    services: web::Data<Services>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let limit = parse_limit(query.limit).map_err(|f| AppError::Validation(vec![f]))?;
    let after = query.after.unwrap_or_default();
    // PostgreSQL's text holds no NUL: such an `after` would fail the query (a 500), not
    // name a place in the list.
    if after.contains('\0') {
        return Err(AppError::invalid(
            "after",
            "must not contain a NUL character",
        ));
    }
    let only = access_of(&req)
        .filter(|a| !a.scopes().is_admin())
        .map(|a| a.name().to_owned());
    let page = services
        .db
        .uploads(PageRequest { limit, after }, only)
        .await?;
    Ok(HttpResponse::Ok().json(PageAnswer::from(&page)))
}

/// The key a request came with; `None` in open mode (no keys, every upload anyone's).
pub fn access_of(req: &HttpRequest) -> Option<Access> {
    req.extensions().get::<Access>().cloned()
}

/// The name of the key a request came with, which an upload it creates records.
pub fn owner_of(req: &HttpRequest) -> Option<String> {
    req.extensions()
        .get::<Access>()
        .map(|access| access.name().to_owned())
}

/// 404, as for an upload that does not exist, unless `access` may use `upload` (its
/// creator's key, or `admin`; anyone in open mode): ids cannot be probed.
pub fn check_owner(access: Option<&Access>, upload: &Upload) -> Result<(), AppError> {
    if may_use(access, upload) {
        Ok(())
    } else {
        Err(AppError::no_upload())
    }
}

/// Before a request acts on upload `id` by id alone (a delete, a tus HEAD, PATCH or DELETE):
/// 404 unless its key may use it. Reads the row only for a key without `admin`; open mode
/// and `admin` pay nothing.
pub async fn authorize(
    services: &Services,
    access: Option<&Access>,
    id: UploadId,
) -> Result<(), AppError> {
    match access {
        Some(access) if !access.scopes().is_admin() => {
            let upload = services.db.upload(id).await?;
            check_owner(Some(access), &upload)
        }
        _ => Ok(()),
    }
}

/// The id in a path; one that is not a UUID names no upload.
pub fn parse_id(raw: &str) -> Result<UploadId, AppError> {
    raw.parse().map_err(|_| AppError::no_upload())
}

/// A complete upload by the id in a path, if `access` may use it; an unfinished one is not
/// shown here.
async fn complete_upload(
    services: &Services,
    raw: &str,
    access: Option<&Access>,
) -> Result<Upload, AppError> {
    let upload = services.db.upload(parse_id(raw)?).await?;
    check_owner(access, &upload)?;
    if !upload.complete {
        return Err(AppError::no_upload());
    }
    Ok(upload)
}

/// `GET /uploads/{id}`: one complete upload's metadata.
#[utoipa::path(
    get,
    path = "/uploads/{id}",
    tag = "uploads",
    operation_id = "get_upload",
    params(UploadPath),
    security(("bearer" = ["uploads:read"])),
    responses(
        (status = 200, description = "The upload", body = UploadAnswer),
        (status = 404, description = "`not_found`: no complete upload with this id that this key may see", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    req: HttpRequest,
    services: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let upload = complete_upload(&services, &id, access_of(&req).as_ref()).await?;
    Ok(HttpResponse::Ok().json(UploadAnswer::from(&upload)))
}

/// `GET` and `HEAD /uploads/{id}/content`: the bytes, streamed from disk, as an attachment.
/// actix-files answers conditional requests (`If-None-Match`, `If-Modified-Since` → 304;
/// `If-Match`, `If-Unmodified-Since` → 412) and one byte range (→ 206, with `If-Range`;
/// unsatisfiable → 416 with `Content-Range: bytes */N`). A `Range` it should not act on is
/// taken off the request first, so the whole body goes out with 200 (RFC 9110 §14.2 lets a
/// server ignore any `Range`): a malformed one (`bytes=abc`, `bytes=5-2`), another unit,
/// several ranges (actix-files would answer only the first), or any range of an empty file
/// (no byte to point at). A service, not a handler: only a `ServiceRequest` can lose a header.
#[utoipa::path(
    get,
    path = "/uploads/{id}/content",
    tag = "uploads",
    operation_id = "get_upload_content",
    params(
        UploadPath,
        ("Range" = Option<String>, Header, description = "One byte range (`bytes=first-last`, `bytes=first-`, `bytes=-suffix`); any other value is ignored"),
        ("If-Range" = Option<String>, Header, description = "An ETag or HTTP date: the range applies only while it is the file's"),
        ("If-None-Match" = Option<String>, Header, description = "ETags: 304 when one matches"),
        ("If-Modified-Since" = Option<String>, Header, description = "An HTTP date: 304 unless modified since"),
        ("If-Match" = Option<String>, Header, description = "ETags: 412 unless one matches"),
        ("If-Unmodified-Since" = Option<String>, Header, description = "An HTTP date: 412 when modified since"),
    ),
    security(("bearer" = ["uploads:read"])),
    responses(
        (status = 200, description = "The whole file, as an attachment", content_type = "*/*", body = Binary,
            headers(
                ("Content-Disposition" = String, description = "`attachment; filename=…`"),
                ("ETag" = String), ("Last-Modified" = String),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
                ("Content-Security-Policy" = String, description = "`sandbox; default-src 'none'`"),
            )),
        (status = 206, description = "The bytes of the one range asked for", content_type = "*/*", body = Binary,
            headers(
                ("Content-Range" = String, description = "`bytes first-last/size`"),
                ("Content-Disposition" = String), ("ETag" = String), ("Last-Modified" = String),
            )),
        (status = 304, description = "Not modified (`If-None-Match`, `If-Modified-Since`)",
            headers(("ETag" = String), ("Last-Modified" = String))),
        (status = 404, description = "`not_found`: no complete upload with this id that this key may see", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: `If-Match` or `If-Unmodified-Since` failed", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts at or past the end",
            body = ErrorBody, headers(("Content-Range" = String, description = "`bytes */size`"))),
        (status = 503, description = "`overloaded`, `database_unavailable`, or `storage_unavailable`: the object store is down or refuses (`s3://` storage)", body = ErrorBody),
    )
)]
pub async fn content(mut req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let res = match file_answer(&mut req).await {
        Ok(res) => res,
        Err(err) => HttpResponse::from_error(err),
    };
    Ok(req.into_response(res))
}

async fn file_answer(req: &mut ServiceRequest) -> Result<HttpResponse, AppError> {
    let services = req
        .app_data::<web::Data<Services>>()
        .cloned()
        .ok_or_else(|| AppError::internal("serving a file", "no Services in the app data"))?;
    let raw = req.match_info().get("id").unwrap_or_default().to_owned();
    let access = req.extensions().get::<Access>().cloned();
    let upload = complete_upload(&services, &raw, access.as_ref()).await?;
    let keep_range = req
        .headers()
        .get(header::RANGE)
        .is_some_and(|range| is_single_byte_range(range.as_bytes()) && upload.size > 0);
    if !keep_range {
        req.headers_mut().remove(header::RANGE);
    }
    let content_type = upload
        .content_type
        .parse::<mime::Mime>()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let mut parameters = vec![DispositionParam::Filename(ascii_filename(&upload.filename))];
    if !upload.filename.is_ascii() {
        parameters.push(DispositionParam::FilenameExt(ExtendedValue {
            charset: header::Charset::Ext("UTF-8".into()),
            language_tag: None,
            value: upload.filename.clone().into_bytes(),
        }));
    }
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters,
    };
    let mut res = match &services.store {
        Storage::Dir(store) => {
            let (id, path) = (upload.id, store.file_path(&upload.id));
            let file = web::block(move || NamedFile::open(path))
                .await
                .map_err(|e| AppError::internal("opening a stored file", e))?
                .map_err(|e| {
                    log::warn!("upload {id} has a row but its file cannot be opened: {e}");
                    AppError::NotFound("this upload's content is gone".into())
                })?;
            file.set_content_type(content_type)
                .set_content_disposition(disposition)
                // Stored bytes go out as they are (this route is not under `Compress`:
                // compressing would break byte ranges), with no `Content-Encoding`: RFC 9110
                // §8.4.1 has no `identity` coding to send.
                .use_etag(true)
                .use_last_modified(true)
                .into_response(req.request())
        }
        Storage::Bucket(bucket) => {
            object_answer(req.request(), bucket, &upload, content_type, disposition).await?
        }
    };
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Even if a browser renders it, uploaded content runs no script with this origin's rights.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if req.method() == Method::HEAD {
        // The server would read the whole file to drop it; a HEAD's body is only its size.
        return Ok(res.map_body(|_, body| BoxBody::new(Headless(body.size()))));
    }
    Ok(res)
}

/// Upload content from the bucket, with the headers and answers actix-files gives a file:
/// the type (text in UTF-8), the disposition, `ETag` (the content's SHA-256) and
/// `Last-Modified` (when it was stored), `Accept-Ranges`; 412, 304, 206 and 416 as
/// [`conditional::evaluate`] decides, before the store is asked anything. A HEAD only asks
/// whether the object is there; a GET streams the bytes (or the range) from the store.
async fn object_answer(
    req: &HttpRequest,
    bucket: &Bucket,
    upload: &Upload,
    content_type: mime::Mime,
    disposition: ContentDisposition,
) -> Result<HttpResponse, AppError> {
    let validators = Validators {
        etag: EntityTag::new_strong(
            upload
                .sha256
                .clone()
                .unwrap_or_else(|| upload.id.to_string()),
        ),
        last_modified: HttpDate::from(std::time::SystemTime::from(upload.created_at.and_utc())),
    };
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, utf8_text(content_type).to_string()))
        .insert_header((header::CONTENT_DISPOSITION, disposition.to_string()))
        .insert_header((header::LAST_MODIFIED, validators.last_modified.to_string()))
        .insert_header((header::ETAG, validators.etag.to_string()))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let size = upload.size;
    let (status, range) = match conditional::evaluate(req, &validators, size) {
        Answer::PreconditionFailed => {
            return Ok(res.status(StatusCode::PRECONDITION_FAILED).finish())
        }
        Answer::NotModified => return Ok(res.status(StatusCode::NOT_MODIFIED).finish()),
        Answer::Unsatisfiable => {
            res.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            return Ok(res.status(StatusCode::RANGE_NOT_SATISFIABLE).finish());
        }
        Answer::Whole => (StatusCode::OK, None),
        Answer::Part { start, length } => {
            let last = start + length - 1;
            res.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{last}/{size}"),
            ));
            (StatusCode::PARTIAL_CONTENT, Some(start..start + length))
        }
    };
    res.status(status);
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    if req.method() == Method::HEAD {
        bucket.stat(&upload.id).await?;
        return Ok(res.body(BoxBody::new(Headless(BodySize::Sized(length)))));
    }
    let bytes = bucket.read(&upload.id, range).await?;
    Ok(res.body(SizedStream::new(length, bytes)))
}

/// A text type as actix-files labels it for a file: with `charset=utf-8`.
fn utf8_text(ct: mime::Mime) -> mime::Mime {
    let utf8 = [
        (
            mime::APPLICATION_JAVASCRIPT,
            mime::APPLICATION_JAVASCRIPT_UTF_8,
        ),
        (mime::TEXT_HTML, mime::TEXT_HTML_UTF_8),
        (mime::TEXT_CSS, mime::TEXT_CSS_UTF_8),
        (mime::TEXT_PLAIN, mime::TEXT_PLAIN_UTF_8),
        (mime::TEXT_CSV, mime::TEXT_CSV_UTF_8),
        (
            mime::TEXT_TAB_SEPARATED_VALUES,
            mime::TEXT_TAB_SEPARATED_VALUES_UTF_8,
        ),
    ];
    utf8.into_iter()
        .find(|(plain, _)| *plain == ct)
        .map_or(ct, |(_, with_charset)| with_charset)
}

/// Whether a `Range` value is one well-formed byte range (RFC 9110 §14.1.2): `bytes=` and one
/// `first-last` (first ≤ last), `first-` or `-suffix`, empty list elements and spaces
/// around them allowed. Whether it is satisfiable is actix-files' to judge (416).
fn is_single_byte_range(value: &[u8]) -> bool {
    let Some((unit, set)) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split_once('='))
    else {
        return false;
    };
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return false;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return false;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let valid = match (number(first), number(last)) {
        (Some(first), Some(last)) => first <= last,
        (Some(_), None) => last.is_empty(),
        (None, Some(_)) => first.is_empty(),
        (None, None) => false,
    };
    unit.eq_ignore_ascii_case("bytes") && valid
}

/// A HEAD answer's body: the size of the body a GET gets (its `Content-Length`), no bytes.
struct Headless(BodySize);

impl MessageBody for Headless {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        self.0
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}

/// `DELETE /uploads/{id}` → 204: a complete upload's row and bytes.
#[utoipa::path(
    delete,
    path = "/uploads/{id}",
    tag = "uploads",
    operation_id = "delete_upload",
    params(UploadPath),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 204, description = "Deleted: the row, then the file"),
        (status = 404, description = "`not_found`: no upload with this id that this key may use", body = ErrorBody),
        (status = 423, description = "`upload_locked`: a tus PATCH is writing it", body = ErrorBody),
        (status = 503, description = "`overloaded`, `database_unavailable`, or `storage_unavailable`: the object store is down or refuses (`s3://` storage)", body = ErrorBody),
    )
)]
pub async fn delete(
    req: HttpRequest,
    services: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    authorize(&services, access_of(&req).as_ref(), id).await?;
    services.uploads.remove(id, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_well_formed_byte_range_is_kept() {
        for kept in [
            "bytes=0-9",
            "bytes=5-",
            "bytes=-5",
            "bytes=-0",
            "bytes=7-7",
            "Bytes=0-1",
            "bytes= 0-1 ",
            "bytes=0-1,",
            "bytes=500-600",
        ] {
            assert!(is_single_byte_range(kept.as_bytes()), "{kept}");
        }
        for dropped in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=abc",
            "bytes=5-2",
            "bytes=-",
            "bytes=--5",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=99999999999999999999-",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes 0-1",
        ] {
            assert!(!is_single_byte_range(dropped.as_bytes()), "{dropped}");
        }
        assert!(!is_single_byte_range(b"bytes=\xff0-1"));
    }
}
