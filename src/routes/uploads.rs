//! `POST /upload` (seed) and `/uploads`: handlers read the form and shape the answers; the
//! file itself goes through an upload session, metadata through the `Db` handle.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_files::NamedFile;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    self, ContentDisposition, DispositionParam, DispositionType, ExtendedValue, HeaderValue,
};
use actix_web::http::Method;
use actix_web::{mime, web, HttpMessage as _, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::Each;

use crate::actors::upload::UploadSession;
use crate::auth::{may_use, Access};
use crate::db::page::{parse_limit, PageRequest};
use crate::db::uploads::{Upload, UploadPage};
use crate::error::{AppError, FieldError};
use crate::http::multipart::{form_data_type, Boundary, MultipartReader, PartBody, PartHeaders};
use crate::ids::UploadId;
use crate::services::Services;
use crate::time::Rfc3339;
use crate::upload::filename::{ascii_filename, sanitize_filename};

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
#[derive(Serialize)]
struct UploadAnswer<'a> {
    id: UploadId,
    filename: &'a str,
    content_type: &'a str,
    size: u64,
    sha256: Option<&'a str>,
    created_at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
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
#[derive(Serialize)]
struct PageAnswer<'a> {
    uploads: Each<'a, Upload, UploadAnswer<'a>>,
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
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "super::param::limit")]
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /uploads?limit=N&after=ID`: complete uploads in id order; a key without `admin`
/// sees only its own.
pub async fn list(
    req: HttpRequest,
    services: web::Data<Services>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let limit = parse_limit(query.limit).map_err(|f| AppError::Validation(vec![f]))?;
    let after = query.after.unwrap_or_default();
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
    let (id, path) = (upload.id, services.store.file_path(&upload.id));
    let file = web::block(move || NamedFile::open(path))
        .await
        .map_err(|e| AppError::internal("opening a stored file", e))?
        .map_err(|e| {
            log::warn!("upload {id} has a row but its file cannot be opened: {e}");
            AppError::NotFound("this upload's content is gone".into())
        })?;
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
    let mut res = file
        .set_content_type(content_type)
        .set_content_disposition(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters,
        })
        // Stored bytes go out as they are (this route is not under `Compress`: compressing
        // would break byte ranges), with no `Content-Encoding`: RFC 9110 §8.4.1 has no
        // `identity` coding to send.
        .use_etag(true)
        .use_last_modified(true)
        .into_response(req.request());
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
