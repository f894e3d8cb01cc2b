//! `DbActor`: every database operation (users, upload metadata), as a message, on its own
//! arbiter.
//!
//! Handlers return a `ResponseFuture`, so queries run concurrently up to the pool's size;
//! the actor's own thread only starts them. An admission limit caps the queries waiting
//! for a connection, so a burst answers 503 instead of queueing without bound.

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;
use chrono::NaiveDateTime;

use super::supervise::{respond, InFlight};
use crate::db::uploads::{self, Upload, UploadPage};
use crate::db::users::{self, NewUser, User, UserChanges, UserPage};
use crate::db::DbPool;
use crate::error::AppError;

/// Owns the pool; restarted by its `Supervisor` after a panic.
pub struct DbActor {
    pool: DbPool,
    in_flight: Rc<Cell<usize>>,
    max_in_flight: usize,
}

impl DbActor {
    /// An actor over `pool` admitting at most `max_in_flight` queries at once.
    pub fn new(pool: DbPool, max_in_flight: usize) -> Self {
        Self {
            pool,
            in_flight: Rc::new(Cell::new(0)),
            max_in_flight,
        }
    }

    /// Runs `query` with the pool if there is room, counting it while it runs.
    fn run<T, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        query: impl FnOnce(DbPool) -> Fut,
    ) -> ResponseFuture<Result<T, AppError>>
    where
        T: 'static,
        Fut: std::future::Future<Output = Result<T, AppError>> + 'static,
    {
        respond(self, ctx, |this| {
            let admitted = InFlight::admit(&this.in_flight, this.max_in_flight)
                .map(|slot| (slot, query(this.pool.clone())));
            async move {
                let Some((_slot, fut)) = admitted else {
                    return Err(AppError::Overloaded(
                        "too many database requests waiting".into(),
                    ));
                };
                fut.await
            }
        })
    }
}

impl Actor for DbActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for DbActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        log::warn!("DbActor restarting");
        self.in_flight = Rc::new(Cell::new(0));
    }
}

/// Inserts a user.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct CreateUser(pub NewUser);

/// Reads one user by id.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct GetUser(pub i64);

/// Reads a page of users in id order.
#[derive(Debug, Message)]
#[rtype(result = "Result<UserPage, AppError>")]
pub struct ListUsers {
    /// At most this many users.
    pub limit: i64,
    /// Only ids above this one.
    pub after: i64,
}

/// Changes some fields of one user.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct UpdateUser {
    /// The user to change.
    pub id: i64,
    /// What to change.
    pub changes: UserChanges,
}

/// Deletes one user.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteUser(pub i64);

/// Checks that the database answers a query.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct CheckDatabase;

impl Handler<CreateUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: CreateUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::create(&pool, msg.0).await })
    }
}

impl Handler<GetUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: GetUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::get(&pool, msg.0).await })
    }
}

impl Handler<ListUsers> for DbActor {
    type Result = ResponseFuture<Result<UserPage, AppError>>;
    fn handle(&mut self, msg: ListUsers, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            users::list(&pool, msg.limit, msg.after).await
        })
    }
}

impl Handler<UpdateUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: UpdateUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            users::update(&pool, msg.id, msg.changes).await
        })
    }
}

impl Handler<DeleteUser> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: DeleteUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::delete(&pool, msg.0).await })
    }
}

impl Handler<CheckDatabase> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, _msg: CheckDatabase, ctx: &mut Self::Context) -> Self::Result {
        // Not counted against the admission limit: readiness must be answerable under load.
        respond(self, ctx, |this| {
            let pool = this.pool.clone();
            async move { pool.check().await }
        })
    }
}

crate::supervised_async_actor!(DbActor);

/// Inserts an upload's row.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct CreateUpload(pub Upload);

/// Reads one upload's row by id, complete or not.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct GetUpload(pub String);

/// Reads a page of complete uploads in id order.
#[derive(Debug, Message)]
#[rtype(result = "Result<UploadPage, AppError>")]
pub struct ListUploads {
    /// At most this many uploads.
    pub limit: i64,
    /// Only ids above this one.
    pub after: String,
}

/// Deletes one upload's row.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteUpload(pub String);

/// Moves an unfinished upload's offset, if it is still at `from`.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct AdvanceUpload {
    /// The upload.
    pub id: String,
    /// The offset it must be at.
    pub from: i64,
    /// The new offset.
    pub to: i64,
    /// Its new expiry.
    pub expires_at: NaiveDateTime,
}

/// Marks an upload complete with its SHA-256.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct CompleteUpload {
    /// The upload.
    pub id: String,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
}

/// Lists unfinished uploads that expired before `before`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct ListExpiredUploads {
    /// The cut-off time (UTC).
    pub before: NaiveDateTime,
    /// At most this many ids.
    pub limit: i64,
}

impl Handler<CreateUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CreateUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(
            ctx,
            |pool| async move { uploads::create(&pool, msg.0).await },
        )
    }
}

impl Handler<GetUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: GetUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { uploads::get(&pool, &msg.0).await })
    }
}

impl Handler<ListUploads> for DbActor {
    type Result = ResponseFuture<Result<UploadPage, AppError>>;
    fn handle(&mut self, msg: ListUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::list(&pool, msg.limit, &msg.after).await
        })
    }
}

impl Handler<DeleteUpload> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: DeleteUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(
            ctx,
            |pool| async move { uploads::delete(&pool, &msg.0).await },
        )
    }
}

impl Handler<AdvanceUpload> for DbActor {
    type Result = ResponseFuture<Result<bool, AppError>>;
    fn handle(&mut self, msg: AdvanceUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::advance(&pool, &msg.id, msg.from, msg.to, msg.expires_at).await
        })
    }
}

impl Handler<CompleteUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CompleteUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::complete(&pool, &msg.id, msg.sha256).await
        })
    }
}

impl Handler<ListExpiredUploads> for DbActor {
    type Result = ResponseFuture<Result<Vec<String>, AppError>>;
    fn handle(&mut self, msg: ListExpiredUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::expired(&pool, msg.before, msg.limit).await
        })
    }
}

/// Lists unfinished uploads whose every byte is stored (to be finished).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct ListWholeUploads {
    /// At most this many ids.
    pub limit: i64,
}

impl Handler<ListWholeUploads> for DbActor {
    type Result = ResponseFuture<Result<Vec<String>, AppError>>;
    fn handle(&mut self, msg: ListWholeUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::whole_unfinished(&pool, msg.limit).await
        })
    }
}
