//! Uploads: the metadata row of every stored file and of every tus upload, finished or not,
//! its constructors and rules, and its queries, written once for both backends.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};

use super::page::{Page, PageRequest};
use super::schema::{upload_parts, uploads};
use super::{db_error, DbPool};
use crate::error::AppError;
use crate::ids::UploadId;
use crate::time::now;
use crate::with_conn;

/// One upload. Only complete uploads are answered under `/uploads`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = uploads)]
pub struct Upload {
    /// Also the stored file's name.
    #[diesel(deserialize_as = String)]
    pub id: UploadId,
    /// The client's file name, sanitised (metadata only, never a path).
    pub filename: String,
    /// The media type the client gave, or `application/octet-stream`.
    pub content_type: String,
    /// The final size in bytes.
    #[diesel(deserialize_as = i64)]
    pub size: u64,
    /// Bytes durably stored so far (equals `size` once complete).
    #[diesel(deserialize_as = i64)]
    pub upload_offset: u64,
    /// Lowercase hex SHA-256 of the content, once complete.
    pub sha256: Option<String>,
    /// Whether every byte is stored and the file is in place.
    pub complete: bool,
    /// tus `Upload-Metadata` as sent, echoed on `HEAD`.
    pub tus_metadata: Option<String>,
    /// When an unfinished tus upload expires.
    pub expires_at: Option<NaiveDateTime>,
    /// When the upload was created (UTC).
    pub created_at: NaiveDateTime,
    /// When the row last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// The name of the key that created it; `None` in open mode or before keys existed.
    pub owner: Option<String>,
    /// A tus upload's multipart upload on `s3://` storage, once its first part was due.
    pub multipart_id: Option<String>,
}

/// One page of complete uploads in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPage {
    /// At most `limit` uploads with ids above `after`.
    pub uploads: Vec<Upload>,
    /// The `after` of the next page (an id's text), or `None` on the last page.
    pub next_after: Option<String>,
}

/// What a client says about a file it uploads: its id, name and type (sanitised), and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The new upload's id.
    pub id: UploadId,
    /// The client's file name, sanitised.
    pub filename: String,
    /// The media type the client gave, or `application/octet-stream`.
    pub content_type: String,
    /// The size in bytes.
    pub size: u64,
}

impl Upload {
    /// A new row for `file`, created now, with nothing stored yet.
    fn new(file: FileInfo) -> Self {
        let at = now();
        Self {
            id: file.id,
            filename: file.filename,
            content_type: file.content_type,
            size: file.size,
            upload_offset: 0,
            sha256: None,
            complete: false,
            tus_metadata: None,
            expires_at: None,
            created_at: at,
            updated_at: at,
            owner: None,
            multipart_id: None,
        }
    }

    /// The same row, created by the key named `owner` (`None`: no key, open mode).
    pub fn owned_by(self, owner: Option<String>) -> Self {
        Self { owner, ..self }
    }

    /// A `POST /upload` file, complete: every byte written and digested.
    pub fn stored(file: FileInfo, sha256: String) -> Self {
        let row = Self::new(file);
        Self {
            upload_offset: row.size,
            sha256: Some(sha256),
            complete: true,
            ..row
        }
    }

    /// A new tus upload, none of its bytes written yet, living `expiry`.
    pub fn tus(file: FileInfo, tus_metadata: Option<String>, expiry: Duration) -> Self {
        let row = Self::new(file);
        Self {
            tus_metadata,
            expires_at: Some(expires_at(row.created_at, expiry)),
            ..row
        }
    }

    /// Whether an unfinished upload's expiry has passed (`at` is now).
    pub fn is_expired(&self, at: NaiveDateTime) -> bool {
        !self.complete && self.expires_at.is_some_and(|e| e < at)
    }

    /// Whether every byte is stored (complete, or about to be).
    pub fn is_whole(&self) -> bool {
        self.upload_offset == self.size
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.upload_offset)
    }
}

/// The expiry rule: an unfinished tus upload lives `expiry` past its creation or last write.
pub fn expires_at(at: NaiveDateTime, expiry: Duration) -> NaiveDateTime {
    at + chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::MAX)
}

fn upload_not_found(err: AppError) -> AppError {
    match err {
        AppError::NotFound(_) => AppError::no_upload(),
        other => other,
    }
}

/// A byte count as the database stores it.
fn db_size(n: u64) -> Result<i64, AppError> {
    i64::try_from(n).map_err(|_| AppError::internal("an upload size past i64", n))
}

