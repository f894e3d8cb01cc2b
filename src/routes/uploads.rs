//! `POST /upload` (seed) and `/uploads`: handlers parse and validate, stream bodies to
//! `UploadActor`, and read metadata through `DbActor`.

use actix_files::NamedFile;
use actix_web::http::header::{
    self, ContentDisposition, ContentEncoding, DispositionParam, DispositionType, ExtendedValue,
    HeaderValue,
};
use actix_web::{mime, web, HttpRequest, HttpResponse};
use futures::StreamExt as _;
use serde::Deserialize;
use uuid::Uuid;

use crate::actors::db::{GetUpload, ListUploads};
use crate::actors::supervise::ask;
use crate::actors::upload::{stream_into, CreateFile, FinishFile, RemoveUpload, SessionGuard};
use crate::actors::Actors;
use crate::cpu::{hex, Algorithm, Hasher};
use crate::db::uploads::{now, Upload};
use crate::error::{AppError, FieldError};
use crate::upload::multipart::{form_data_type, Boundary, MultipartReader, PartBody, PartHeaders};
use crate::upload::{ascii_filename, sanitize_filename};

/// Most parts a `POST /upload` body may have (the `file` part and a few plain fields).
pub const MAX_PARTS: usize = 16;
/// Largest plain (non-file) field, in bytes; such fields are read and dropped.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Room for multipart framing and small fields on top of `TROUPE_MAX_UPLOAD_BYTES`, when a
/// body's `Content-Length` is judged before reading it.
const FRAMING_SLACK: u64 = MAX_PARTS as u64 * MAX_FIELD_BYTES as u64;
/// Default page size of `GET /uploads`.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size of `GET /uploads`.
pub const MAX_LIMIT: i64 = 1000;
/// What a file's type is when the client gave none (or a malformed one).
const OCTET_STREAM: &str = "application/octet-stream";

/// `POST /upload`: `multipart/form-data` with one field `file`, streamed to disk → 201.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    actors: web::Data<Actors>,
) -> Result<HttpResponse, AppError> {
    let form_data = form_data_type(req.headers().get(header::CONTENT_TYPE))?;
    let max = actors.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max.saturating_add(FRAMING_SLACK)) {
        return Err(too_large(max));
    }

    let boundary = Boundary::of(&form_data)?;

    let mut form = MultipartReader::new(&boundary, payload);
    let mut stored: Option<Stored> = None;
    let mut parts = 0;
    while let Some(part) = form.next_part().await? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(AppError::BadRequest(format!(
                "the form has more than {MAX_PARTS} parts"
            )));
        }
        if part.name == "file" {
            if stored.is_some() {
                return Err(AppError::BadRequest(
                    "the form has more than one `file` field".into(),
                ));
            }
            stored = Some(store_file(&actors, &mut form, part, max).await?);
        } else {
            skip_field(form.part_body()).await?;
        }
    }
    let Some(stored) = stored else {
        return Err(AppError::Validation(vec![FieldError::new(
            "file",
            "a multipart field named `file` is required",
        )]));
    };
    let Stored {
        guard,
        session,
        row,
    } = stored;
    let upload = ask(&actors.upload, FinishFile { session, row }, FINISH_TIMEOUT).await;
    // Finished, or failed inside the actor, which then removed the file itself.
    guard.disarm();
    let upload = upload?;
    let mut body = serde_json::to_value(&upload)
        .map_err(|e| AppError::Internal(format!("upload metadata: {e}")))?;
    body["status"] = "uploaded".into();
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/uploads/{}", upload.id)))
        .json(body))
}

/// How long creating the temp file may take: under heavy write-back a disk's metadata
/// operations can stall for seconds, which is slow, not overloaded.
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the last step of an upload (fsync, rename, row) may take.
const FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A file part written to a temp file, waiting for the rest of the form.
struct Stored {
    guard: SessionGuard,
    session: Uuid,
    row: Upload,
}

