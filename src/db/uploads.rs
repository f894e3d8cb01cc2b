//! Uploads: the metadata row of every stored file and of every tus upload, finished or not,
//! with its queries written once for both backends.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Serialize, Serializer};

use super::schema::uploads;
use super::{db_error, DbPool};
use crate::error::AppError;
use crate::with_conn;

/// One upload's row. Only complete uploads are answered under `/uploads`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = uploads)]
pub struct Upload {
    /// A UUID, also the stored file's name.
    pub id: String,
    /// The client's file name, sanitised (metadata only, never a path).
    pub filename: String,
    /// The media type the client gave, or `application/octet-stream`.
    pub content_type: String,
    /// The final size in bytes.
    pub size: i64,
    /// Bytes durably stored so far (equals `size` once complete).
    #[serde(skip)]
    pub upload_offset: i64,
    /// Lowercase hex SHA-256 of the content, once complete.
    pub sha256: Option<String>,
    /// Whether every byte is stored and the file is in place.
    #[serde(skip)]
    pub complete: bool,
    /// tus `Upload-Metadata` as sent, echoed on `HEAD`.
    #[serde(skip)]
    pub tus_metadata: Option<String>,
    /// When an unfinished tus upload expires.
    #[serde(skip)]
    pub expires_at: Option<NaiveDateTime>,
    /// When the upload was created (UTC).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the row last changed (UTC).
    #[serde(skip)]
    pub updated_at: NaiveDateTime,
}

/// Writes a UTC timestamp as RFC 3339 with a `Z`.
fn rfc3339<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&at.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// One page of complete uploads in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadPage {
    /// At most `limit` uploads with ids above `after`.
    pub uploads: Vec<Upload>,
    /// The `after` of the next page, or `null` on the last page.
    pub next_after: Option<String>,
}

/// Microseconds: what both backends keep, so a returned row equals a re-read one.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

fn upload_not_found(err: AppError) -> AppError {
    match err {
        AppError::NotFound(_) => AppError::NotFound("no upload with this id".into()),
        other => other,
    }
}

/// Inserts an upload's row.
pub async fn create(pool: &DbPool, row: Upload) -> Result<Upload, AppError> {
    with_conn!(pool, |conn| {
        diesel::insert_into(uploads::table)
            .values(&row)
            .returning(Upload::as_returning())
            .get_result(conn)
            .await
    })
    .map_err(db_error)
}

/// One upload by id, complete or not; 404 when there is none.
pub async fn get(pool: &DbPool, id: &str) -> Result<Upload, AppError> {
    with_conn!(pool, |conn| {
        uploads::table
            .find(id)
            .select(Upload::as_select())
            .first(conn)
            .await
    })
    .map_err(db_error)
    .map_err(upload_not_found)
}

/// Complete uploads with ids above `after`, in id order, at most `limit` of them.
pub async fn list(pool: &DbPool, limit: i64, after: &str) -> Result<UploadPage, AppError> {
    // One row past the page tells whether another page exists.
    let mut rows = with_conn!(pool, |conn| {
        uploads::table
            .filter(uploads::complete.eq(true))
            .filter(uploads::id.gt(after))
            .order(uploads::id.asc())
            .limit(limit + 1)
            .select(Upload::as_select())
            .load(conn)
            .await
    })
    .map_err(db_error)?;
    let next_after = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|u| u.id.clone())
    } else {
        None
    };
    Ok(UploadPage {
        uploads: rows,
        next_after,
    })
}

/// Deletes one upload's row; 404 when there is none.
pub async fn delete(pool: &DbPool, id: &str) -> Result<(), AppError> {
    let deleted = with_conn!(pool, |conn| {
        diesel::delete(uploads::table.find(id)).execute(conn).await
    })
    .map_err(db_error)?;
    if deleted == 0 {
        return Err(AppError::NotFound("no upload with this id".into()));
    }
    Ok(())
}

/// Moves an unfinished upload's offset from `from` to `to` and pushes its expiry to
/// `expires_at`; false when the row is gone, complete, or no longer at `from` (another
/// writer got there first), in which case nothing changes.
pub async fn advance(
    pool: &DbPool,
    id: &str,
    from: i64,
    to: i64,
    expires_at: NaiveDateTime,
) -> Result<bool, AppError> {
    let at = now();
    let changed = with_conn!(pool, |conn| {
        diesel::update(
            uploads::table
                .find(id)
                .filter(uploads::complete.eq(false))
                .filter(uploads::upload_offset.eq(from)),
        )
        .set((
            uploads::upload_offset.eq(to),
            uploads::expires_at.eq(Some(expires_at)),
            uploads::updated_at.eq(at),
        ))
        .execute(conn)
        .await
    })
    .map_err(db_error)?;
    Ok(changed == 1)
}

/// Marks an upload complete with its digest; it then appears under `/uploads`.
pub async fn complete(pool: &DbPool, id: &str, sha256: String) -> Result<Upload, AppError> {
    let at = now();
    with_conn!(pool, |conn| {
        diesel::update(uploads::table.find(id))
            .set((
                uploads::complete.eq(true),
                uploads::upload_offset.eq(uploads::size),
                uploads::sha256.eq(Some(sha256.clone())),
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

/// Ids of unfinished uploads whose expiry is before `before`, at most `limit` of them.
pub async fn expired(
    pool: &DbPool,
    before: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>, AppError> {
    with_conn!(pool, |conn| {
        uploads::table
            .filter(uploads::complete.eq(false))
            .filter(uploads::expires_at.lt(before))
            .order(uploads::expires_at.asc())
            .limit(limit)
            .select(uploads::id)
            .load(conn)
            .await
    })
    .map_err(db_error)
}

/// Ids of unfinished uploads whose every byte is stored: a crash came between the last
/// PATCH's offset and the upload's completion; they are finished, never expired.
pub async fn whole_unfinished(pool: &DbPool, limit: i64) -> Result<Vec<String>, AppError> {
    with_conn!(pool, |conn| {
        uploads::table
            .filter(uploads::complete.eq(false))
            .filter(uploads::upload_offset.eq(uploads::size))
            .order(uploads::id.asc())
            .limit(limit)
            .select(uploads::id)
            .load(conn)
            .await
    })
    .map_err(db_error)
}
