//! Every failure is the JSON error of the contract, whichever layer produced it.

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, TestApp};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        !body["error"]["request_id"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{body}"
    );
}

async fn app() -> TestApp {
    spawn_app(Backend::Sqlite).await.unwrap()
}

#[actix_web::test]
async fn unknown_route_is_404_json() {
    let app = app().await;
    let (status, _, body) = app.get_json("/no/such/route").await;
    assert_error(status, &body, 404, "not_found");
}

#[actix_web::test]
async fn query_parameters_troupe_does_not_know_are_ignored_and_bad_ones_are_named() {
    let app = app().await;
    for i in 0..3 {
        let (status, _, body) = app.create_user("Q", &format!("q{i}@b.co")).await;
        assert_eq!(status, 201, "{body}");
    }
    // What a client of the seed system sends: `skip` is not troupe's, `limit` is.
    let (status, _, body) = app.list_users("skip=0&limit=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"].as_array().unwrap().len(), 2, "{body}");
    let (status, _, body) = app.list_uploads("skip=0&limit=5&fields=id").await;
    assert_eq!(status, 200, "{body}");

    for (route, query, parameter) in [
        (
            "/users",
            "limit=5&after=x",
            "after: invalid digit found in string",
        ),
        (
            "/users",
            "after=1&limit=",
            "limit: cannot parse integer from empty string",
        ),
        (
            "/users",
            "limit=99999999999999999999",
            "limit: number too large",
        ),
        (
            "/uploads",
            "skip=0&limit=ten",
            "limit: invalid digit found in string",
        ),
        ("/users", "limit=1&limit=2", "duplicate field `limit`"),
    ] {
        let (status, _, body) = app.get_json(&format!("{route}?{query}")).await;
        assert_error(status, &body, 400, "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(parameter), "{route}?{query}: {message}");
    }
}

#[actix_web::test]
async fn wrong_method_is_405_json_with_allow() {
    let app = app().await;
    let (status, headers, body) = app.send_json(Method::PUT, "/users", &json!({})).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert!(headers.contains_key("allow"));
}

#[actix_web::test]
async fn malformed_json_is_400() {
    let app = app().await;
    let (status, _, body) = app
        .send(
            Method::POST,
            "/users",
            &[("content-type", "application/json")],
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
}

#[actix_web::test]
async fn well_formed_json_of_the_wrong_shape_is_422() {
    let app = app().await;
    for bad in [
        json!({"name": 5, "email": "a@b.co"}),
        json!({"name": "A", "email": "a@b.co", "admin": true}),
    ] {
        let (status, _, body) = app.send_json(Method::POST, "/users", &bad).await;
        assert_error(status, &body, 422, "validation_failed");
    }
}

#[actix_web::test]
async fn non_json_content_type_is_415() {
    let app = app().await;
    let (status, _, body) = app
        .send(Method::POST, "/users", &[], b"name=a".to_vec())
        .await;
    assert_error(status, &body, 415, "unsupported_media_type");
}

#[actix_web::test]
async fn oversize_json_body_is_413() {
    let app = app().await;
    let (status, _, body) = app.create_user(&"x".repeat(100 * 1024), "a@b.co").await;
    assert_error(status, &body, 413, "payload_too_large");
}

#[actix_web::test]
async fn malformed_query_and_path_are_400() {
    let app = app().await;
    let (status, _, body) = app.list_users("limit=many").await;
    assert_error(status, &body, 400, "bad_request");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("limit: invalid digit found in string"),
        "{message}"
    );
    let (status, _, body) = app.get_user("not-a-number").await;
    assert_error(status, &body, 400, "bad_request");
}
