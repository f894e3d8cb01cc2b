//! Users: the model and its queries, each written once for both backends.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Serialize, Serializer};

use super::schema::users;
use super::{db_error, DbPool};
use crate::error::AppError;
use crate::with_conn;

/// A user as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = users)]
pub struct User {
    /// Assigned by the database, never reused.
    pub id: i64,
    /// 1..=200 characters, trimmed.
    pub name: String,
    /// Unique regardless of case.
    pub email: String,
    /// When the user was created (UTC).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the user last changed (UTC).
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

/// Writes a UTC timestamp as RFC 3339 with a `Z`.
fn rfc3339<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&at.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// A validated new user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Trimmed, 1..=200 characters.
    pub name: String,
    /// Trimmed, syntactically valid, ≤ 254 characters.
    pub email: String,
}

/// A validated partial update: at least one field is set.
#[derive(Debug, Clone, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    /// The new name, if it changes.
    pub name: Option<String>,
    /// The new email, if it changes.
    pub email: Option<String>,
}

/// One page of users in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPage {
    /// At most `limit` users with ids above `after`.
    pub users: Vec<User>,
    /// The `after` of the next page, or `null` on the last page.
    pub next_after: Option<i64>,
}

/// Microseconds: what both backends keep, so a returned row equals a re-read one.
fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

fn email_taken(err: AppError) -> AppError {
    match err {
        AppError::Conflict(_) => AppError::Conflict("this email is already taken".into()),
        other => other,
    }
}

fn user_not_found(err: AppError) -> AppError {
    match err {
        AppError::NotFound(_) => AppError::NotFound("no user with this id".into()),
        other => other,
    }
}

/// Inserts a user; 409 when the email is taken (any case).
pub async fn create(pool: &DbPool, new: NewUser) -> Result<User, AppError> {
    let at = now();
    let row = (
        users::name.eq(new.name),
        users::email.eq(new.email),
        users::created_at.eq(at),
        users::updated_at.eq(at),
    );
    with_conn!(pool, |conn| {
        diesel::insert_into(users::table)
            .values(row)
            .returning(User::as_returning())
            .get_result(conn)
            .await
    })
    .map_err(db_error)
    .map_err(email_taken)
}

/// One user by id; 404 when there is none.
pub async fn get(pool: &DbPool, id: i64) -> Result<User, AppError> {
    with_conn!(pool, |conn| {
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .await
    })
    .map_err(db_error)
    .map_err(user_not_found)
}

/// Users with ids above `after`, in id order, at most `limit` of them.
pub async fn list(pool: &DbPool, limit: i64, after: i64) -> Result<UserPage, AppError> {
    // One row past the page tells whether another page exists.
    let mut users = with_conn!(pool, |conn| {
        users::table
            .filter(users::id.gt(after))
            .order(users::id.asc())
            .limit(limit + 1)
            .select(User::as_select())
            .load(conn)
            .await
    })
    .map_err(db_error)?;
    let next_after = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|u| u.id)
    } else {
        None
    };
    Ok(UserPage { users, next_after })
}

/// Applies `changes` to one user; 404 when there is none, 409 when the email is taken.
pub async fn update(pool: &DbPool, id: i64, changes: UserChanges) -> Result<User, AppError> {
    let at = now();
    with_conn!(pool, |conn| {
        diesel::update(users::table.find(id))
            .set((&changes, users::updated_at.eq(at)))
            .returning(User::as_returning())
            .get_result(conn)
            .await
    })
    .map_err(db_error)
    .map_err(email_taken)
    .map_err(user_not_found)
}

/// Deletes one user; 404 when there is none.
pub async fn delete(pool: &DbPool, id: i64) -> Result<(), AppError> {
    let deleted = with_conn!(pool, |conn| {
        diesel::delete(users::table.find(id)).execute(conn).await
    })
    .map_err(db_error)?;
    if deleted == 0 {
        return Err(AppError::NotFound("no user with this id".into()));
    }
    Ok(())
}
