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

#[tokio::test]
async fn telephony_settings_round_trip_and_bad_documents_change_nothing() {
    let f = fixture().await;
    let store = &f.state.store;
    let tenant = store
        .authenticate_api_key(&f.key)
        .await
        .unwrap()
        .unwrap()
        .tenant_id;
    let admin = store
        .create_user(&tenant, "Ada", None, Role::Admin)
        .await
        .unwrap();
    let admin = admin.key.plaintext.expose();
    let other = store.create_tenant("Other", None).await.unwrap();
    let other_admin = store
        .create_user(&other.id, "Oz", None, Role::Admin)
        .await
        .unwrap();
    let put = |body: String| {
        Request::put("/v1/settings/telephony")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };

    let (status, _, body) = send(&f.state, get("/v1/settings/telephony", Some(admin))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let defaults: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(defaults["record_calls"], true);
    assert_eq!(
        defaults["quotas"]["max_concurrent_streams"],
        serde_json::Value::Null
    );

    let mut wanted = defaults.clone();
    wanted["pii_redaction"] = true.into();
    wanted["record_calls"] = false.into();
    wanted["retention_days"] = 90.into();
    wanted["consent_announcement"] = "This call may be recorded for quality.".into();
    wanted["quotas"]["max_concurrent_streams"] = 20.into();
    wanted["quotas"]["monthly_transcription_minutes"] = 50_000.into();
    let (status, _, body) = send(&f.state, put(wanted.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        wanted
    );
    let (_, _, body) = send(&f.state, get("/v1/settings/telephony", Some(admin))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        wanted
    );
    // What live transcription reads (the PII switch) sees the change.
    assert!(store.tenant_settings(&tenant).await.unwrap().pii_redaction);

    // Each bad document: 400 naming the problem, nothing written.
    let mut missing = wanted.clone();
    missing.as_object_mut().unwrap().remove("transcribe_live");
    let mut unknown = wanted.clone();
    unknown["record_video"] = true.into();
    let mut unknown_quota = wanted.clone();
    unknown_quota["quotas"]["max_agents"] = 3.into();
    let mut wrong_type = wanted.clone();
    wrong_type["retention_days"] = "ninety".into();
    let mut negative = wanted.clone();
    negative["quotas"]["monthly_recording_minutes"] = (-1).into();
    let mut zero_days = wanted.clone();
    zero_days["retention_days"] = 0.into();
    let mut blank = wanted.clone();
    blank["consent_announcement"] = " ".into();
    let mut quotas_array = wanted.clone();
    quotas_array["quotas"] = serde_json::json!([]);
    let mut long = wanted.clone();
    long["consent_announcement"] = "a".repeat(1001).into();
    for (body, says) in [
        (missing.to_string(), "transcribe_live"),
        (unknown.to_string(), "record_video"),
        (unknown_quota.to_string(), "max_agents"),
        (wrong_type.to_string(), "invalid type"),
        (negative.to_string(), "invalid value"),
        (zero_days.to_string(), "retention_days"),
        (blank.to_string(), "consent_announcement"),
        (long.to_string(), "consent_announcement"),
        ("{\"pii_redaction\": tru".to_string(), ""),
        ("[]".to_string(), "JSON object"),
        (quotas_array.to_string(), "`quotas` must be a JSON object"),
    ] {
        let (status, _, resp) = send(&f.state, put(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{resp}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{resp}"
        );
    }
    let (_, _, body) = send(&f.state, get("/v1/settings/telephony", Some(admin))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        wanted
    );

    // Another tenant's settings are its own.
    let (_, _, body) = send(
        &f.state,
        get(
            "/v1/settings/telephony",
            Some(other_admin.key.plaintext.expose()),
        ),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        defaults
    );

    // The fixture's agent may not read them; the 403 names the permission.
    let (status, _, body) = send(&f.state, get("/v1/settings/telephony", Some(&f.key))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["permission"], "SETTINGS_READ");
}
