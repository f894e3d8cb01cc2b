//! tus 1.0 resumable uploads at `/files/`: core protocol and the `creation`,
//! `creation-with-upload`, `termination`, `checksum` and `expiration` extensions.
//!
//! Handlers parse the tus headers and shape the answers; the upload session does the rest
//! (`actors::upload::session`), and the upload's lifecycle is `actors::upload::tus`'s. A
//! finished upload gets its SHA-256 and appears under `/uploads`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{mime, web, HttpRequest, HttpResponse, HttpResponseBuilder};
use utoipa::IntoParams;

use super::uploads::{access_of, authorize, check_owner, declared_length, owner_of, parse_id};
use crate::db::uploads::{FileInfo, Upload};
use crate::error::AppError;
use crate::ids::UploadId;
use crate::openapi::{Binary, ErrorBody};
use crate::services::Services;
use crate::time::{http_date, now};
use crate::upload::filename::sanitize_filename;
use crate::upload::tus::{self, Checksum};

const TUS_RESUMABLE: &str = "tus-resumable";
const TUS_VERSION: &str = "tus-version";
const UPLOAD_OFFSET: &str = "upload-offset";
const UPLOAD_LENGTH: &str = "upload-length";
const UPLOAD_METADATA: &str = "upload-metadata";
const UPLOAD_EXPIRES: &str = "upload-expires";
const X_HTTP_METHOD_OVERRIDE: &str = "x-http-method-override";

/// Middleware for the `/files` scope: routes a POST by its `X-HTTP-Method-Override`, refuses
/// a tus request without `Tus-Resumable: 1.0.0` (412; OPTIONS excepted), and marks every
/// answer with `Tus-Resumable`. A method tus does not define at the path (`GET /files/x`,
/// `PATCH /files/`) is not checked: routing answers it 405 with `Allow`, as on every route.
/// CORS is the app's (`TROUPE_CORS_ORIGINS`), as on every route.
pub async fn protocol(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let overridden = match method_override(&req) {
        Ok(method) => method,
        Err(err) => {
            let mut res = req.error_response(err);
            res.headers_mut()
                .insert(HeaderName::from_static(TUS_RESUMABLE), version());
            return Ok(res);
        }
    };
    if let Some(method) = overridden {
        req.head_mut().method = method;
    }
    let root = matches!(req.match_info().unprocessed(), "" | "/");
    let defined = if root {
        req.method() == Method::POST
    } else {
        [Method::HEAD, Method::PATCH, Method::DELETE].contains(req.method())
    };
    let speaks_tus = !defined
        || req
            .headers()
            .get(TUS_RESUMABLE)
            .is_some_and(|v| v.as_bytes() == tus::VERSION.as_bytes());
    let mut res = if speaks_tus {
        next.call(req).await?.map_into_boxed_body()
    } else {
        let mut res = req.error_response(AppError::UnsupportedTusVersion);
        res.headers_mut()
            .insert(HeaderName::from_static(TUS_VERSION), version());
        res
    };
    res.headers_mut()
        .insert(HeaderName::from_static(TUS_RESUMABLE), version());
    Ok(res)
}

/// The method a POST stands for: tus 1.0 says a server MUST take `X-HTTP-Method-Override` as
/// the request's method, for clients that cannot send PATCH or DELETE (tus-js-client's and
/// Uppy's `overridePatchMethod`). Only a POST is overridden: it is what such a client sends.
fn method_override(req: &ServiceRequest) -> Result<Option<Method>, AppError> {
    match req.headers().get(X_HTTP_METHOD_OVERRIDE) {
        Some(value) if req.method() == Method::POST => Method::from_bytes(value.as_bytes())
            .map(Some)
            .map_err(|_| AppError::BadRequest("X-HTTP-Method-Override is not a method".into())),
        _ => Ok(None),
    }
}

fn version() -> HeaderValue {
    HeaderValue::from_static(tus::VERSION)
}

/// The headers of every tus request but OPTIONS (documentation only).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct Resumable {
    /// The protocol version: `1.0.0`; another or none → 412.
    #[param(rename = "Tus-Resumable", pattern = r"^1\.0\.0$")]
    tus_resumable: String,
}

/// A tus upload's id in a path (documentation only: one that is not a UUID is 404).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct FilePath {
    /// The upload's id (the last segment of `Location`).
    #[param(format = Uuid)]
    id: String,
}

