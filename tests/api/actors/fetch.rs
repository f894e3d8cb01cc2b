//! `FetchActor` in isolation: started under a `Supervisor` on the test's own arbiter,
//! messages sent directly, both result layers asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe::actors::fetch::{cancellation, CallAllSources, FetchActor, GatherSources};
use troupe::actors::supervise::{ask, InjectFault};
use troupe::config::{UpstreamConfig, UpstreamSource};
use troupe::error::AppError;
use troupe::fetch::{FanOut, SourceId, Upstreams};

use crate::helpers::Stub;

fn upstreams(sources: &[(&str, String)]) -> Arc<Upstreams> {
    Arc::new(Upstreams::new(&UpstreamConfig {
        sources: sources
            .iter()
            .map(|(name, url)| UpstreamSource {
                name: name.to_string(),
                url: url.clone(),
            })
            .collect(),
        // Longer than any test waits for a drop: a drop seen is a cancellation, not a timeout.
        timeout: Duration::from_secs(3),
        deadline: Duration::from_secs(5),
        max_bytes: 1024,
        breaker_failures: 5,
        breaker_cooldown: Duration::from_secs(5),
        extra_roots: Vec::new(),
    }))
}

/// The first `n` sources, a 5 s deadline, a request id.
fn fan_out(n: usize) -> FanOut {
    FanOut {
        sources: (0..n).map(SourceId).collect(),
        deadline: Instant::now() + Duration::from_secs(5),
        request_id: "actor-test".into(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[actix::test]
async fn gather_keeps_every_outcome_in_order() {
    troupe::install_crypto_provider();
    let stub = Stub::start();
    let up = upstreams(&[
        ("a", stub.url("tag=a")),
        ("bad", stub.url("status=404")),
        ("big", stub.url("big=5000")),
    ]);
    let addr = FetchActor::start_here(up.clone());

    let (_guard, cancel) = cancellation();
    let msg = GatherSources {
        fan_out: fan_out(3),
        cancel,
    };
    let results = ask(&addr, msg, WAIT).await.unwrap();

    assert_eq!(results.len(), 3);
    let body: serde_json::Value =
        serde_json::from_slice(results[0].result.as_ref().unwrap()).unwrap();
    assert_eq!(body["tag"], "a");
    assert_eq!(
        results[1].result.as_ref().unwrap_err().code,
        "upstream_status"
    );
    assert_eq!(
        results[2].result.as_ref().unwrap_err().code,
        "upstream_too_large"
    );
    assert_eq!(up.status()[1].stats.failures, 1);
}

#[actix::test]
async fn call_all_returns_the_first_failure_and_drops_the_rest() {
    troupe::install_crypto_provider();
    let stub = Stub::start();
    let up = upstreams(&[
        ("slow", stub.url("delay=3000&tag=slow")),
        ("bad", stub.url("delay=100&status=404")),
    ]);
    let addr = FetchActor::start_here(up);

    let (_guard, cancel) = cancellation();
    let msg = CallAllSources {
        fan_out: fan_out(2),
        cancel,
    };
    let started = Instant::now();
    let failure = ask(&addr, msg, WAIT).await.unwrap().unwrap_err();

    assert_eq!(failure.id, SourceId(1));
    assert_eq!(failure.error.code, "upstream_status");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let after = stub
        .wait_dropped("tag=slow", Duration::from_secs(2))
        .await
        .expect("the slow call was not dropped");
    assert!(after < Duration::from_millis(1500), "{after:?}");
}

#[actix::test]
async fn dropping_the_requesters_guard_cancels_the_calls() {
    troupe::install_crypto_provider();
    let stub = Stub::start();
    let up = upstreams(&[("slow", stub.url("delay=4000&tag=slow"))]);
    let addr = FetchActor::start_here(up.clone());

    let (guard, cancel) = cancellation();
    let msg = GatherSources {
        fan_out: fan_out(1),
        cancel,
    };
    let pending = addr.send(msg);
    // Let the call reach the upstream, then give up as a disconnecting client would.
    let _ = actix_rt::time::timeout(Duration::from_millis(300), pending).await;
    drop(guard);

    let after = stub
        .wait_dropped("tag=slow", Duration::from_secs(2))
        .await
        .expect("the upstream call was not dropped");
    assert!(after < Duration::from_millis(1500), "{after:?}");
    // A cancelled call is neither a success nor a failure of the source.
    assert_eq!(up.status()[0].stats.calls, 0);
}

#[actix::test]
async fn a_panic_fails_that_request_and_the_actor_serves_the_next_one() {
    troupe::install_crypto_provider();
    let stub = Stub::start();
    let addr = FetchActor::start_here(upstreams(&[("a", stub.url("tag=a"))]));

    for fault in [InjectFault::Panic, InjectFault::PanicInFuture] {
        let err = ask(&addr, fault, WAIT).await.unwrap_err();
        assert!(matches!(err, AppError::Internal(_)), "{err:?}");

        let (_guard, cancel) = cancellation();
        let msg = CallAllSources {
            fan_out: fan_out(1),
            cancel,
        };
        let bodies = ask(&addr, msg, WAIT).await.unwrap().unwrap();
        assert_eq!(bodies.len(), 1);
    }
}

#[actix::test]
async fn past_its_admission_limit_the_actor_answers_overloaded_at_once() {
    troupe::install_crypto_provider();
    let stub = Stub::start();
    let addr = FetchActor::start_here_with_limit(
        upstreams(&[("slow", stub.url("delay=400&tag=slow"))]),
        1,
    );
    let gather = || {
        let (guard, cancel) = cancellation();
        let msg = GatherSources {
            fan_out: fan_out(1),
            cancel,
        };
        (guard, msg)
    };

    let (_first_guard, first) = gather();
    let first = addr.send(first);
    let first = actix_rt::spawn(first);
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let (_second_guard, second) = gather();
    let started = Instant::now();
    let err = ask(&addr, second, WAIT).await.unwrap_err();

    assert!(matches!(err, AppError::Overloaded(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    let results = first.await.unwrap().unwrap().unwrap();
    assert!(results[0].result.is_ok());
    // The slot is free again.
    let (_guard, third) = gather();
    assert!(ask(&addr, third, WAIT).await.unwrap()[0].result.is_ok());
}