/// Inserts an upload's row.
pub async fn create(pool: &DbPool, row: Upload) -> Result<Upload, AppError> {
    let values = (
        uploads::id.eq(row.id.to_string()),
        uploads::filename.eq(row.filename),
        uploads::content_type.eq(row.content_type),
        uploads::size.eq(db_size(row.size)?),
        uploads::upload_offset.eq(db_size(row.upload_offset)?),
        uploads::sha256.eq(row.sha256),
        uploads::complete.eq(row.complete),
        uploads::tus_metadata.eq(row.tus_metadata),
        uploads::expires_at.eq(row.expires_at),
        uploads::created_at.eq(row.created_at),
        uploads::updated_at.eq(row.updated_at),
        uploads::owner.eq(row.owner),
    );
    with_conn!(pool, write, |conn| {
        diesel::insert_into(uploads::table)
            .values(values)
            .returning(Upload::as_returning())
            .get_result(conn)
            .await
    })
    .map_err(db_error)
}

/// One upload by id, complete or not; 404 when there is none.
pub async fn get(pool: &DbPool, id: UploadId) -> Result<Upload, AppError> {
    let id = id.to_string();
    with_conn!(pool, read, |conn| {
        uploads::table
            .find(&id)
            .select(Upload::as_select())
            .first(conn)
            .await
    })
    .map_err(db_error)
    .map_err(upload_not_found)
}

/// A page of complete uploads in id order; with `owner`, only the uploads of that key.
pub async fn list(
    pool: &DbPool,
    page: PageRequest<String>,
    owner: Option<String>,
) -> Result<UploadPage, AppError> {
    let rows = with_conn!(pool, read, |conn| {
        let mut query = uploads::table
            .filter(uploads::complete.eq(true))
            .filter(uploads::id.gt(&page.after))
            .into_boxed();
        if let Some(owner) = &owner {
            query = query.filter(uploads::owner.eq(owner));
        }
        query
            .order(uploads::id.asc())
            .limit(page.rows_to_read())
            .select(Upload::as_select())
            .load(conn)
            .await
    })
    .map_err(db_error)?;
    let key = |u: &Upload| u.id.to_string();
    let Page { items, next_after } = Page::from_rows(rows, page.limit, key);
    Ok(UploadPage {
        uploads: items,
        next_after,
    })
}

/// Deletes one upload's row; 404 when there is none.
pub async fn delete(pool: &DbPool, id: UploadId) -> Result<(), AppError> {
    let id = id.to_string();
    let deleted = with_conn!(pool, write, |conn| {
        diesel::delete(uploads::table.find(&id)).execute(conn).await
    })
    .map_err(db_error)?;
    if deleted == 0 {
        return Err(AppError::no_upload());
    }
    Ok(())
}

/// A part of a tus upload's multipart upload (`s3://` storage), as S3 answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// 0-based: S3's part number is this + 1.
    pub index: u32,
    /// The part's ETag, needed to complete the upload.
    pub etag: String,
}

