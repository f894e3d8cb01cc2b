//! `GET /metrics` over HTTP after exercising every route, read with a parser of the
//! Prometheus text format: every series of the catalogue is there with its help and type,
//! with the figures the requests made; two apps in one process keep their own; refusals,
//! dropped requests and an exhausted pool are counted; with keys, `/metrics` needs `metrics`.

use std::time::{Duration, Instant};

use awc::http::Method;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{
    HistogramValue, MetricFamily, MetricsExposition, PrometheusType, PrometheusValue,
};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use troupe::auth::{entry_line, Scope, Scopes};
use troupe::metrics::{Kind, CATALOGUE, HTTP_BUCKETS};

use crate::both_backends;
use crate::helpers::{
    content_type, framing, header, refused_url, spawn_app, spawn_app_with, Backend, Stub, TestApp,
};

type Family = MetricFamily<PrometheusType, PrometheusValue>;

/// One scrape, parsed.
struct Scraped {
    text: String,
    exposition: MetricsExposition<PrometheusType, PrometheusValue>,
}

impl Scraped {
    /// `GET /metrics` (with `key` as its bearer key), which must answer 200 in the text format.
    async fn of(app: &TestApp, key: Option<&str>) -> Self {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(key) = key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        let mut res = req.send().await.expect("scrape failed");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            header(res.headers(), "content-type"),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = res.body().limit(16 << 20).await.expect("scrape body");
        let text = String::from_utf8(body.to_vec()).expect("UTF-8 exposition");
        let exposition = parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"));
        Self { text, exposition }
    }

    fn family(&self, name: &str) -> &Family {
        self.exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    /// The sample of `name` whose labels are exactly `labels`.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&PrometheusValue> {
        let family = self.family(name);
        family
            .iter_samples()
            .find(|s| {
                let set = s.get_labelset().expect("labels");
                set.iter().count() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|s| &s.value)
    }

    /// The value of the counter or gauge `name{labels}`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.sample(name, labels) {
            Some(PrometheusValue::Counter(c)) => c.value.as_f64(),
            Some(PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n)) => n.as_f64(),
            other => panic!("{name}{labels:?}: {other:?} in\n{}", self.text),
        }
    }

    /// The histogram `name{labels}`, checked to be well formed: cumulative buckets ending
    /// at `+Inf` with the count, and a sum.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> HistogramValue {
        let Some(PrometheusValue::Histogram(h)) = self.sample(name, labels) else {
            panic!("no histogram {name}{labels:?} in\n{}", self.text);
        };
        let counts: Vec<f64> = h.buckets.iter().map(|b| b.count.as_f64()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let last = h.buckets.last().expect("buckets");
        assert_eq!(last.upper_bound, f64::INFINITY);
        assert_eq!(Some(last.count.as_f64() as u64), h.count);
        assert!(h.sum.is_some());
        h.clone()
    }

    /// Every sample of `name` that has label `label` = `value`.
    fn with_label(&self, name: &str, label: &str, value: &str) -> usize {
        self.family(name)
            .iter_samples()
            .filter(|s| s.get_labelset().unwrap().get_label_value(label) == Some(value))
            .count()
    }
}

