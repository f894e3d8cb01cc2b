//! Users: the model, its parsing from client input, and its queries, each written once for
//! both backends.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::page::{Page, PageRequest};
use super::schema::users;
use super::{db_error, DbPool};
use crate::error::{AppError, FieldError};
use crate::ids::UserId;
use crate::time::now;
use crate::with_conn;

/// Longest name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    /// Assigned by the database, never reused.
    #[diesel(deserialize_as = i64)]
    pub id: UserId,
    /// 1..=200 characters, trimmed.
    pub name: String,
    /// Unique regardless of case.
    pub email: String,
    /// When the user was created (UTC).
    pub created_at: NaiveDateTime,
    /// When the user last changed (UTC).
    pub updated_at: NaiveDateTime,
}

/// One page of users in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// At most `limit` users with ids above `after`.
    pub users: Vec<User>,
    /// The `after` of the next page, or `None` on the last page.
    pub next_after: Option<UserId>,
}

/// A valid new user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Trimmed, 1..=200 characters.
    pub name: String,
    /// Trimmed, syntactically valid, ≤ 254 characters.
    pub email: String,
}

impl NewUser {
    /// A new user from what a client sent: both fields required, each valid; every invalid
    /// field is named in one 422.
    pub fn parse(name: Option<String>, email: Option<String>) -> Result<Self, AppError> {
        let mut fields = Vec::new();
        let name = required("name", name, &mut fields).and_then(|n| check_name(&n, &mut fields));
        let email =
            required("email", email, &mut fields).and_then(|e| check_email(&e, &mut fields));
        match (name, email, fields.is_empty()) {
            (Some(name), Some(email), true) => Ok(Self { name, email }),
            _ => Err(AppError::Validation(fields)),
        }
    }
}

/// A valid partial update: at least one field is set.
#[derive(Debug, Clone, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    /// The new name, if it changes.
    pub name: Option<String>,
    /// The new email, if it changes.
    pub email: Option<String>,
}

impl UserChanges {
    /// Changes from what a client sent: at least one field, each valid.
    pub fn parse(name: Option<String>, email: Option<String>) -> Result<Self, AppError> {
        let mut fields = Vec::new();
        if name.is_none() && email.is_none() {
            fields.push(FieldError::new("body", "give at least one of name, email"));
        }
        let changes = Self {
            name: name.and_then(|n| check_name(&n, &mut fields)),
            email: email.and_then(|e| check_email(&e, &mut fields)),
        };
        if !fields.is_empty() {
            return Err(AppError::Validation(fields));
        }
        Ok(changes)
    }
}

fn required(field: &str, value: Option<String>, fields: &mut Vec<FieldError>) -> Option<String> {
    if value.is_none() {
        fields.push(FieldError::new(field, "is required"));
    }
    value
}

/// The trimmed value of `field`, or `None` with its problem noted in `fields`.
fn checked(
    field: &str,
    value: &str,
    problem: impl Fn(&str) -> Option<String>,
    fields: &mut Vec<FieldError>,
) -> Option<String> {
    let value = value.trim();
    match problem(value) {
        Some(message) => {
            fields.push(FieldError::new(field, message));
            None
        }
        None => Some(value.to_owned()),
    }
}

/// A name: trimmed, 1..=200 characters, no control characters.
fn check_name(name: &str, fields: &mut Vec<FieldError>) -> Option<String> {
    let problem = |name: &str| {
        let chars = name.chars().count();
        if chars == 0 {
            Some("must not be empty".to_owned())
        } else if chars > MAX_NAME_CHARS {
            Some(format!("must be at most {MAX_NAME_CHARS} characters"))
        } else if name.chars().any(char::is_control) {
            Some("must not contain control characters".to_owned())
        } else {
            None
        }
    };
    checked("name", name, problem, fields)
}

