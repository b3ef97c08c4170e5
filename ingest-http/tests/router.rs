//! The ingest router through `oneshot`: every status of the API, and that
//! nothing reaches the pipeline unless the whole request is valid.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use ingest_http::auth::Clients;
use ingest_http::event::EventRules;
use ingest_http::router::ingest_router;
use ingest_http::state::{IngestSettings, IngestState};
use model::{Batch, EventResult, Op};
use pipeline::edge::channel;
use pipeline::health::Health;
use pipeline::topology::{Auth, AuthClient};
use pipeline::{Input, RateLimitSpec, WhenFull};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

fn settings() -> IngestSettings {
    IngestSettings {
        rules: EventRules { businesses: ["archive".to_owned(), "pgc".to_owned()].into(), max_events: 1000, max_age_ms: Default::default() },
        request_timeout: Duration::from_secs(2),
        retry_after_s: 3,
        max_body_bytes: 4096,
    }
}

fn with_client(rate_limit: Option<RateLimitSpec>) -> Clients {
    Clients::new(&Auth {
        clients: vec![AuthClient { name: "web".into(), token: TOKEN.into(), rate_limit, scopes: None, businesses: None }],
        allow_unauthenticated: false,
    })
}

/// A router whose downstream edge holds `capacity` events with `when_full`.
fn router(clients: Clients, capacity: usize, when_full: WhenFull, health: Health) -> (Router, Input<Batch>) {
    let (output, input) = channel("ingest", "realtime", capacity, when_full);
    (ingest_router(IngestState::new(output, settings(), clients, health)), input)
}

/// Answers every batch's ack: recorded, and first_today for the first event.
fn answer_acks(mut input: Input<Batch>) -> tokio::task::JoinHandle<Vec<Batch>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(batch) = input.recv().await {
            let results = (0..batch.ops.len()).map(|i| EventResult { recorded: true, first_today: i == 0 }).collect();
            if let Some(ack) = &batch.ack {
                ack.complete(Ok(results));
            }
            seen.push(batch);
        }
        seen
    })
}