/// Moves an unfinished upload's offset from `from` to `to`, pushes its expiry to
/// `expires_at`, and records `parts` (`s3://` storage: the parts the new offset covers) in
/// the same transaction; false when the row is gone, complete, or no longer at `from`
/// (another writer got there first), in which case nothing changes.
pub async fn advance(
    pool: &DbPool,
    id: UploadId,
    (from, to): (u64, u64),
    expires_at: NaiveDateTime,
    parts: Vec<StoredPart>,
) -> Result<bool, AppError> {
    let (id, from, to, at) = (id.to_string(), db_size(from)?, db_size(to)?, now());
    let part_rows = parts
        .into_iter()
        .map(|part| {
            let index = i32::try_from(part.index)
                .map_err(|_| AppError::internal("a part index past i32", part.index))?;
            Ok((
                upload_parts::upload_id.eq(id.clone()),
                upload_parts::part_index.eq(index),
                upload_parts::etag.eq(part.etag),
            ))
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    let moved = diesel::update(
        uploads::table
            .find(&id)
            .filter(uploads::complete.eq(false))
            .filter(uploads::upload_offset.eq(from)),
    )
    .set((
        uploads::upload_offset.eq(to),
        uploads::expires_at.eq(Some(expires_at)),
        uploads::updated_at.eq(at),
    ));
    let changed = with_conn!(pool, write, |conn| {
        if part_rows.is_empty() {
            moved.execute(conn).await
        } else {
            conn.transaction(async |conn| {
                let changed = moved.execute(conn).await?;
                // One statement per part: SQLite takes no multi-row insert from diesel.
                for part in part_rows.iter().filter(|_| changed == 1) {
                    diesel::insert_into(upload_parts::table)
                        .values(part.clone())
                        .execute(conn)
                        .await?;
                }
                Ok(changed)
            })
            .await
        }
    })
    .map_err(db_error)?;
    Ok(changed == 1)
}

/// Records the multipart upload an unfinished tus upload's parts go to; false when the row
/// is gone, complete, or has one already (nothing changes then).
pub async fn begin_multipart(
    pool: &DbPool,
    id: UploadId,
    multipart_id: String,
) -> Result<bool, AppError> {
    let (id, at) = (id.to_string(), now());
    let changed = with_conn!(pool, write, |conn| {
        diesel::update(
            uploads::table
                .find(&id)
                .filter(uploads::complete.eq(false))
                .filter(uploads::multipart_id.is_null()),
        )
        .set((
            uploads::multipart_id.eq(Some(&multipart_id)),
            uploads::updated_at.eq(at),
        ))
        .execute(conn)
        .await
    })
    .map_err(db_error)?;
    Ok(changed == 1)
}

/// The ETags of a tus upload's recorded parts (`s3://` storage), part 0 first.
pub async fn parts(pool: &DbPool, id: UploadId) -> Result<Vec<String>, AppError> {
    let id = id.to_string();
    let parts = with_conn!(pool, read, |conn| {
        upload_parts::table
            .filter(upload_parts::upload_id.eq(&id))
            .order(upload_parts::part_index.asc())
            .select((upload_parts::part_index, upload_parts::etag))
            .load::<(i32, String)>(conn)
            .await
    })
    .map_err(db_error)?;
    // Recorded in order, each with the offset covering it: a gap is a bug, not a state.
    if parts
        .iter()
        .enumerate()
        .any(|(n, (index, _))| *index as usize != n)
    {
        return Err(AppError::internal(
            "reading a tus upload's parts",
            format_args!("upload {id} has a gap in its recorded parts"),
        ));
    }
    Ok(parts.into_iter().map(|(_, etag)| etag).collect())
}

/// Marks an upload complete with its digest; it then appears under `/uploads`.
pub async fn complete(pool: &DbPool, id: UploadId, sha256: String) -> Result<Upload, AppError> {
    let (id, at) = (id.to_string(), now());
    with_conn!(pool, write, |conn| {
        diesel::update(uploads::table.find(&id))
            .set((
                uploads::complete.eq(true),
                uploads::upload_offset.eq(uploads::size),
                uploads::sha256.eq(Some(sha256)),
                uploads::expires_at.eq(None::<NaiveDateTime>),
                uploads::updated_at.eq(at),
            ))
            .returning(Upload::as_returning())
            .get_result(conn)
            .await
    })
    .map_err(db_error)
    .map_err(upload_not_found)
}

/// The ids in `rows`; a row whose id is not one (written by hand, say) is skipped, loudly.
fn ids(rows: Vec<String>) -> Vec<UploadId> {
    rows.into_iter()
        .filter_map(|raw| match raw.parse() {
            Ok(id) => Some(id),
            Err(err) => {
                log::warn!("skipping an upload row: {err}");
                None
            }
        })
        .collect()
}

/// Ids of unfinished uploads whose expiry is before `before`, at most `limit` of them.
pub async fn expired(
    pool: &DbPool,
    before: NaiveDateTime,
    limit: i64,
) -> Result<Vec<UploadId>, AppError> {
    with_conn!(pool, read, |conn| {
        uploads::table
            .filter(uploads::complete.eq(false))
            .filter(uploads::expires_at.lt(before))
            .order(uploads::expires_at.asc())
            .limit(limit)
            .select(uploads::id)
            .load(conn)
            .await
    })
    .map(ids)
    .map_err(db_error)
}

/// Ids of unfinished uploads whose every byte is stored: a crash came between the last
/// PATCH's offset and the upload's completion; they are finished, never expired.
pub async fn whole_unfinished(pool: &DbPool, limit: i64) -> Result<Vec<UploadId>, AppError> {
    with_conn!(pool, read, |conn| {
        uploads::table
            .filter(uploads::complete.eq(false))
            .filter(uploads::upload_offset.eq(uploads::size))
            .order(uploads::id.asc())
            .limit(limit)
            .select(uploads::id)
            .load(conn)
            .await
    })
    .map(ids)
    .map_err(db_error)
}