/// `POST /files/`'s headers (documentation only).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct CreateHeaders {
    /// The upload's size in bytes (at most `Tus-Max-Size`).
    #[param(rename = "Upload-Length", minimum = 0, maximum = 1073741824)]
    upload_length: u64,
    /// `key base64value` pairs, comma-separated, keys unique; `filename` (or `name`) and
    /// `filetype` (or `type`, `contentType`) are kept. At most 4096 bytes.
    #[param(rename = "Upload-Metadata", schema_with = crate::openapi::upload_metadata_schema)]
    upload_metadata: Option<String>,
}

/// `PATCH /files/{id}`'s headers (documentation only).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct PatchHeaders {
    /// The offset the body starts at: the upload's current offset (`HEAD`), else 409.
    #[param(rename = "Upload-Offset", minimum = 0, maximum = 1073741824)]
    upload_offset: u64,
    /// `sha1` or `sha256`, a space and the body's digest in base64: a body that does not
    /// match → 460, nothing appended.
    #[param(rename = "Upload-Checksum", schema_with = crate::openapi::upload_checksum_schema)]
    upload_checksum: Option<String>,
}

/// `OPTIONS /files/` and `/files/{id}`: what this server speaks. A browser's CORS preflight
/// never gets here: the app's CORS middleware answers it.
#[utoipa::path(
    options,
    path = "/files/",
    tag = "tus",
    operation_id = "tus_options",
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 204, description = "What this server speaks",
            headers(
                ("Tus-Version" = String, description = "`1.0.0`"),
                ("Tus-Extension" = String, description = "`creation,creation-with-upload,termination,checksum,expiration`"),
                ("Tus-Max-Size" = u64, description = "`TROUPE_MAX_UPLOAD_BYTES`"),
                ("Tus-Checksum-Algorithm" = String, description = "`sha1,sha256`"),
            )),
    )
)]
pub async fn options(services: web::Data<Services>) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((TUS_VERSION, tus::VERSION))
        .insert_header(("tus-extension", tus::EXTENSIONS))
        .insert_header(("tus-max-size", services.limits.max_upload_bytes.to_string()))
        .insert_header(("tus-checksum-algorithm", tus::CHECKSUM_ALGORITHMS))
        .finish()
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AppError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| AppError::BadRequest(format!("{name} is not ASCII text")))
        })
        .transpose()
}

fn size_header(headers: &HeaderMap, name: &str) -> Result<Option<u64>, AppError> {
    text(headers, name)?
        .map(|v| {
            tus::parse_size(v).ok_or_else(|| {
                AppError::BadRequest(format!("{name} must be a non-negative integer"))
            })
        })
        .transpose()
}

fn checksum_header(headers: &HeaderMap) -> Result<Option<Checksum>, AppError> {
    text(headers, "upload-checksum")?
        .map(|v| tus::parse_checksum(v).map_err(AppError::BadRequest))
        .transpose()
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(tus::OFFSET_OCTET_STREAM))
}

fn expiry_header(res: &mut HttpResponseBuilder, upload: &Upload) {
    if let (false, Some(at)) = (upload.complete, upload.expires_at) {
        res.insert_header((UPLOAD_EXPIRES, http_date(at)));
    }
}