/// Streams the current part (the `file` field) into a new temp file, hashing it on the way.
async fn store_file(
    actors: &Actors,
    form: &mut MultipartReader<web::Payload>,
    part: PartHeaders,
    max: u64,
) -> Result<Stored, AppError> {
    let filename = sanitize_filename(part.filename.as_deref().unwrap_or_default());
    let content_type = part
        .content_type
        .map_or_else(|| OCTET_STREAM.to_owned(), |m| m.essence_str().to_owned());
    let id = Uuid::new_v4();
    let session = Uuid::new_v4();
    let guard = SessionGuard::new(actors.upload.clone(), session, false);
    ask(&actors.upload, CreateFile { session, id }, STEP_TIMEOUT).await?;
    let streamed = stream_into(
        &actors.upload,
        &actors.cpu,
        &actors.pace,
        session,
        form.part_body(),
        max,
        Some(Box::new(Hasher::new(Algorithm::Sha256))),
    )
    .await;
    // stream_into keeps only the text of an error the body gave; the reader has the error.
    let (size, hasher) = streamed.map_err(|err| form.failure().cloned().unwrap_or(err))?;
    let sha256 = hasher
        .map(|h| hex(&h.finish()))
        .ok_or_else(|| AppError::Internal("upload digest missing".into()))?;
    let at = now();
    let row = Upload {
        id: id.to_string(),
        filename,
        content_type,
        size: size as i64,
        upload_offset: size as i64,
        sha256: Some(sha256),
        complete: true,
        tus_metadata: None,
        expires_at: None,
        created_at: at,
        updated_at: at,
    };
    Ok(Stored {
        guard,
        session,
        row,
    })
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

fn too_large(max: u64) -> AppError {
    AppError::PayloadTooLarge(format!("the upload is over its limit of {max} bytes"))
}

/// `GET /uploads` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /uploads?limit=N&after=ID`: complete uploads in id order.
pub async fn list(
    actors: web::Data<Actors>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let after = query.after.unwrap_or_default();
    let page = ask(&actors.db, ListUploads { limit, after }, actors.db_timeout).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The id in a path; one that is not a UUID names no upload.
pub fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound("no upload with this id".into()))
}

async fn complete_upload(actors: &Actors, id: &Uuid) -> Result<Upload, AppError> {
    let upload = ask(&actors.db, GetUpload(id.to_string()), actors.db_timeout).await?;
    if !upload.complete {
        return Err(AppError::NotFound("no upload with this id".into()));
    }
    Ok(upload)
}

/// `GET /uploads/{id}`: one complete upload's metadata.
pub async fn get(
    actors: web::Data<Actors>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let upload = complete_upload(&actors, &id).await?;
    Ok(HttpResponse::Ok().json(upload))
}

/// `GET /uploads/{id}/content`: the bytes, streamed from disk, as an attachment; single
/// ranges → 206, unsatisfiable → 416 (actix-files), conditional requests by ETag.
pub async fn content(
    req: HttpRequest,
    actors: web::Data<Actors>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let upload = complete_upload(&actors, &id).await?;
    let path = actors.store.file_path(&id);
    let file = web::block(move || NamedFile::open(path))
        .await
        .map_err(|e| AppError::Internal(format!("file task failed: {e}")))?
        .map_err(|e| {
            log::error!("upload {id} has a row but its file cannot be opened: {e}");
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
        // Stored bytes go out as they are: compressing would break byte ranges.
        .set_content_encoding(ContentEncoding::Identity)
        .use_etag(true)
        .use_last_modified(true)
        .into_response(&req);
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
    Ok(res)
}

/// `DELETE /uploads/{id}` → 204.
pub async fn delete(
    actors: web::Data<Actors>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    remove(&actors, &id, false).await
}

/// Removes an upload's row and bytes through `UploadActor` → 204; `tus` says which route
/// asks (`DELETE /files/{id}` may end an unfinished upload, 423 while a PATCH writes it).
pub async fn remove(actors: &Actors, id: &str, tus: bool) -> Result<HttpResponse, AppError> {
    let id = parse_id(id)?;
    ask(
        &actors.upload,
        RemoveUpload { id, tus },
        actors.db_timeout * 2,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
