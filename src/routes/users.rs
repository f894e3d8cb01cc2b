//! `/users`: handlers parse and validate, then ask `DbActor`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::actors::db::{CreateUser, DeleteUser, GetUser, ListUsers, UpdateUser};
use crate::actors::supervise::ask;
use crate::actors::Actors;
use crate::db::users::{NewUser, UserChanges};
use crate::error::{AppError, FieldError};

/// Default page size of `GET /users`.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size of `GET /users`.
pub const MAX_LIMIT: i64 = 1000;
/// Longest name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// `GET /users` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    after: Option<i64>,
}

/// `POST /users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: Option<String>,
    email: Option<String>,
}

/// `PATCH /users/{id}` body: any of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    name: Option<String>,
    email: Option<String>,
}

/// `GET /users?limit=N&after=ID`.
pub async fn list(
    actors: web::Data<Actors>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let after = query.after.unwrap_or(0);
    let mut fields = Vec::new();
    if !(1..=MAX_LIMIT).contains(&limit) {
        fields.push(FieldError::new(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    if after < 0 {
        fields.push(FieldError::new("after", "must not be negative"));
    }
    if !fields.is_empty() {
        return Err(AppError::Validation(fields));
    }
    let page = ask(&actors.db, ListUsers { limit, after }, actors.db_timeout).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `POST /users` → 201 with `Location`.
pub async fn create(
    actors: web::Data<Actors>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let mut fields = Vec::new();
    let name = required("name", body.name, &mut fields).and_then(|n| check_name(&n, &mut fields));
    let email =
        required("email", body.email, &mut fields).and_then(|e| check_email(&e, &mut fields));
    let (Some(name), Some(email), true) = (name, email, fields.is_empty()) else {
        return Err(AppError::Validation(fields));
    };
    let user = ask(
        &actors.db,
        CreateUser(NewUser { name, email }),
        actors.db_timeout,
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(user))
}

/// `GET /users/{id}`.
pub async fn get(actors: web::Data<Actors>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let user = ask(&actors.db, GetUser(id.into_inner()), actors.db_timeout).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// `PATCH /users/{id}`.
pub async fn update(
    actors: web::Data<Actors>,
    id: web::Path<i64>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let mut fields = Vec::new();
    if body.name.is_none() && body.email.is_none() {
        fields.push(FieldError::new("body", "give at least one of name, email"));
    }
    let changes = UserChanges {
        name: body.name.and_then(|n| check_name(&n, &mut fields)),
        email: body.email.and_then(|e| check_email(&e, &mut fields)),
    };
    if !fields.is_empty() {
        return Err(AppError::Validation(fields));
    }
    let msg = UpdateUser {
        id: id.into_inner(),
        changes,
    };
    let user = ask(&actors.db, msg, actors.db_timeout).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// `DELETE /users/{id}` → 204.
pub async fn delete(
    actors: web::Data<Actors>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(&actors.db, DeleteUser(id.into_inner()), actors.db_timeout).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn required(field: &str, value: Option<String>, fields: &mut Vec<FieldError>) -> Option<String> {
    if value.is_none() {
        fields.push(FieldError::new(field, "is required"));
    }
    value
}

/// A name: trimmed, 1..=200 characters, no control characters.
pub fn check_name(name: &str, fields: &mut Vec<FieldError>) -> Option<String> {
    let name = name.trim();
    let chars = name.chars().count();
    let problem = if chars == 0 {
        Some("must not be empty".to_owned())
    } else if chars > MAX_NAME_CHARS {
        Some(format!("must be at most {MAX_NAME_CHARS} characters"))
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => {
            fields.push(FieldError::new("name", message));
            None
        }
        None => Some(name.to_owned()),
    }
}

/// An email: trimmed, at most 254 characters, `local@domain` where the local part is 1..=64
/// printable non-space characters without `@`, and the domain is dot-separated labels of
/// letters, digits and inner hyphens, with at least one dot.
pub fn check_email(email: &str, fields: &mut Vec<FieldError>) -> Option<String> {
    let email = email.trim();
    let problem = if email.chars().count() > MAX_EMAIL_CHARS {
        Some(format!("must be at most {MAX_EMAIL_CHARS} characters"))
    } else if !is_valid_email(email) {
        Some("must be a valid email address".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => {
            fields.push(FieldError::new("email", message));
            None
        }
        None => Some(email.to_owned()),
    }
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
}