/// `POST /files/`: creates an upload of `Upload-Length` bytes → 201 with `Location`; with a
/// `application/offset+octet-stream` body, its first bytes too (`creation-with-upload`).
#[utoipa::path(
    post,
    path = "/files/",
    tag = "tus",
    operation_id = "tus_create",
    params(Resumable, CreateHeaders),
    request_body(
        content = Option<Binary>,
        content_type = "application/offset+octet-stream",
        description = "Optional (`creation-with-upload`): the upload's first bytes, at most `Upload-Length`"
    ),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 201, description = "Created",
            headers(
                ("Location" = String, description = "`/files/{id}`"),
                ("Upload-Expires" = String, description = "When the unfinished upload expires (an HTTP date)"),
                ("Upload-Offset" = u64, description = "With a body: the bytes stored"),
            )),
        (status = 400, description = "`bad_request`: a missing or malformed `Upload-Length` or `Upload-Metadata`, `Upload-Defer-Length` or `Upload-Concat` (not supported), a bad `X-HTTP-Method-Override`", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled", body = ErrorBody),
        (status = 412, description = "`unsupported_tus_version`: no `Tus-Resumable: 1.0.0`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: `Upload-Length` over `Tus-Max-Size`, or a body longer than `Upload-Length`", body = ErrorBody),
        (status = 460, description = "`checksum_mismatch`: the body does not match `Upload-Checksum`; nothing appended", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the disk is full", body = ErrorBody),
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    services: web::Data<Services>,
) -> Result<HttpResponse, AppError> {
    let headers = req.headers();
    if headers.contains_key("upload-defer-length") {
        return Err(AppError::BadRequest(
            "Upload-Defer-Length is not supported: give Upload-Length".into(),
        ));
    }
    if headers.contains_key("upload-concat") {
        return Err(AppError::BadRequest(
            "Upload-Concat (concatenation) is not supported".into(),
        ));
    }
    let length = size_header(headers, UPLOAD_LENGTH)?
        .ok_or_else(|| AppError::BadRequest("Upload-Length is required".into()))?;
    let max = services.limits.max_upload_bytes;
    if length > max {
        return Err(AppError::PayloadTooLarge(format!(
            "Upload-Length is over the maximum of {max} bytes (Tus-Max-Size)"
        )));
    }
    let raw_metadata = text(headers, UPLOAD_METADATA)?;
    let metadata = raw_metadata
        .map(tus::parse_metadata)
        .transpose()
        .map_err(AppError::BadRequest)?
        .unwrap_or_default();
    let filename =
        sanitize_filename(tus::metadata_text(&metadata, &["filename", "name"]).unwrap_or_default());
    let content_type = tus::metadata_text(&metadata, &["filetype", "type", "contentType"])
        .and_then(|t| t.parse::<mime::Mime>().ok())
        .map_or_else(
            || mime::APPLICATION_OCTET_STREAM.essence_str().to_owned(),
            |m| m.essence_str().to_owned(),
        );
    let with_upload = is_offset_stream(headers);
    let checksum = if with_upload {
        checksum_header(headers)?
    } else {
        None
    };
    let file = FileInfo {
        id: UploadId::new(),
        filename,
        content_type,
        size: length,
    };
    let metadata = raw_metadata.filter(|m| !m.is_empty()).map(str::to_owned);
    let row = Upload::tus(file, metadata, services.limits.tus_expiry).owned_by(owner_of(&req));
    let mut upload = services.uploads.create_tus(row).await?;
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/files/{}", upload.id)));
    if with_upload {
        upload = append(&services, upload.id, 0, checksum, &req, payload).await?;
        res.insert_header((UPLOAD_OFFSET, upload.upload_offset.to_string()));
    }
    expiry_header(&mut res, &upload);
    Ok(res.finish())
}

/// `HEAD /files/{id}`: the durable offset (bytes all on disk), the length, the metadata.
/// A PATCH writing the upload (in this process, or on PostgreSQL in another replica) is
/// asked to stop first, so the offset answered covers every byte it had read (a client
/// resuming after a dropped link finds its bytes).
#[utoipa::path(
    head,
    path = "/files/{id}",
    tag = "tus",
    operation_id = "tus_head",
    params(FilePath, Resumable),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 200, description = "The upload's state (no body)",
            headers(
                ("Upload-Offset" = u64, description = "Bytes durably stored"),
                ("Upload-Length" = u64),
                ("Upload-Metadata" = String, description = "As sent at creation"),
                ("Upload-Expires" = String, description = "While unfinished (an HTTP date)"),
                ("Cache-Control" = String, description = "`no-store`"),
            )),
        (status = 404, description = "`not_found`: no upload with this id that this key may use"),
        (status = 410, description = "`gone`: the upload expired"),
        (status = 412, description = "`unsupported_tus_version`: no `Tus-Resumable: 1.0.0`"),
        (status = 423, description = "`upload_locked`: another process's PATCH holds it"),
        (status = 503, description = "`overloaded` or `database_unavailable`"),
    )
)]
pub async fn head(
    req: HttpRequest,
    services: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let access = access_of(&req);
    if services.uploads.is_held(id).await {
        // Before the hand-over: another key's HEAD must not interrupt its owner's PATCH.
        authorize(&services, access.as_ref(), id).await?;
        services.uploads.hand_over(id).await;
    }
    // Read after the check: a PATCH that ended just before it has recorded its offset.
    let upload = services.db.upload(id).await?;
    check_owner(access.as_ref(), &upload)?;
    if upload.is_expired(now()) {
        return Err(AppError::Gone("this upload has expired".into()));
    }
    let mut res = HttpResponse::Ok();
    res.insert_header((UPLOAD_OFFSET, upload.upload_offset.to_string()))
        .insert_header((UPLOAD_LENGTH, upload.size.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(metadata) = &upload.tus_metadata {
        res.insert_header((UPLOAD_METADATA, metadata.as_str()));
    }
    expiry_header(&mut res, &upload);
    Ok(res.finish())
}

/// `PATCH /files/{id}`: appends the body at `Upload-Offset` → 204 with the new offset.
/// A wrong offset is 409 with nothing written; a checksum mismatch is 460 with nothing
/// appended; a PATCH while another one writes this upload is 423.
#[utoipa::path(
    patch,
    path = "/files/{id}",
    tag = "tus",
    operation_id = "tus_patch",
    params(FilePath, Resumable, PatchHeaders),
    request_body(content = Binary, content_type = "application/offset+octet-stream",
        description = "The bytes from `Upload-Offset` on, at most up to `Upload-Length`"),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 204, description = "Appended",
            headers(
                ("Upload-Offset" = u64, description = "The new offset"),
                ("Upload-Expires" = String, description = "While unfinished (an HTTP date)"),
            )),
        (status = 400, description = "`bad_request`: a missing or malformed `Upload-Offset` or `Upload-Checksum`; or `upload_interrupted`: a newer request for this upload took it over (the bytes received are kept)", body = ErrorBody),
        (status = 404, description = "`not_found`: no upload with this id that this key may use", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled (what arrived is kept)", body = ErrorBody),
        (status = 409, description = "`offset_mismatch`: `Upload-Offset` is not the upload's offset; nothing written", body = ErrorBody),
        (status = 410, description = "`gone`: the upload expired", body = ErrorBody),
        (status = 412, description = "`unsupported_tus_version`: no `Tus-Resumable: 1.0.0`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body goes past `Upload-Length`; nothing appended", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/offset+octet-stream`", body = ErrorBody),
        (status = 423, description = "`upload_locked`: another process's PATCH holds it", body = ErrorBody),
        (status = 460, description = "`checksum_mismatch`: the body does not match `Upload-Checksum`; nothing appended", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many upload bodies streaming, or the database; `database_unavailable`: the database, or this replica's lock connection (PostgreSQL), is down", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the disk is full", body = ErrorBody),
    )
)]
pub async fn patch(
    req: HttpRequest,
    payload: web::Payload,
    services: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let headers = req.headers();
    if !is_offset_stream(headers) {
        return Err(AppError::UnsupportedMediaType(format!(
            "expected Content-Type: {}",
            tus::OFFSET_OCTET_STREAM
        )));
    }
    let offset = size_header(headers, UPLOAD_OFFSET)?
        .ok_or_else(|| AppError::BadRequest("Upload-Offset is required".into()))?;
    let checksum = checksum_header(headers)?;
    let id = parse_id(&id)?;
    let upload = append(&services, id, offset, checksum, &req, payload).await?;
    let mut res = HttpResponse::NoContent();
    res.insert_header((UPLOAD_OFFSET, upload.upload_offset.to_string()));
    expiry_header(&mut res, &upload);
    Ok(res.finish())
}

/// Appends `body` to upload `id` at `offset` in one upload session; answers the row as it
/// is afterwards. Refused (503) before the body is read when `TROUPE_MAX_ACTIVE_UPLOADS`
/// bodies stream already.
async fn append(
    services: &Services,
    id: UploadId,
    offset: u64,
    checksum: Option<Checksum>,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<Upload, AppError> {
    let declared = declared_length(req);
    let _admitted = services.uploads.admit()?;
    let mut session = services
        .uploads
        .begin_patch(id, offset, checksum, declared, access_of(req))
        .await?;
    session.receive_kept(body).await?;
    session.finish().await
}

/// `DELETE /files/{id}` (termination): the upload, finished or not, and its bytes → 204;
/// 423 while a PATCH writes it.
#[utoipa::path(
    delete,
    path = "/files/{id}",
    tag = "tus",
    operation_id = "tus_terminate",
    params(FilePath, Resumable),
    security(("bearer" = ["uploads:write"])),
    responses(
        (status = 204, description = "Terminated: the upload, finished or not, and its bytes"),
        (status = 404, description = "`not_found`: no upload with this id that this key may use", body = ErrorBody),
        (status = 412, description = "`unsupported_tus_version`: no `Tus-Resumable: 1.0.0`", body = ErrorBody),
        (status = 423, description = "`upload_locked`: another process's PATCH holds it", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn terminate(
    req: HttpRequest,
    services: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    authorize(&services, access_of(&req).as_ref(), id).await?;
    services.uploads.remove(id, true).await?;
    Ok(HttpResponse::NoContent().finish())
}