fn post() -> axum::http::request::Builder {
    Request::post("/v1/events").header(header::CONTENT_TYPE, "application/json").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const ONE: &str = r#"{"uid":1,"business":"archive","oid":9,"progress":30}"#;

#[tokio::test]
async fn accepted_events_are_answered_after_the_write_in_order() {
    let (router, input) = router(with_client(None), 1000, WhenFull::Block, Health::default());
    let downstream = answer_acks(input);
    let body = r#"{"events":[{"uid":1,"business":"archive","oid":9,"progress":30},{"uid":2,"business":"pgc","oid":3,"progress":-1}]}"#;
    let (status, _, answer) = send(&router, post().body(Body::from(body)).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, serde_json::json!({"results":[{"recorded":true,"first_today":true},{"recorded":true,"first_today":false}]}));
    drop(router);
    let batches = downstream.await.unwrap();
    assert_eq!(batches.len(), 1);
    let uids: Vec<u64> = batches[0].ops.iter().map(Op::uid).collect();
    assert_eq!(uids, vec![1, 2]);
}

#[tokio::test]
async fn refusals_have_their_status_code_and_send_nothing() {
    let (router, input) = router(with_client(None), 1000, WhenFull::Block, Health::default());
    let downstream = answer_acks(input);

    let no_token = Request::post("/v1/events").header(header::CONTENT_TYPE, "application/json").body(Body::from(ONE)).unwrap();
    let (status, _, body) = send(&router, no_token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));

    let mut wrong_token = post().body(Body::from(ONE)).unwrap();
    wrong_token.headers_mut().insert(header::AUTHORIZATION, "Bearer not-the-token-at-all".parse().unwrap());
    assert_eq!(send(&router, wrong_token).await.0, StatusCode::UNAUTHORIZED);

    let text = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(ONE))
        .unwrap();
    assert_eq!(send(&router, text).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!(r#"{{"events":[{}]}}"#, vec![ONE; 200].join(","));
    let (status, _, body) = send(&router, post().body(Body::from(huge.clone())).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")));

    let bad = r#"{"events":[{"uid":1,"business":"archive","oid":9,"progress":30},{"uid":0,"business":"comic","oid":1,"progress":1},{"uid":1,"business":"archive","oid":1,"progress":"x"}]}"#;
    let (status, _, body) = send(&router, post().body(Body::from(bad)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_uid");
    assert_eq!(body["error"]["index"], 1);
    assert_eq!(body["error"]["message"], "2 invalid event(s); nothing was recorded");
    let listed: Vec<(u64, &str)> =
        body["error"]["errors"].as_array().unwrap().iter().map(|e| (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap())).collect();
    assert_eq!(listed, vec![(1, "invalid_uid"), (1, "unknown_business"), (2, "invalid_event")]);

    drop(router);
    assert!(downstream.await.unwrap().is_empty(), "a refused request reached the pipeline");
}

#[tokio::test]
async fn client_rate_limit_answers_429_with_retry_after() {
    let (router, input) =
        router(with_client(Some(RateLimitSpec { per_second: 1, burst: Some(2) })), 1000, WhenFull::Block, Health::default());
    let _downstream = answer_acks(input);
    let two = format!(r#"{{"events":[{ONE},{ONE}]}}"#);
    assert_eq!(send(&router, post().body(Body::from(two.clone())).unwrap()).await.0, StatusCode::OK);
    let (status, retry_after, body) = send(&router, post().body(Body::from(ONE)).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert_eq!(retry_after.as_deref(), Some("1"));
    let three = format!(r#"{{"events":[{ONE},{ONE},{ONE}]}}"#);
    assert_eq!(
        send(&router, post().body(Body::from(three.clone())).unwrap()).await.0,
        StatusCode::PAYLOAD_TOO_LARGE,
        "more than the burst can never pass"
    );
}

#[tokio::test]
async fn a_full_reject_edge_answers_503_at_once() {
    // Nobody reads the edge: the first request fills it and waits for its
    // ack; the second is refused without waiting.
    let (router, _input) = router(with_client(None), 1, WhenFull::Reject, Health::default());
    let first = tokio::spawn({
        let router = router.clone();
        async move { send(&router, post().body(Body::from(ONE)).unwrap()).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let (status, retry_after, body) = send(&router, post().body(Body::from(ONE)).unwrap()).await;
    assert!(started.elapsed() < Duration::from_millis(500), "a reject edge must not wait");
    assert_eq!(
        (status, body["error"]["code"].as_str(), retry_after.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"), Some("3"))
    );
    // The first request times out (nobody writes it): 503, never 200.
    assert_eq!(first.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_failed_write_is_503_never_200() {
    let (router, mut input) = router(with_client(None), 1000, WhenFull::Block, Health::default());
    tokio::spawn(async move {
        while let Some(batch) = input.recv().await {
            if let Some(ack) = &batch.ack {
                ack.complete(Err("redis down".into()));
            }
        }
    });
    let (status, _, body) = send(&router, post().body(Body::from(ONE)).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("write_failed")));
}

#[tokio::test]
async fn draining_refuses_new_requests() {
    let health = Health::default();
    let (router, input) = router(with_client(None), 1000, WhenFull::Block, health.clone());
    let downstream = answer_acks(input);
    health.start_draining();
    let (status, retry_after, body) = send(&router, post().body(Body::from(ONE)).unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), retry_after.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"), Some("3"))
    );
    drop(router);
    assert!(downstream.await.unwrap().is_empty());
}

/// Made-up methods are requests like any other to the metrics: they must
/// not each create a series (a client could grow `/metrics` without
/// bound).
#[test]
fn made_up_methods_do_not_grow_the_request_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (app, _input) = router(Clients::new(&Auth::default()), 16, WhenFull::Reject, Health::default());
            for index in 0..300 {
                let method = axum::http::Method::from_bytes(format!("MADEUP{index}").as_bytes()).unwrap();
                let request = Request::builder().method(method).uri("/v1/events").body(Body::empty()).unwrap();
                let response = tower::ServiceExt::oneshot(app.clone(), request).await.unwrap();
                assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            }
        });
    });
    let series = handle.render().lines().filter(|line| line.starts_with("histflow_http_requests_total{")).count();
    assert_eq!(series, 1, "{}", handle.render());
}

#[tokio::test]
async fn a_recording_switch_without_a_token_is_refused_before_its_body_is_read() {
    let (router, _input) = router(with_client(None), 16, WhenFull::Reject, Health::default());
    // A body that never arrives: only a refusal that does not read it can
    // answer.
    let endless = Body::from_stream(futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>());
    let request = Request::put("/v1/users/7/recording").header(header::CONTENT_TYPE, "application/json").body(endless).unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), send(&router, request)).await;
    let (status, _, body) = answered.expect("the server waited for the body of an unauthenticated request");
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
}

#[tokio::test]
async fn every_route_refuses_a_caller_without_a_valid_token() {
    let (router, _input) = router(with_client(None), 16, WhenFull::Reject, Health::default());
    let routes = [
        ("POST", "/v1/events", ONE),
        ("GET", "/v1/users/7/history", ""),
        ("DELETE", "/v1/users/7/history", ""),
        ("DELETE", "/v1/users/7/history/archive/9", ""),
        ("GET", "/v1/users/7/progress?items=archive:9", ""),
        ("GET", "/v1/users/7/recording", ""),
        ("PUT", "/v1/users/7/recording", r#"{"paused":true}"#),
    ];
    for (method, path, body) in routes {
        for authorization in [None, Some("Bearer not-the-token-at-all"), Some(TOKEN)] {
            let mut request = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let (status, _, answer) = send(&router, request.body(Body::from(body)).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {authorization:?}: {answer}");
        }
    }
}

/// A misspelt or blank clear is refused before anything reaches the
/// pipeline; "clear everything" is only `?all=true`. (An ignored
/// `?businesses=pgc` once cleared every business.)
#[tokio::test]
async fn a_misspelt_or_blank_clear_is_refused_and_nothing_reaches_the_pipeline() {
    let (router, input) = router(with_client(None), 1000, WhenFull::Block, Health::default());
    let downstream = answer_acks(input);
    let delete = |path: &str| Request::delete(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
    let refusals = [
        ("/v1/users/7/history?businesses=pgc", "unknown_parameter"),
        ("/v1/users/7/history?Business=archive", "unknown_parameter"),
        ("/v1/users/7/history?biz=pgc", "unknown_parameter"),
        ("/v1/users/7/history?business=pgc&bizness=comic", "unknown_parameter"),
        ("/v1/users/7/history?business=pgc&business=archive", "repeated_parameter"),
        ("/v1/users/7/history?business=", "invalid_business"),
        ("/v1/users/7/history?business=%20", "invalid_business"),
        ("/v1/users/7/history?business=,", "invalid_business"),
        ("/v1/users/7/history?business=,,,", "invalid_business"),
        ("/v1/users/7/history?business=%20,%20", "invalid_business"),
        ("/v1/users/7/history?business=pgc,", "invalid_business"),
        ("/v1/users/7/history?business=comic", "unknown_business"),
        ("/v1/users/7/history", "clear_scope_missing"),
        ("/v1/users/7/history?all=false", "clear_scope_missing"),
        ("/v1/users/7/history?all=yes", "invalid_parameter"),
        ("/v1/users/7/history?all=true&business=pgc", "ambiguous_clear"),
        ("/v1/users/7/history/archive/9?all=true", "unknown_parameter"),
    ];
    for (path, code) in refusals {
        let (status, _, answer) = send(&router, delete(path)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "DELETE {path}: {answer}");
    }
    let put = Request::put("/v1/users/7/recording?paused=false")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"paused":true}"#))
        .unwrap();
    let (status, _, answer) = send(&router, put).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_parameter")), "{answer}");
    drop(router);
    let seen = downstream.await.unwrap();
    assert!(seen.is_empty(), "a refused mutation reached the pipeline: {:?}", seen.iter().map(|batch| &batch.ops).collect::<Vec<_>>());
}

/// Every answer is the JSON error shape: unknown routes and methods too,
/// and an error quotes little of a long input.
#[tokio::test]
async fn unknown_routes_and_long_inputs_get_short_json_errors() {
    let (router, _input) = router(with_client(None), 16, WhenFull::Reject, Health::default());
    let with_token = |builder: axum::http::request::Builder| builder.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let (status, _, answer) = send(&router, with_token(Request::get("/v2/nothing")).body(Body::empty()).unwrap()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{answer}");
    let (status, _, answer) = send(&router, with_token(Request::patch("/v1/events")).body(Body::empty()).unwrap()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")), "{answer}");
    // 50 KB: near the longest URI the http crate takes.
    let long = "b".repeat(50_000);
    for path in [
        format!("/v1/users/7/history?business={long}"),
        format!("/v1/users/7/history?{long}=1"),
        format!("/v1/users/{long}/history"),
        format!("/v1/users/7/progress?items={long}:1"),
    ] {
        let (status, _, answer) = send(&router, with_token(Request::get(path.as_str())).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.len() < 300, "{} bytes echoed for {}", message.len(), &path[..40]);
    }
    let event = format!(r#"{{"uid":1,"business":"{}","oid":9,"progress":30}}"#, "b".repeat(3000));
    let (status, _, answer) = send(&router, post().body(Body::from(event)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().len() < 1000, "{} bytes in the answer", answer.to_string().len());
}

/// A token only does what its scopes and businesses allow: a write-only
/// token reports but cannot read, delete or clear; a client limited to one
/// business cannot write, read or clear another, nor clear everything or
/// pause a user. Nothing refused reaches the pipeline.
#[tokio::test]
async fn a_token_does_only_what_its_scopes_and_businesses_allow() {
    use pipeline::topology::Scope;
    let client = |name: &str, token: &str, scopes: Option<Vec<Scope>>, businesses: Option<Vec<String>>| AuthClient {
        name: name.into(),
        token: token.into(),
        rate_limit: None,
        scopes,
        businesses,
    };
    let clients = Clients::new(&Auth {
        clients: vec![
            client("writer", "writer-token-0123456789", Some(vec![Scope::Write]), None),
            client("archive-app", "archive-token-0123456789", None, Some(vec!["archive".into()])),
        ],
        allow_unauthenticated: false,
    });
    let (router, input) = router(clients, 1000, WhenFull::Block, Health::default());
    let downstream = answer_acks(input);
    let request = |method: &str, path: &str, token: &str, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let pgc = r#"{"uid":1,"business":"pgc","oid":9,"progress":30}"#;
    let forbidden = [
        ("GET", "/v1/users/7/history", "writer-token-0123456789", ""),
        ("GET", "/v1/users/7/progress?items=archive:9", "writer-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history?all=true", "writer-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history?business=archive", "writer-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history/archive/9", "writer-token-0123456789", ""),
        ("PUT", "/v1/users/7/recording", "writer-token-0123456789", r#"{"paused":true}"#),
        ("POST", "/v1/events", "archive-token-0123456789", pgc),
        ("GET", "/v1/users/7/history?business=pgc", "archive-token-0123456789", ""),
        ("GET", "/v1/users/7/progress?items=pgc:9", "archive-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history?all=true", "archive-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history?business=pgc,archive", "archive-token-0123456789", ""),
        ("DELETE", "/v1/users/7/history/pgc/9", "archive-token-0123456789", ""),
        ("PUT", "/v1/users/7/recording", "archive-token-0123456789", r#"{"paused":true}"#),
    ];
    for (method, path, token, body) in forbidden {
        let (status, _, answer) = send(&router, request(method, path, token, body)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path} by {token}: {answer}"
        );
    }
    // What each may do passes (the write is answered; without reads the
    // read routes answer 501, past the scope check).
    let (status, _, answer) = send(&router, request("POST", "/v1/events", "writer-token-0123456789", ONE)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) = send(&router, request("POST", "/v1/events", "archive-token-0123456789", ONE)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) =
        send(&router, request("DELETE", "/v1/users/7/history?business=archive", "archive-token-0123456789", "")).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{answer}");
    drop(router);
    let seen = downstream.await.unwrap();
    let ops: Vec<&Op> = seen.iter().flat_map(|batch| &batch.ops).collect();
    assert_eq!(ops.len(), 2, "only the two allowed reports reach the pipeline: {ops:?}");
    assert!(ops.iter().all(|op| matches!(op, Op::Upsert(record) if record.business == "archive")), "{ops:?}");
}
