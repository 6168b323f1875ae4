//! `app(state)` driven in-process with `oneshot`: no sockets.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use callstream::config::{Config, Overrides};
use callstream::store::{Role, Store};
use callstream::{app, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixture {
    state: AppState,
    key: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(
        None,
        Vec::new(),
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let store = Store::connect(&cfg.database_url()).await.unwrap();
    let tenant = store.create_tenant("Acme", None).await.unwrap();
    let key = store
        .create_api_key(&tenant.id, "k", Role::Agent)
        .await
        .unwrap();
    let secret = callstream::load_token_secret(&cfg).unwrap();
    Fixture {
        state: AppState::new(store, cfg, secret),
        key: key.plaintext.expose().to_string(),
        _dir: dir,
    }
}

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let f = fixture().await;
    let (status, _, body) = send(&f.state, get("/healthz", None)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, headers, body) = send(&f.state, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for name in [
        "callstream_active_streams",
        "callstream_frames_in_total",
        "callstream_frames_dropped_total{reason=\"malformed\"}",
        "callstream_frame_handling_seconds_bucket",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn calls_need_a_valid_key_and_errors_are_json() {
    let f = fixture().await;
    let (status, headers, body) = send(&f.state, get("/v1/calls", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");

    let (status, _, body) = send(&f.state, get("/v1/calls", Some(&f.key))).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["calls"], serde_json::json!([]));
    assert_eq!(v["next_cursor"], serde_json::Value::Null);

    let (status, _, body) = send(&f.state, get("/v1/calls?limit=0", Some(&f.key))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(&f.state, get("/v1/calls?bogus=1", Some(&f.key))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("\"bad_request\""), "{body}");
    let (status, _, body) = send(
        &f.state,
        get(
            "/v1/calls/00000000-0000-0000-0000-000000000000",
            Some(&f.key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"));
}

#[tokio::test]
async fn stream_endpoint_refuses_plain_http() {
    let f = fixture().await;
    // Not a WebSocket upgrade at all.
    let (status, _, _) = send(&f.state, get("/v1/providers/twilio/stream", None)).await;
    assert!(status.is_client_error(), "{status}");
}

#[tokio::test]
async fn oversized_and_malformed_json_bodies_are_refused() {
    let f = fixture().await;
    let big = "x".repeat(300 * 1024);
    let req = Request::post("/v1/calls/x/stream/messages")
        .header("authorization", format!("Bearer {}", f.key))
        .header("content-type", "application/json")
        .body(Body::from(format!(
            "{{\"type\":\"mark\",\"name\":\"{big}\"}}"
        )))
        .unwrap();
    let (status, _, _) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/v1/calls/x/stream/messages")
        .header("authorization", format!("Bearer {}", f.key))
        .header("content-type", "application/json")
        .body(Body::from("{\"type\":\"shout\"}"))
        .unwrap();
    let (status, _, body) = send(&f.state, req).await;
    assert!(status.is_client_error());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
}