/// Every route exercised once or more, on a fresh app with two sources (one answering,
/// one refusing, whose breaker opens at its first failure); then one scrape shows it all.
async fn every_route_is_counted_by_its_pattern(backend: Backend) {
    let stub = Stub::start();
    let upstreams = format!("a={},b={}", stub.url("tag=a"), refused_url());
    let vars = [
        ("TROUPE_UPSTREAMS", upstreams.as_str()),
        ("TROUPE_UPSTREAM_BREAKER_FAILURES", "1"),
        ("TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS", "600000"),
    ];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };

    // Users, each answer of each method.
    let (status, _, user) = app.create_user("Ada", "ada@example.com").await;
    assert_eq!(status, 201, "{user}");
    let id = &user["id"];
    assert_eq!(app.get_user(id).await.0, 200);
    assert_eq!(app.list_users("limit=5").await.0, 200);
    let renamed = app.update_user(id, &json!({"name": "Ada L."})).await;
    assert_eq!(renamed.0, 200);
    assert_eq!(app.delete_user(id).await.0, 204);
    assert_eq!(app.get_user(id).await.0, 404);
    // Uploads: a form upload, read back and removed.
    let data = vec![b'x'; 70_000];
    let (status, _, upload) = app.post_upload("a.bin", &data).await;
    assert_eq!(status, 201, "{upload}");
    let uid = upload["id"].as_str().unwrap();
    assert_eq!(app.list_uploads("").await.0, 200);
    assert_eq!(app.get_upload(uid).await.0, 200);
    assert_eq!(app.get_content(uid, None).await.0, 200);
    assert_eq!(app.delete_upload(uid).await.0, 204);
    // tus: one upload created and completed, one created and terminated.
    let (status, h, _) = app.tus_create(5, &[]).await;
    assert_eq!(status, 201);
    let done = header(&h, "location").to_owned();
    assert_eq!(app.tus_head(&done).await.0, 200);
    assert_eq!(app.tus_patch(&done, 0, b"12345", &[]).await.0, 204);
    let (_, h, _) = app.tus_create(10, &[]).await;
    assert_eq!(app.tus_delete(header(&h, "location")).await.0, 204);
    // The fan-out: b fails once (its breaker opens), then is not called.
    for _ in 0..2 {
        let (status, headers, body) = app.aggregate("").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "x-aggregate-complete"), "false");
    }
    assert_eq!(app.parallel("sources=a").await.0, 200);
    // Paths no route matches.
    assert_eq!(app.get_json("/no/such/route").await.0, 404);
    assert_eq!(app.get_json("/users/1/2/3").await.0, 404);
    assert_eq!(app.get_json("/readyz").await.0, 200);

    let m = Scraped::of(&app, None).await;

    // Every metric of the catalogue, with its help and type.
    for metric in CATALOGUE {
        if metric.name.starts_with("process_") && !cfg!(target_os = "linux") {
            continue;
        }
        let family = m.family(metric.name);
        assert_eq!(family.help, metric.help, "{}", metric.name);
        let kind = match metric.kind {
            Kind::Counter => PrometheusType::Counter,
            Kind::Gauge => PrometheusType::Gauge,
            Kind::Histogram => PrometheusType::Histogram,
        };
        assert_eq!(family.family_type, kind, "{}", metric.name);
        let mut labels = family.get_label_names().to_vec();
        let mut documented: Vec<&str> = metric.labels.to_vec();
        labels.sort();
        documented.sort_unstable();
        assert_eq!(labels, documented, "{}", metric.name);
    }

    // Requests, by route pattern.
    let requests = |method, route, status| {
        m.value(
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/users", "201"), 1.0);
    assert_eq!(requests("GET", "/users", "200"), 1.0);
    assert_eq!(requests("GET", "/users/{id}", "200"), 1.0);
    assert_eq!(requests("GET", "/users/{id}", "404"), 1.0);
    assert_eq!(requests("PATCH", "/users/{id}", "200"), 1.0);
    assert_eq!(requests("DELETE", "/users/{id}", "204"), 1.0);
    assert_eq!(requests("POST", "/upload", "201"), 1.0);
    assert_eq!(requests("GET", "/uploads/{id}/content", "200"), 1.0);
    assert_eq!(requests("DELETE", "/uploads/{id}", "204"), 1.0);
    assert_eq!(requests("POST", "/files", "201"), 2.0);
    assert_eq!(requests("HEAD", "/files/{id}", "200"), 1.0);
    assert_eq!(requests("PATCH", "/files/{id}", "204"), 1.0);
    assert_eq!(requests("DELETE", "/files/{id}", "204"), 1.0);
    assert_eq!(requests("GET", "/aggregate", "200"), 2.0);
    assert_eq!(requests("GET", "/parallel", "200"), 1.0);
    assert_eq!(requests("GET", "/readyz", "200"), 1.0);
    // Unmatched paths share one label; no path ever becomes one.
    assert_eq!(requests("GET", "unmatched", "404"), 2.0);
    assert!(!m.text.contains("no/such"), "{}", m.text);
    assert_eq!(
        m.with_label("http_requests_total", "route", "/users/1/2/3"),
        0
    );
    let took = m.histogram(
        "http_request_duration_seconds",
        &[
            ("method", "GET"),
            ("route", "/aggregate"),
            ("status", "200"),
        ],
    );
    assert_eq!(took.count, Some(2));
    assert_eq!(took.buckets.len(), HTTP_BUCKETS.len() + 1);
    assert!(took.sum.unwrap().as_f64() > 0.0);
    // The scrape itself is in flight.
    assert!(m.value("http_requests_in_flight", &[]) >= 1.0);
    assert_eq!(
        m.value("http_requests_unanswered_total", &[("method", "GET")]),
        0.0
    );

    // The database pool (4 connections in the tests).
    let connections = m.value("db_pool_connections", &[]);
    assert!((1.0..=4.0).contains(&connections), "{connections}");
    assert!(m.value("db_pool_idle_connections", &[]) <= connections);
    assert_eq!(m.value("db_pool_max_connections", &[]), 4.0);
    assert_eq!(m.value("db_pool_waiting", &[]), 0.0);
    assert_eq!(m.value("db_pool_wait_timeouts_total", &[]), 0.0);
    assert!(m.value("db_pool_connections_opened_total", &[]) >= connections);

    // Admissions: every database operation, each fan-out, the uploads that streamed.
    let admitted = |actor| m.value("actor_admitted_total", &[("actor", actor)]);
    assert!(admitted("db") >= 10.0, "{}", admitted("db"));
    assert_eq!(admitted("fetch"), 3.0);
    assert_eq!(admitted("upload"), 2.0);
    assert!(admitted("cpu") >= 1.0);
    for actor in ["db", "fetch", "cpu", "upload"] {
        for reason in ["full", "no_answer", "closed"] {
            let labels = [("actor", actor), ("reason", reason)];
            assert_eq!(m.value("actor_rejected_total", &labels), 0.0, "{labels:?}");
        }
    }
    assert_eq!(m.value("cpu_pool_threads", &[]), 2.0);
    assert_eq!(m.value("cpu_pool_jobs", &[]), 0.0);
    assert_eq!(m.value("cpu_pool_waiting", &[]), 0.0);

    // Upstreams: a called three times; b failed once and was then kept from being called.
    let source = |name| [("source", name)];
    assert_eq!(m.value("upstream_calls_total", &source("a")), 3.0);
    assert_eq!(m.value("upstream_calls_total", &source("b")), 1.0);
    let unreachable = [("source", "b"), ("code", "upstream_unreachable")];
    assert_eq!(m.value("upstream_errors_total", &unreachable), 1.0);
    let a_errors = [("source", "a"), ("code", "upstream_unreachable")];
    assert_eq!(m.value("upstream_errors_total", &a_errors), 0.0);
    assert_eq!(m.value("upstream_circuit_open_total", &source("b")), 1.0);
    assert_eq!(m.value("upstream_circuit_open_total", &source("a")), 0.0);
    let latency = m.histogram("upstream_request_duration_seconds", &source("a"));
    assert_eq!(latency.count, Some(3));
    let breaker = |name, state| {
        m.value(
            "upstream_breaker_state",
            &[("source", name), ("state", state)],
        )
    };
    assert_eq!((breaker("a", "closed"), breaker("a", "open")), (1.0, 0.0));
    assert_eq!(
        (
            breaker("b", "closed"),
            breaker("b", "open"),
            breaker("b", "half_open")
        ),
        (0.0, 1.0, 0.0)
    );
    assert_eq!(
        m.value("upstream_breaker_consecutive_failures", &source("b")),
        1.0
    );
    // /readyz reads the same statistics.
    let (_, _, ready) = app.get_json("/readyz").await;
    let a = &ready["components"]["upstreams"]["a"];
    assert_eq!(a["calls"], 3, "{ready}");
    assert!(a["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{ready}");
    assert_eq!(a["latency_ms"]["window"], 3, "{ready}");

    // Uploads: the file's bytes and the PATCH's, two tus uploads made, one completed.
    assert_eq!(
        m.value("upload_bytes_received_total", &[]),
        (data.len() + 5) as f64
    );
    assert_eq!(m.value("uploads_streaming", &[]), 0.0);
    assert_eq!(m.value("tus_uploads_created_total", &[]), 2.0);
    assert_eq!(m.value("tus_uploads_completed_total", &[]), 1.0);
    assert_eq!(m.value("tus_uploads_expired_total", &[]), 0.0);

    // The process.
    if cfg!(target_os = "linux") {
        assert!(m.value("process_resident_memory_bytes", &[]) > f64::from(1 << 20));
        assert!(m.value("process_open_fds", &[]) > 3.0);
    }
}

/// The integration tests run many apps in one process: each app's figures are its own.
#[actix_web::test]
async fn two_apps_in_one_process_keep_their_own_counts() {
    let one = spawn_app(Backend::Sqlite).await.unwrap();
    let two = spawn_app(Backend::Sqlite).await.unwrap();
    for _ in 0..3 {
        assert_eq!(one.get_json("/ping").await.0, 200);
    }
    assert_eq!(two.get_json("/ping").await.0, 200);
    let ping = [("method", "GET"), ("route", "/ping"), ("status", "200")];
    assert_eq!(
        Scraped::of(&one, None)
            .await
            .value("http_requests_total", &ping),
        3.0
    );
    assert_eq!(
        Scraped::of(&two, None)
            .await
            .value("http_requests_total", &ping),
        1.0
    );
}

/// A request whose head and first `body` bytes are sent; the socket stays open, silent.
async fn hold(app: &TestApp, head: &str, body: &[u8]) -> tokio::net::TcpStream {
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Waits until `done` holds of a fresh scrape (10 s at most).
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scraped) -> bool) -> Scraped {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = Scraped::of(app, None).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}:\n{}", m.text);
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn refusals_streaming_uploads_and_dropped_requests_are_counted() {
    let stub = Stub::start();
    let slow = format!("slow={}", stub.url("delay=5000"));
    let vars = [
        ("TROUPE_MAX_ACTIVE_UPLOADS", "1"),
        ("TROUPE_UPSTREAMS", &slow),
    ];
    let app = spawn_app_with(Backend::Sqlite, &vars).await.unwrap();
    let (part, _) = framing("held.bin", "application/octet-stream");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: 100000\r\n\r\n",
        content_type()
    );
    // One upload streams, silently; a second is refused before its body is read.
    let held = hold(&app, &head, &part).await;
    scrape_until(&app, "the held upload never streamed", |m| {
        m.value("uploads_streaming", &[]) == 1.0
    })
    .await;
    let (status, _, body) = app.post_upload("second.bin", b"refused").await;
    assert_eq!(status, 503, "{body}");
    let m = Scraped::of(&app, None).await;
    let refused = [("actor", "upload"), ("reason", "full")];
    assert_eq!(m.value("actor_rejected_total", &refused), 1.0);
    assert_eq!(m.value("actor_admitted_total", &[("actor", "upload")]), 1.0);
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("method", "POST"), ("route", "/upload"), ("status", "503")]
        ),
        1.0
    );
    drop(held);
    scrape_until(&app, "the held upload's place was never given back", |m| {
        m.value("uploads_streaming", &[]) == 0.0
    })
    .await;

    // A client that goes away while its fan-out waits: its request is counted unanswered.
    let waiting = hold(&app, "GET /aggregate HTTP/1.1\r\nHost: x\r\n\r\n", b"").await;
    scrape_until(&app, "the fan-out never started", |m| {
        m.value("http_requests_in_flight", &[]) >= 2.0
    })
    .await;
    drop(waiting);
    let m = scrape_until(&app, "the dropped request was never counted", |m| {
        m.value("http_requests_unanswered_total", &[("method", "GET")]) == 1.0
    })
    .await;
    assert_eq!(
        m.with_label("http_requests_total", "route", "/aggregate"),
        0
    );
}

