//! `DbActor` on its own, under `#[actix::test]`: started on a real pool over each backend,
//! spoken to with its messages, both result layers asserted (the mailbox's and the query's).

use std::time::Duration;

use actix::prelude::*;
use tempfile::TempDir;
use troupe::actors::db::{
    CheckDatabase, CreateUser, DbActor, DeleteUser, GetUser, ListUsers, UpdateUser,
};
use troupe::actors::supervise::{ask, InjectFault};
use troupe::db::page::PageRequest;
use troupe::db::users::{NewUser, UserChanges};
use troupe::db::DbPool;
use troupe::error::AppError;
use troupe::ids::UserId;

use crate::helpers::{test_config, test_db, Backend, TestDb};

const WAIT: Duration = Duration::from_secs(5);

/// A supervised `DbActor` over a fresh database, as `Db::start` starts it; the database
/// and its scratch dir live as long as the second half of the pair.
async fn db_actor(
    backend: Backend,
    max_in_flight: usize,
) -> Option<(Addr<DbActor>, (TestDb, TempDir))> {
    let (db, dir) = test_db(backend).await?;
    let pool = DbPool::connect(&test_config(&db, &dir, &[])).await.unwrap();
    let addr = Supervisor::start(move |_| DbActor::new(pool, max_in_flight));
    Some((addr, (db, dir)))
}

fn new_user(name: &str, email: &str) -> NewUser {
    NewUser {
        name: name.into(),
        email: email.into(),
    }
}

async fn crud_round_trip_through_messages(backend: Backend) {
    let Some((db, _keep)) = db_actor(backend, 16).await else {
        return;
    };
    let ada = ask(&db, CreateUser(new_user("Ada", "ada@example.com")), WAIT)
        .await
        .unwrap();
    assert_eq!(ask(&db, GetUser(ada.id), WAIT).await.unwrap(), ada);

    let changes = UserChanges {
        name: Some("Ada L.".into()),
        email: None,
    };
    let renamed = ask(
        &db,
        UpdateUser {
            id: ada.id,
            changes,
        },
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.email.as_str()),
        ("Ada L.", "ada@example.com")
    );
    assert_eq!(renamed.created_at, ada.created_at);

    ask(&db, DeleteUser(ada.id), WAIT).await.unwrap();
    let gone = ask(&db, GetUser(ada.id), WAIT).await.unwrap_err();
    assert!(matches!(gone, AppError::NotFound(_)), "{gone:?}");
    let again = ask(&db, DeleteUser(ada.id), WAIT).await.unwrap_err();
    assert!(matches!(again, AppError::NotFound(_)), "{again:?}");
}

async fn a_taken_email_is_a_conflict_value(backend: Backend) {
    let Some((db, _keep)) = db_actor(backend, 16).await else {
        return;
    };
    ask(&db, CreateUser(new_user("A", "taken@example.com")), WAIT)
        .await
        .unwrap();
    // The mailbox delivered it (outer Ok); the query refused it (inner Err).
    let answer = db
        .send(CreateUser(new_user("B", "TAKEN@example.com")))
        .await
        .expect("mailbox");
    assert!(matches!(answer, Err(AppError::Conflict(_))), "{answer:?}");
}

async fn list_pages_by_keyset(backend: Backend) {
    let Some((db, _keep)) = db_actor(backend, 16).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let user = ask(
            &db,
            CreateUser(new_user("U", &format!("u{i}@example.com"))),
            WAIT,
        )
        .await
        .unwrap();
        ids.push(user.id);
    }
    let first = ask(
        &db,
        ListUsers(PageRequest {
            limit: 2,
            after: UserId(0),
        }),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        first.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        ids[..2]
    );
    assert_eq!(first.next_after, Some(ids[1]));
    let rest = ask(
        &db,
        ListUsers(PageRequest {
            limit: 2,
            after: ids[1],
        }),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        rest.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        ids[2..]
    );
    assert_eq!(rest.next_after, None);
}

async fn a_panic_fails_one_message_and_the_actor_serves_the_next(backend: Backend) {
    let Some((db, _keep)) = db_actor(backend, 16).await else {
        return;
    };
    for fault in [InjectFault::Panic, InjectFault::PanicInFuture] {
        let err = ask(&db, fault, WAIT).await.unwrap_err();
        assert!(matches!(err, AppError::Internal(_)), "{fault:?}: {err:?}");
        ask(&db, CheckDatabase, WAIT).await.unwrap();
        let page = ask(
            &db,
            ListUsers(PageRequest {
                limit: 1,
                after: UserId(0),
            }),
            WAIT,
        )
        .await
        .unwrap();
        assert!(page.users.is_empty());
    }
    assert!(db.connected());
}

async fn over_the_admission_limit_is_overloaded_not_queued(backend: Backend) {
    // Room for no query at all: every one is refused at once, none waits for the pool.
    let Some((db, _keep)) = db_actor(backend, 0).await else {
        return;
    };
    let err = ask(&db, GetUser(UserId(1)), WAIT).await.unwrap_err();
    assert!(matches!(err, AppError::Overloaded(_)), "{err:?}");
    // Readiness is not subject to the limit.
    ask(&db, CheckDatabase, WAIT).await.unwrap();
}

crate::both_backends!(
    actor_crud => crud_round_trip_through_messages,
    actor_conflict => a_taken_email_is_a_conflict_value,
    actor_keyset => list_pages_by_keyset,
    actor_panic => a_panic_fails_one_message_and_the_actor_serves_the_next,
    actor_admission => over_the_admission_limit_is_overloaded_not_queued,
);
