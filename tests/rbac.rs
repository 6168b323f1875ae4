//! RBAC and tenant scoping, generated from the route table
//! (`callstream::api::routes::routes()`): a route added there is covered
//! here without touching this file (unless it names a new kind of id, which
//! `Fixture::ids` must then learn — the test says so).
//!
//! Runs against a real gateway on 127.0.0.1 with a live Twilio-format
//! stream open, so the routes that act on live calls see a real one.

mod common;

use std::collections::HashMap;

use callstream::api::rbac::Permission;
use callstream::api::routes::{routes, Access, Route};
use callstream::store::Role;
use common::mock_twilio::MockTwilio;
use common::{http_text, http_text_or_stream, Call, TestServer, Ws};
use futures::SinkExt;

/// Two tenants: A (the server's own, with a live call) and B, each with a
/// key per role.
struct Fixture {
    server: TestServer,
    /// (tenant, role) → API key; tenant is "A" or "B".
    keys: HashMap<(&'static str, Role), String>,
    /// Path parameter values, by the path segment before them, for tenant A.
    ids: HashMap<&'static str, String>,
    _stream: Ws,
    _mock: MockTwilio,
}

impl Fixture {
    async fn new() -> Self {
        let mock = MockTwilio::start(Vec::new()).await;
        let base = mock.base_url.clone();
        let server =
            TestServer::start_with(move |cfg| cfg.providers.twilio.api_base_url = base).await;
        let other = server.store.create_tenant("Other", None).await.unwrap();
        let mut keys = HashMap::new();
        for &role in Role::ALL {
            for (tenant, id) in [("A", &server.tenant_id), ("B", &other.id)] {
                let user = server
                    .store
                    .create_user(id, role.as_str(), None, role)
                    .await
                    .unwrap();
                keys.insert((tenant, role), user.key.plaintext.expose().to_string());
            }
        }

        // A live call of tenant A, its stream kept open.
        let mut stream = server.connect_signed().await;
        let mut call = Call::new();
        stream.send(call.start(&[])).await.unwrap();
        let mut call_id = None;
        for _ in 0..200 {
            if let Some((_, id)) = server.state.sessions.open_calls().into_iter().next() {
                call_id = Some(id);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let call_id = call_id.expect("the stream opened a call");

        // A customer and a ticket of tenant A.
        let now = callstream::store::now_ms();
        let customer = server
            .store
            .create_customer(
                &server.tenant_id,
                &callstream::store::NewCustomer {
                    name: "Ann Customer".into(),
                    phone_numbers: vec!["+14155550123".into()],
                    email: None,
                },
                now,
            )
            .await
            .unwrap();
        let ticket = server
            .store
            .create_ticket(
                &server.tenant_id,
                &callstream::store::NewTicket {
                    subject: "Refund".into(),
                    status: callstream::store::TicketStatus::Open,
                    description: None,
                    customer_id: Some(customer.id.clone()),
                    call_id: None,
                    transcript_url: None,
                },
                now,
            )
            .await
            .unwrap();
        // A number of tenant A, bought through the API from the mock.
        let (status, number) = common::http(
            server.addr,
            "POST",
            "/v1/phone-numbers",
            Some(&server.api_key),
            Some(&serde_json::json!({"number": "+14155552671"})),
        )
        .await;
        assert_eq!(status, 201, "{number}");
        let number_id = number["id"].as_str().unwrap().to_string();
        // A recording of tenant A (a row only: metadata and scoping are what
        // these tests check; tests/recording_api.rs downloads real ones).
        let recording_id = callstream::store::new_id();
        server
            .store
            .create_recording(
                &server.tenant_id,
                &callstream::store::NewRecording {
                    id: &recording_id,
                    call_id: None,
                    source: callstream::store::RecordingSource::Provider,
                    status: callstream::store::RecordingStatus::Failed,
                    format: "wav",
                    channels: 1,
                    sample_rate: 8000,
                    storage_path: "none",
                    key_id: "none",
                    algorithm: "none",
                },
                callstream::store::now_ms(),
            )
            .await
            .unwrap();
        // A transcription job of tenant A.
        let payload = serde_json::json!({"call_id": call_id, "recording_id": "none"});
        let job = server
            .store
            .enqueue_job(
                &server.tenant_id,
                &callstream::store::NewJob {
                    kind: callstream::jobs::transcribe::KIND,
                    payload: &payload,
                    max_attempts: 1,
                    dedup_key: None,
                    run_after: None,
                },
                callstream::store::now_ms(),
            )
            .await
            .unwrap();

        // Add a resource kind here when a route names a new kind of id.
        let ids = HashMap::from([
            ("calls", call_id),
            ("assets", "call.js".to_string()),
            ("customers", customer.id),
            ("tickets", ticket.id),
            ("phone-numbers", number_id),
            ("recordings", recording_id),
            ("transcription-jobs", job.id),
        ]);
        Self {
            server,
            keys,
            ids,
            _stream: stream,
            _mock: mock,
        }
    }

    fn key(&self, tenant: &'static str, role: Role) -> &str {
        &self.keys[&(tenant, role)]
    }

    /// The route's path with tenant A's ids filled in.
    fn path(&self, route: &Route) -> String {
        let mut prev = "";
        let mut out = Vec::new();
        for seg in route.path.split('/') {
            if seg.starts_with('{') {
                let id = self.ids.get(prev).unwrap_or_else(|| {
                    panic!(
                        "{} {}: no fixture id for `{prev}`: add one to Fixture::ids in tests/rbac.rs",
                        route.method, route.path
                    )
                });
                out.push(id.clone());
            } else {
                out.push(seg.to_string());
            }
            prev = seg;
        }
        out.join("/")
    }

    async fn call(&self, route: &Route, path: &str, key: Option<&str>) -> (u16, String) {
        if route.path == "/v1/events" {
            // An endless event stream: its status is what counts here.
            return http_text_or_stream(self.server.addr, route.method.as_str(), path, key).await;
        }
        let body = example_body(route);
        http_text(
            self.server.addr,
            route.method.as_str(),
            path,
            key,
            body.as_ref(),
        )
        .await
    }
}

/// A minimal valid body for routes that take one. Without an entry a route
/// gets `{}`: its permission check runs before the body is read either way.
fn example_body(route: &Route) -> Option<serde_json::Value> {
    match (route.method.as_str(), route.path) {
        ("POST", "/v1/calls/{id}/stream/messages") => Some(serde_json::json!({"type": "clear"})),
        ("PUT", "/v1/settings/telephony") => {
            Some(serde_json::to_value(callstream::store::TenantSettings::default()).unwrap())
        }
        ("POST" | "PUT" | "PATCH", _) => Some(serde_json::json!({})),
        _ => None,
    }
}

/// DELETE routes last, so they do not remove what other routes read.
fn table() -> Vec<Route> {
    let mut table = routes();
    table.sort_by_key(|r| r.method == axum::http::Method::DELETE);
    table
}

fn error_of(body: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_exactly_its_permissions_on_every_route() {
    let f = Fixture::new().await;
    let mut cells = 0;
    let table = table();
    for route in &table {
        let path = f.path(route);
        let what = format!("{} {}", route.method, route.path);
        match route.access.permission() {
            Some(permission) => {
                for &role in Role::ALL {
                    let (status, body) = f.call(route, &path, Some(f.key("A", role))).await;
                    if permission.granted_to(role) {
                        assert!(
                            ![401, 403, 500].contains(&status),
                            "{what} as {role}: {status} {body}"
                        );
                    } else {
                        assert_eq!(status, 403, "{what} as {role}: {body}");
                        let err = error_of(&body);
                        assert_eq!(err["code"], "forbidden", "{what}");
                        assert_eq!(err["permission"], permission.as_str(), "{what}");
                    }
                    cells += 1;
                }
                // No key, a malformed one, a well-formed unknown one: 401.
                for key in [None, Some("nope"), Some("csk_0123456789ab_unknown")] {
                    let (status, body) = f.call(route, &path, key).await;
                    assert_eq!(status, 401, "{what} with key {key:?}: {body}");
                    assert_eq!(error_of(&body)["code"], "unauthorized");
                }
                // The key in the query string counts only where declared.
                let sep = if path.contains('?') { '&' } else { '?' };
                let (status, body) = f
                    .call(
                        route,
                        &format!("{path}{sep}access_token={}", f.key("A", Role::Admin)),
                        None,
                    )
                    .await;
                if matches!(route.access, Access::KeyOrQueryToken(_)) {
                    assert!(![401, 403].contains(&status), "{what}: {status} {body}");
                } else {
                    assert_eq!(status, 401, "{what} with ?access_token: {body}");
                }
            }
            None => {
                // Public: API keys change nothing.
                let (anonymous, _) = f.call(route, &path, None).await;
                assert_ne!(anonymous, 401, "{what}");
                for &role in Role::ALL {
                    let (status, body) = f.call(route, &path, Some(f.key("A", role))).await;
                    assert_eq!(status, anonymous, "{what} as {role}: {body}");
                    cells += 1;
                }
            }
        }
    }
    assert_eq!(cells, table.len() * Role::ALL.len());
    eprintln!(
        "permission matrix: {} routes x {} roles = {cells} cells ({} permissions)",
        table.len(),
        Role::ALL.len(),
        Permission::ALL.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let f = Fixture::new().await;
    let mut checked = 0;
    for route in &table() {
        if route.access.permission().is_none() || !route.path.contains('{') {
            continue;
        }
        let path = f.path(route);
        let what = format!("{} {}", route.method, route.path);
        // Tenant B's admin may do anything, so only scoping can refuse it.
        let (status, body) = f.call(route, &path, Some(f.key("B", Role::Admin))).await;
        assert_eq!(status, 404, "{what} with another tenant's id: {body}");
        assert_eq!(error_of(&body)["code"], "not_found", "{what}");
        for id in f.ids.values() {
            assert!(!body.contains(id.as_str()), "{what} leaks an id: {body}");
        }
        // The same id works for its own tenant, so the 404 above is scoping.
        let (status, body) = f.call(route, &path, Some(f.key("A", Role::Admin))).await;
        assert_ne!(status, 404, "{what} with its own tenant's id: {body}");
        checked += 1;
    }
    assert!(checked > 0);
    eprintln!("cross-tenant: {checked} routes with ids answer 404");
}

#[test]
fn the_table_is_well_formed() {
    let table = routes();
    let mut seen = std::collections::HashSet::new();
    for route in &table {
        assert!(
            seen.insert((route.method.clone(), route.path)),
            "{} {} declared twice",
            route.method,
            route.path
        );
        // Under /v1 only provider callbacks (signed by the provider) and
        // the recording download (a link signed by us, naming tenant,
        // recording and expiry) may skip the API key. Listed by exact
        // path: nothing else joins them by accident.
        const SIGNED_LINKS: &[&str] = &["/v1/recordings/{id}/download"];
        if let Access::Public(why) = route.access {
            assert!(!why.is_empty());
            assert!(
                !route.path.starts_with("/v1/")
                    || route.path.starts_with("/v1/providers/")
                    || (SIGNED_LINKS.contains(&route.path)
                        && route.method == axum::http::Method::GET),
                "{} {} is public under /v1",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test]
async fn a_disabled_user_is_locked_out() {
    let server = TestServer::start().await;
    let user = server
        .store
        .create_user(&server.tenant_id, "Ann", None, Role::Agent)
        .await
        .unwrap();
    let key = user.key.plaintext.expose();
    let (status, _) = http_text(server.addr, "GET", "/v1/calls", Some(key), None).await;
    assert_eq!(status, 200);
    server
        .store
        .disable_user(&server.tenant_id, &user.user.id)
        .await
        .unwrap();
    let (status, _) = http_text(server.addr, "GET", "/v1/calls", Some(key), None).await;
    assert_eq!(status, 401);
}