#[actix_web::test]
async fn expired_tus_uploads_are_counted() {
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_TUS_EXPIRY_SECS", "1")])
        .await
        .unwrap();
    let (status, h, _) = app.tus_create(100, &[]).await;
    assert_eq!(status, 201);
    assert_eq!(
        app.tus_patch(header(&h, "location"), 0, b"part", &[])
            .await
            .0,
        204
    );
    // The actor sweeps every second; the expired upload goes at one of them.
    let m = scrape_until(&app, "the expired upload was never counted", |m| {
        m.value("tus_uploads_expired_total", &[]) == 1.0
    })
    .await;
    assert_eq!(m.value("tus_uploads_created_total", &[]), 1.0);
    assert_eq!(m.value("tus_uploads_completed_total", &[]), 0.0);
}

#[actix_web::test]
async fn an_exhausted_pool_counts_its_wait_timeouts() {
    let vars = [
        ("TROUPE_DB_POOL_SIZE", "2"),
        ("TROUPE_DB_TIMEOUT_MS", "300"),
    ];
    let Some(app) = spawn_app_with(Backend::Postgres, &vars).await else {
        return;
    };
    // An outside transaction holds the table: the pool's 2 connections block on it.
    let locker = app.db.pg().lock_users().await;
    let answers = futures::future::join_all((0..6).map(|_| app.list_users(""))).await;
    let refused = answers.iter().filter(|(s, _, _)| *s == 503).count();
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        refused >= 4,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );

    let m = Scraped::of(&app, None).await;
    let timeouts = m.value("db_pool_wait_timeouts_total", &[]);
    // The connections' own two requests end by the statement timeout instead.
    assert!(
        (1.0..=refused as f64).contains(&timeouts),
        "{timeouts} of {refused}"
    );
    assert!(m.value("db_pool_waits_total", &[]) >= 0.0);
    assert_eq!(m.value("db_pool_waiting", &[]), 0.0);
    assert_eq!(m.value("db_pool_max_connections", &[]), 2.0);
    let overloaded = [("method", "GET"), ("route", "/users"), ("status", "503")];
    assert_eq!(m.value("http_requests_total", &overloaded), refused as f64);
}