/// An email: trimmed, at most 254 characters, `local@domain` where the local part is 1..=64
/// printable non-space characters without `@`, and the domain is dot-separated labels of
/// letters, digits and inner hyphens, with at least one dot.
fn check_email(email: &str, fields: &mut Vec<FieldError>) -> Option<String> {
    let problem = |email: &str| {
        if email.chars().count() > MAX_EMAIL_CHARS {
            Some(format!("must be at most {MAX_EMAIL_CHARS} characters"))
        } else if !is_valid_email(email) {
            Some("must be a valid email address".to_owned())
        } else {
            None
        }
    };
    checked("email", email, problem, fields)
}

fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && c != '@' && c != '"' && c != '\\' && c != ','
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

fn email_taken(err: AppError) -> AppError {
    match err {
        AppError::Conflict(_) => AppError::Conflict("this email is already taken".into()),
        other => other,
    }
}

fn user_not_found(err: AppError) -> AppError {
    match err {
        AppError::NotFound(_) => AppError::no_user(),
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
    with_conn!(pool, write, |conn| {
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
pub async fn get(pool: &DbPool, id: UserId) -> Result<User, AppError> {
    with_conn!(pool, read, |conn| {
        users::table
            .find(id.get())
            .select(User::as_select())
            .first(conn)
            .await
    })
    .map_err(db_error)
    .map_err(user_not_found)
}

/// A page of users in id order.
pub async fn list(pool: &DbPool, page: PageRequest<UserId>) -> Result<UserPage, AppError> {
    let rows = with_conn!(pool, read, |conn| {
        users::table
            .filter(users::id.gt(page.after.get()))
            .order(users::id.asc())
            .limit(page.rows_to_read())
            .select(User::as_select())
            .load(conn)
            .await
    })
    .map_err(db_error)?;
    let Page { items, next_after } = Page::from_rows(rows, page.limit, |u: &User| u.id);
    Ok(UserPage {
        users: items,
        next_after,
    })
}

/// Applies `changes` to one user; 404 when there is none, 409 when the email is taken.
pub async fn update(pool: &DbPool, id: UserId, changes: UserChanges) -> Result<User, AppError> {
    let at = now();
    with_conn!(pool, write, |conn| {
        diesel::update(users::table.find(id.get()))
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
pub async fn delete(pool: &DbPool, id: UserId) -> Result<(), AppError> {
    let deleted = with_conn!(pool, write, |conn| {
        diesel::delete(users::table.find(id.get()))
            .execute(conn)
            .await
    })
    .map_err(db_error)?;
    if deleted == 0 {
        return Err(AppError::no_user());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email_ok(e: &str) -> bool {
        check_email(e, &mut Vec::new()).is_some()
    }

    #[test]
    fn emails_accepted_and_refused() {
        for good in [
            "a@b.co",
            "first.last+tag@example.com",
            " spaced@example.org ",
        ] {
            assert!(email_ok(good), "{good}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a b@c.de", "a@@b.co", "a@-b.co", ".a@b.co",
            "a@b..co",
        ] {
            assert!(!email_ok(bad), "{bad}");
        }
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        assert!(!email_ok(&long));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let mut fields = Vec::new();
        assert_eq!(check_name("  Ada  ", &mut fields).as_deref(), Some("Ada"));
        assert!(check_name("   ", &mut fields).is_none());
        assert!(check_name(&"x".repeat(201), &mut fields).is_none());
        assert_eq!(
            check_name(&"é".repeat(200), &mut Vec::new()).map(|n| n.chars().count()),
            Some(200)
        );
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn a_new_user_names_every_invalid_field_at_once() {
        let Err(AppError::Validation(fields)) = NewUser::parse(None, Some("nope".into())) else {
            panic!("expected a 422");
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["name", "email"]);
        assert!(UserChanges::parse(None, None).is_err());
        assert_eq!(
            NewUser::parse(Some(" Ada ".into()), Some("ada@example.com".into())).unwrap(),
            NewUser {
                name: "Ada".into(),
                email: "ada@example.com".into()
            }
        );
    }
}
