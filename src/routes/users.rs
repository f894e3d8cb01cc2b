//! `/users`: handlers parse the request, ask the `Db` handle, and shape the answer.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::Each;

use crate::db::page::{parse_limit, PageRequest};
use crate::db::users::{NewUser, User, UserChanges, UserPage};
use crate::error::{AppError, FieldError};
use crate::ids::UserId;
use crate::services::Services;
use crate::time::Rfc3339;

/// `GET /users` query (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "super::param::limit")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "super::param::after")]
    after: Option<i64>,
}

/// `POST /users` body; `PATCH /users/{id}` body (any of the fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    name: Option<String>,
    email: Option<String>,
}

/// A user as the API shows it.
#[derive(Serialize)]
struct UserAnswer<'a> {
    id: UserId,
    name: &'a str,
    email: &'a str,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

impl<'a> From<&'a User> for UserAnswer<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: user.id,
            name: &user.name,
            email: &user.email,
            created_at: Rfc3339(user.created_at),
            updated_at: Rfc3339(user.updated_at),
        }
    }
}

/// A page of users as the API shows it.
#[derive(Serialize)]
struct PageAnswer<'a> {
    users: Each<'a, User, UserAnswer<'a>>,
    next_after: Option<UserId>,
}

impl<'a> From<&'a UserPage> for PageAnswer<'a> {
    fn from(page: &'a UserPage) -> Self {
        Self {
            users: Each::new(&page.users),
            next_after: page.next_after,
        }
    }
}

/// `GET /users?limit=N&after=ID`.
pub async fn list(
    services: web::Data<Services>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let mut fields = Vec::new();
    let limit = parse_limit(query.limit).map_err(|f| fields.push(f)).ok();
    let after = query.after.unwrap_or(0);
    if after < 0 {
        fields.push(FieldError::new("after", "must not be negative"));
    }
    let (Some(limit), true) = (limit, fields.is_empty()) else {
        return Err(AppError::Validation(fields));
    };
    let page = services
        .db
        .users(PageRequest {
            limit,
            after: UserId(after),
        })
        .await?;
    Ok(HttpResponse::Ok().json(PageAnswer::from(&page)))
}

/// `POST /users` → 201 with `Location`.
pub async fn create(
    services: web::Data<Services>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, AppError> {
    let UserBody { name, email } = body.into_inner();
    let user = services
        .db
        .create_user(NewUser::parse(name, email)?)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(UserAnswer::from(&user)))
}

/// `GET /users/{id}`.
pub async fn get(
    services: web::Data<Services>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let user = services.db.user(UserId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(UserAnswer::from(&user)))
}

/// `PATCH /users/{id}`.
pub async fn update(
    services: web::Data<Services>,
    id: web::Path<i64>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, AppError> {
    let UserBody { name, email } = body.into_inner();
    let changes = UserChanges::parse(name, email)?;
    let user = services
        .db
        .update_user(UserId(id.into_inner()), changes)
        .await?;
    Ok(HttpResponse::Ok().json(UserAnswer::from(&user)))
}

/// `DELETE /users/{id}` → 204.
pub async fn delete(
    services: web::Data<Services>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    services.db.delete_user(UserId(id.into_inner())).await?;
    Ok(HttpResponse::NoContent().finish())
}