async fn with_keys_metrics_needs_its_scope(backend: Backend) {
    let keys = [
        entry_line(
            "prom",
            Scopes::of(&[Scope::Metrics]),
            "prometheus-key-0123456789",
        ),
        entry_line(
            "app",
            Scopes::of(&[Scope::UsersRead]),
            "app-key-0123456789abcdef",
        ),
        entry_line(
            "ops",
            Scopes::of(&[Scope::Admin]),
            "admin-key-0123456789abcdef",
        ),
    ]
    .join(",");
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    let get = |key: Option<&'static str>| {
        let app = &app;
        async move {
            let mut headers = Vec::new();
            let bearer = key.map(|k| format!("Bearer {k}"));
            if let Some(bearer) = &bearer {
                headers.push(("Authorization", bearer.as_str()));
            }
            app.send(Method::GET, "/metrics", &headers, vec![]).await
        }
    };
    let (status, headers, body) = get(None).await;
    assert_eq!(status, 401, "{body}");
    assert!(header(&headers, "www-authenticate").starts_with("Bearer"));
    assert_eq!(get(Some("not-a-key-0123456789abcdef")).await.0, 401);
    let (status, _, body) = get(Some("app-key-0123456789abcdef")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metrics"),
        "{body}"
    );
    let m = Scraped::of(&app, Some("prometheus-key-0123456789")).await;
    // The refusals above are counted too, under the route they asked for.
    let unauthorized = [("method", "GET"), ("route", "/metrics"), ("status", "401")];
    assert_eq!(m.value("http_requests_total", &unauthorized), 2.0);
    Scraped::of(&app, Some("admin-key-0123456789abcdef")).await;
}

both_backends!(
    every_route => every_route_is_counted_by_its_pattern,
    scope => with_keys_metrics_needs_its_scope,
);
