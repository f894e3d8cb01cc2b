use serde_json::json;

use awc::http::Method;

use crate::helpers::{request_id, spawn_app, Backend};

#[actix_web::test]
async fn ping_answers_the_seed_shape() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (status, headers, body) = app.get_json("/ping").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"message": "pong"}));
    assert!(headers.contains_key("x-request-id"));
}

#[actix_web::test]
async fn healthz_answers_ok() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (status, _, body) = app.get_json("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

async fn readyz_is_ready_when_everything_is_up(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for component in ["database", "db_actor", "cpu_actor", "storage"] {
        assert_eq!(
            body["components"][component]["state"], "up",
            "{component}: {body}"
        );
    }
    assert_eq!(body["components"]["storage"]["backend"], "file", "{body}");
}

crate::both_backends!(readyz_ready => readyz_is_ready_when_everything_is_up);

#[actix_web::test]
async fn a_sane_client_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, headers, _) = app
        .send(
            Method::GET,
            "/ping",
            &[("x-request-id", "abc-123.X")],
            vec![],
        )
        .await;
    assert_eq!(headers.get("x-request-id").unwrap(), "abc-123.X");

    let (_, headers, body) = app
        .send(
            Method::GET,
            "/nope",
            &[("x-request-id", "no spaces <script>")],
            vec![],
        )
        .await;
    let id = request_id(&headers);
    assert_ne!(id, "no spaces <script>");
    assert_eq!(body["error"]["request_id"], id.as_str());
}

#[actix::test]
async fn lists_negotiate_gzip_and_small_answers_stay_plain() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let encoding = |path: &'static str| {
        let req = app
            .client
            .get(app.url(path))
            .insert_header(("accept-encoding", "gzip"));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status().as_u16(), 200, "{path}");
            res.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(encoding("/users").await.as_deref(), Some("gzip"));
    assert_eq!(encoding("/ping").await, None);
}
