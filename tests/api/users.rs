//! The users resource, on both backends.

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend};

async fn create_returns_201_location_and_the_user(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, headers, user) = app.create_user("  Ada Lovelace ", "ada@example.com").await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_i64().unwrap();
    assert_eq!(
        headers.get("location").unwrap(),
        format!("/users/{id}").as_str()
    );
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "ada@example.com");
    let created = user["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    assert!(created.ends_with('Z'));

    let (status, _, fetched) = app.get_user(id).await;
    assert_eq!((status, &fetched), (200, &user));
}

async fn invalid_fields_are_422_with_each_field_named(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, _, body) = app.create_user("   ", "nope").await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email"]);

    let (status, _, body) = app.create_user(&"x".repeat(201), "a@b.co").await;
    assert_eq!(status, 422, "{body}");
    let (status, _, body) = app
        .send_json(Method::POST, "/users", &json!({"email": "a@b.co"}))
        .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("name"))
    );
}

async fn a_taken_email_in_any_case_is_409(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    assert_eq!(app.create_user("A", "same@example.com").await.0, 201);
    let (status, _, body) = app.create_user("B", "SAME@Example.COM").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (_, _, other) = app.create_user("C", "other@example.com").await;
    let (status, _, body) = app
        .update_user(&other["id"], &json!({"email": "Same@example.com"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
}

async fn unknown_ids_are_404(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, _, body) = app.get_user(999999).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, _) = app.update_user(999999, &json!({"name": "x"})).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.delete_user(999999).await;
    assert_eq!(status, 404);
}

async fn list_pages_by_keyset_in_id_order(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, _, user) = app
            .create_user(&format!("User {i}"), &format!("u{i}@example.com"))
            .await;
        assert_eq!(status, 201);
        ids.push(user["id"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let query = match after {
            Some(a) => format!("limit=2&after={a}"),
            None => "limit=2".to_owned(),
        };
        let (status, _, page) = app.list_users(&query).await;
        assert_eq!(status, 200, "{page}");
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        seen.extend(users.iter().map(|u| u["id"].as_i64().unwrap()));
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let (_, _, all) = app.list_users("").await;
    assert_eq!(all["users"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_after"], Value::Null);

    for bad in ["/users?limit=0", "/users?limit=1001", "/users?after=-1"] {
        let (status, _, body) = app.get_json(bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
}

async fn patch_changes_only_the_given_fields(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_, _, user) = app.create_user("Old", "old@example.com").await;
    let id = &user["id"];
    let (status, _, updated) = app.update_user(id, &json!({"name": "New"})).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "New");
    assert_eq!(updated["email"], "old@example.com");
    assert_eq!(updated["created_at"], user["created_at"]);
    assert!(updated["updated_at"].as_str() >= user["updated_at"].as_str());

    let (status, _, body) = app.update_user(id, &json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    let (status, _, _) = app.update_user(id, &json!({"email": "bad"})).await;
    assert_eq!(status, 422);
    // `null` is not "unchanged": nothing changes, and the client is told.
    let (status, _, body) = app
        .update_user(id, &json!({"name": null, "email": "new@example.com"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
    let (_, _, unchanged) = app.get_user(id).await;
    assert_eq!(unchanged["email"], "old@example.com");
}

async fn delete_answers_204_then_404(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_, _, user) = app.create_user("Gone", "gone@example.com").await;
    let (status, _, _) = app.delete_user(&user["id"]).await;
    assert_eq!(status, 204);
    let (status, _, _) = app.get_user(&user["id"]).await;
    assert_eq!(status, 404);
    // A deleted email can be taken again.
    assert_eq!(app.create_user("Again", "gone@example.com").await.0, 201);
}

crate::both_backends!(
    create_201 => create_returns_201_location_and_the_user,
    invalid_422 => invalid_fields_are_422_with_each_field_named,
    taken_email_409 => a_taken_email_in_any_case_is_409,
    unknown_404 => unknown_ids_are_404,
    keyset_pages => list_pages_by_keyset_in_id_order,
    patch => patch_changes_only_the_given_fields,
    delete => delete_answers_204_then_404,
);
