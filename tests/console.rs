//! Sign-in for people and the tenant event stream (issue 11, items 1 and 3).
//!
//! - Sessions through the router (`oneshot`): sign-in sets an HttpOnly,
//!   SameSite cookie (Secure behind https) that authenticates `/v1` with the
//!   user's role; CSRF-less or foreign-origin writes are refused, API keys
//!   are exempt; sign-out, idle and absolute expiry and disabling kill the
//!   session; failed sign-ins are limited per account and per address with
//!   `Retry-After`; a cookie of one tenant reads nothing of another.
//! - `/v1/events` on a real gateway: a real call (Twilio frames of real
//!   speech, recorded and transcribed by Whisper) yields `call.started`,
//!   `call.completed`, `recording.ready` and `transcript.ready`; resuming
//!   from a `Last-Event-ID` yields exactly the rest; agents see no
//!   recordings; tenants see only their own events; the WebSocket form
//!   resumes by `?last_event_id=`.
//! - The CLI: `user create --password-stdin`, `user set-password`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use callstream::secret::Secret;
use callstream::store::{EventType, Role};
use common::*;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

/// A user of the server's tenant (or `tenant`) who can sign in.
async fn person(server: &TestServer, tenant: &str, email: &str, role: Role) -> String {
    let user = server
        .store
        .create_user(tenant, email, Some(email), role)
        .await
        .unwrap()
        .user;
    server
        .store
        .set_user_password(tenant, &user.id, &Secret::new(PASSWORD))
        .await
        .unwrap();
    user.id
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(server: &TestServer, req: Request<Body>) -> Resp {
    let resp = callstream::app(server.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn login_request(tenant: &str, email: &str, password: &str, from: Option<&str>) -> Request<Body> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("tenant", tenant)
        .append_pair("email", email)
        .append_pair("password", password)
        .finish();
    let mut req = Request::post("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    if let Some(ip) = from {
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    req
}

/// Signs in; returns the `Cookie` header value and the CSRF token.
async fn sign_in(server: &TestServer, tenant: &str, email: &str) -> (String, String) {
    let resp = send(server, login_request(tenant, email, PASSWORD, None)).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.body);
    assert_eq!(resp.headers[header::LOCATION], "/ui/");
    let set = resp.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    let info = send(
        server,
        with_cookie(Request::get("/ui/session"), &cookie, None, None),
    )
    .await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    let csrf = info.json()["csrf_token"].as_str().unwrap().to_string();
    (cookie, csrf)
}

fn with_cookie(
    req: axum::http::request::Builder,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut req = req.header(header::COOKIE, cookie);
    if let Some(token) = csrf {
        req = req.header("x-csrf-token", token);
    }
    match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    }
}

fn settings_doc() -> Value {
    serde_json::to_value(callstream::store::TenantSettings::default()).unwrap()
}

#[tokio::test]
async fn a_session_authenticates_the_api_with_csrf_on_writes() {
    let server = TestServer::start().await;
    let t = server.tenant_id.clone();
    person(&server, &t, "ada@example.com", Role::Admin).await;

    let resp = send(
        &server,
        login_request(&t, "Ada@Example.com", PASSWORD, None),
    )
    .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let set = resp.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with("callstream_session=cs_"), "{set}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http public URL: {set}");

    let (cookie, csrf) = sign_in(&server, &t, "ada@example.com").await;
    let info = send(
        &server,
        with_cookie(Request::get("/ui/session"), &cookie, None, None),
    )
    .await;
    let info = info.json();
    assert_eq!(info["role"], "admin");
    assert_eq!(info["email"], "ada@example.com");
    assert!(info["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("SETTINGS_MANAGE")));

    // Reads need no token.
    let r = send(
        &server,
        with_cookie(Request::get("/v1/calls"), &cookie, None, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Writes do: none, a wrong one, another origin.
    let put = || Request::put("/v1/settings/telephony");
    let r = send(
        &server,
        with_cookie(put(), &cookie, None, Some(settings_doc())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["code"], "csrf_failed");
    let r = send(
        &server,
        with_cookie(put(), &cookie, Some("forged"), Some(settings_doc())),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "csrf_failed");
    let mut foreign = with_cookie(put(), &cookie, Some(&csrf), Some(settings_doc()));
    foreign
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(send(&server, foreign).await.status, StatusCode::FORBIDDEN);
    let r = send(
        &server,
        with_cookie(put(), &cookie, Some(&csrf), Some(settings_doc())),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Another session's token is not this one's.
    let (_, other_csrf) = sign_in(&server, &t, "ada@example.com").await;
    let r = send(
        &server,
        with_cookie(put(), &cookie, Some(&other_csrf), Some(settings_doc())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // An API key carries no ambient credential: no token needed.
    let (status, _) = http(
        server.addr,
        "PUT",
        "/v1/settings/telephony",
        Some(&server.api_key),
        Some(&settings_doc()),
    )
    .await;
    assert_eq!(status, 200);

    // Sign-out needs the token too, then the session is dead everywhere.
    let logout = |csrf: Option<&str>| {
        let body = csrf.map(|c| format!("csrf={c}")).unwrap_or_default();
        Request::post("/ui/logout")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    assert_eq!(
        send(&server, logout(None)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = send(&server, logout(Some(&csrf))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/ui/login");
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    for path in ["/v1/calls", "/ui/session"] {
        let r = send(
            &server,
            with_cookie(Request::get(path), &cookie, None, None),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let server = TestServer::start_with(|cfg| {
        cfg.public_url = Some("https://gw.example.com".parse().unwrap());
    })
    .await;
    let t = server.tenant_id.clone();
    person(&server, &t, "ada@example.com", Role::Admin).await;
    let resp = send(
        &server,
        login_request(&t, "ada@example.com", PASSWORD, None),
    )
    .await;
    let set = resp.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test]
async fn roles_and_tenants_bound_what_a_cookie_reads() {
    let server = TestServer::start().await;
    let t = server.tenant_id.clone();
    person(&server, &t, "al@example.com", Role::Agent).await;
    let other = server.store.create_tenant("Other", None).await.unwrap();
    person(&server, &other.id, "oz@example.com", Role::Admin).await;
    let call = server
        .store
        .start_stream_call(
            &t,
            &stream_call("CA00000000000000000000000000000001"),
            1_000,
        )
        .await
        .unwrap();

    let (agent, agent_csrf) = sign_in(&server, &t, "al@example.com").await;
    let info = send(
        &server,
        with_cookie(Request::get("/ui/session"), &agent, None, None),
    )
    .await;
    let perms = info.json()["permissions"].clone();
    assert!(!perms.as_array().unwrap().contains(&json!("SETTINGS_READ")));
    // An agent's browser cannot reach admin API calls, token or not.
    for path in ["/v1/settings/telephony", "/v1/usage"] {
        let r = send(&server, with_cookie(Request::get(path), &agent, None, None)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(r.json()["error"]["code"], "forbidden");
    }
    let r = send(
        &server,
        with_cookie(
            Request::put("/v1/settings/telephony"),
            &agent,
            Some(&agent_csrf),
            Some(settings_doc()),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["permission"], "SETTINGS_MANAGE");
    let path = format!("/v1/calls/{}", call.id);
    let r = send(
        &server,
        with_cookie(Request::get(&path), &agent, None, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Another tenant's admin: the call does not exist for them; the same
    // e-mail and password do not open this tenant.
    let (oz, _) = sign_in(&server, &other.id, "oz@example.com").await;
    let r = send(&server, with_cookie(Request::get(&path), &oz, None, None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &server,
        with_cookie(Request::get("/v1/calls"), &oz, None, None),
    )
    .await;
    assert_eq!(r.json()["calls"], json!([]));
    let r = send(&server, login_request(&t, "oz@example.com", PASSWORD, None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

fn stream_call(sid: &str) -> callstream::store::StreamCall<'_> {
    callstream::store::StreamCall {
        provider: "twilio",
        external_call_id: sid,
        stream_id: "MZ00000000000000000000000000000001",
        direction: callstream::store::Direction::Inbound,
        from_number: None,
        to_number: None,
    }
}

#[tokio::test]
async fn sessions_expire_and_die_with_their_user() {
    let server = TestServer::start().await;
    let t = server.tenant_id.clone();
    let user = person(&server, &t, "ann@example.com", Role::Supervisor).await;
    let get = |cookie: &str| with_cookie(Request::get("/v1/calls"), cookie, None, None);

    // Idle: unused for longer than auth.session_idle_minutes.
    let (cookie, _) = sign_in(&server, &t, "ann@example.com").await;
    assert_eq!(send(&server, get(&cookie)).await.status, StatusCode::OK);
    let idle_ms = server.state.config.auth.session_lifetime().idle_ms;
    sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at - $1")
        .bind(idle_ms)
        .execute(server.store.pool())
        .await
        .unwrap();
    assert_eq!(
        send(&server, get(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.store.count_user_sessions(&t, &user).await.unwrap(),
        0
    );

    // Absolute: past its end however busy it was.
    let (cookie, _) = sign_in(&server, &t, "ann@example.com").await;
    sqlx::query("UPDATE sessions SET expires_at = $1")
        .bind(callstream::store::now_ms())
        .execute(server.store.pool())
        .await
        .unwrap();
    assert_eq!(
        send(&server, get(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Disabled: its sessions die and it cannot sign in again.
    let (cookie, _) = sign_in(&server, &t, "ann@example.com").await;
    server.store.disable_user(&t, &user).await.unwrap();
    assert_eq!(
        send(&server, get(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = send(
        &server,
        login_request(&t, "ann@example.com", PASSWORD, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_sign_ins_are_limited_with_a_clear_message() {
    let server = TestServer::start_with(|cfg| {
        cfg.auth.login_max_failures_per_account = 3;
        cfg.auth.login_max_failures_per_address = 5;
    })
    .await;
    let t = server.tenant_id.clone();
    person(&server, &t, "ann@example.com", Role::Agent).await;
    person(&server, &t, "bob@example.com", Role::Agent).await;

    for _ in 0..3 {
        let r = send(
            &server,
            login_request(&t, "ann@example.com", "wrong password", Some("10.0.0.1")),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r
            .body
            .contains("The organisation, e-mail or password is not right."));
        assert!(
            !r.body.contains("wrong password"),
            "the password is not echoed"
        );
    }
    // The account is locked for the window, from any address, even with
    // the right password.
    let r = send(
        &server,
        login_request(&t, "ann@example.com", PASSWORD, Some("10.0.0.2")),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(
        r.body
            .contains("Too many failed sign-in attempts. Try again in 15 minutes."),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"role="alert""#));
    // Other accounts are not locked out by it …
    let r = send(
        &server,
        login_request(&t, "bob@example.com", PASSWORD, Some("10.0.0.1")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // … until the guessing address runs out of its own tries; unknown
    // accounts count like real ones.
    for email in ["nobody@example.com", "bob@example.com"] {
        let r = send(
            &server,
            login_request(&t, email, "nope nope nope", Some("10.0.0.1")),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{email}");
    }
    let r = send(
        &server,
        login_request(&t, "bob@example.com", PASSWORD, Some("10.0.0.1")),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(
        &server,
        login_request(&t, "bob@example.com", PASSWORD, Some("10.0.0.3")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // A form with fields missing is a clear 400, and counts for nothing.
    let r = send(&server, login_request(&t, "", "", Some("10.0.0.9"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .body
        .contains("Enter your organisation ID, e-mail and password."));
}

// ---------------------------------------------------------------------------
// Events

/// A `/v1/events` Server-Sent Events reader.
struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    async fn open(addr: SocketAddr, key: &str, last_event_id: Option<i64>) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("http://{addr}/v1/events"))
            .bearer_auth(key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event: its `id:` line and its JSON.
    async fn next(&mut self) -> (i64, Value) {
        let read = async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut id, mut data) = (None, None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().parse::<i64>().unwrap());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                        }
                    }
                    if let (Some(id), Some(data)) = (id, data) {
                        return (id, data);
                    }
                    continue; // a keep-alive comment
                }
                let chunk = self
                    .body
                    .next()
                    .await
                    .expect("the stream stays open")
                    .unwrap();
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("an event arrives")
    }

    /// Events until one of type `last` (inclusive).
    async fn until(&mut self, last: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (id, e) = self.next().await;
            assert_eq!(e["id"], id, "the SSE id is the event's id");
            let done = e["type"] == last;
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_call_streams_its_events_and_a_reconnect_resumes_exactly() {
    let mut server = TestServer::start_gateway(|cfg| {
        cfg.jobs.poll_interval_ms = 20;
    })
    .await;
    let t = server.tenant_id.clone();
    let agent_key = server
        .store
        .create_api_key(&t, "agent", Role::Agent)
        .await
        .unwrap();
    let other = server.store.create_tenant("Other", None).await.unwrap();
    let other_key = server
        .store
        .create_api_key(&other.id, "admin", Role::Admin)
        .await
        .unwrap();
    let mut admin = Sse::open(server.addr, &server.api_key, None).await;
    let mut stranger = Sse::open(server.addr, other_key.plaintext.expose(), None).await;

    // A real call: JFK on both tracks, then stop.
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let mut seen = admin.until("call.completed").await;
    while !(types(&seen).contains(&"recording.ready") && types(&seen).contains(&"transcript.ready"))
    {
        seen.push(admin.next().await.1);
    }
    assert_eq!(
        types(&seen)[..2],
        ["call.started", "call.completed"],
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    let call_id = seen[0]["call_id"].as_str().unwrap().to_string();
    for e in &seen {
        assert_eq!(e["call_id"], call_id.as_str(), "{e}");
    }
    let ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let stored = server.store.get_call(&t, &call_id).await.unwrap();
    assert_eq!(seen[1]["data"]["status"], "completed");
    let rec = seen
        .iter()
        .find(|e| e["type"] == "recording.ready")
        .unwrap();
    let tr = seen
        .iter()
        .find(|e| e["type"] == "transcript.ready")
        .unwrap();
    assert_eq!(
        rec["data"]["recording_id"].as_str(),
        stored.recording_id.as_deref()
    );
    assert_eq!(
        tr["data"]["transcript_id"].as_str(),
        stored.transcript_id.as_deref()
    );
    assert_eq!(tr["data"]["source"], "live");
    // The events hold ids, not what was said.
    for e in &seen {
        assert!(!e.to_string().to_lowercase().contains("americans"), "{e}");
    }

    // Reconnect after the first: exactly the rest, in order.
    let mut resumed = Sse::open(server.addr, &server.api_key, Some(ids[0])).await;
    let mut rest = Vec::new();
    for _ in 1..seen.len() {
        rest.push(resumed.next().await.1);
    }
    assert_eq!(rest, seen[1..]);

    // An agent, from the start: the same call events, no recording.
    let mut agent = Sse::open(server.addr, agent_key.plaintext.expose(), Some(0)).await;
    server
        .store
        .publish_event(
            &t,
            EventType::CallHeld,
            Some(&call_id),
            json!({"sentinel": true}),
            1,
        )
        .await;
    let agent_saw = agent.until("call.held").await;
    assert_eq!(
        types(&agent_saw),
        types(&seen)
            .into_iter()
            .filter(|t| *t != "recording.ready")
            .chain(["call.held"])
            .collect::<Vec<_>>()
    );

    // The other tenant saw none of it: its first event is its own.
    server
        .store
        .publish_event(
            &other.id,
            EventType::CallRinging,
            None,
            json!({"mine": true}),
            1,
        )
        .await;
    let (id, first) = stranger.next().await;
    assert_eq!((id, first["data"]["mine"].clone()), (1, json!(true)));

    // The WebSocket form, resuming by query.
    let url = format!(
        "ws://{}/v1/events/ws?last_event_id={}&access_token={}",
        server.addr, ids[1], server.api_key
    );
    let (mut events_ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), events_ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let next: Value = serde_json::from_str(next.to_text().unwrap()).unwrap();
    assert_eq!(next, seen[2]);

    drop((admin, resumed, agent, stranger, events_ws));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// CLI

#[test]
fn passwords_come_from_stdin_only() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_callstream");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--data-dir", data])
            .env_remove("CALLSTREAM_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["tenant", "create", "Acme"], "");
    assert!(out.status.success());
    let tenant: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant = tenant["tenant_id"].as_str().unwrap();
    let create = [
        "user",
        "create",
        "--tenant",
        tenant,
        "--role",
        "agent",
        "--email",
        "al@example.com",
        "--password-stdin",
    ];
    let out = run(&create, "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));
    let out = run(&create, &format!("{PASSWORD}\nignored second line\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(user["password_set"], true);
    // Without --password-stdin: as before, no password.
    let out = run(
        &["user", "create", "--tenant", tenant, "--role", "agent"],
        "",
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["password_set"], false);

    let set = |who: &[&str], stdin: &str| {
        let mut args = vec![
            "user",
            "set-password",
            "--tenant",
            tenant,
            "--password-stdin",
        ];
        args.extend_from_slice(who);
        run(&args, stdin)
    };
    let out = set(&["--email", "AL@example.com"], "a brand new passphrase\r\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = set(
        &["--email", "nobody@example.com"],
        "a brand new passphrase\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user with that e-mail"));
    let out = set(
        &["--user", user["user_id"].as_str().unwrap()],
        "another good one!\n",
    );
    assert!(out.status.success());
    // Never from argv.
    let out = run(
        &[
            "user",
            "set-password",
            "--tenant",
            tenant,
            "--email",
            "al@example.com",
            "--password",
            "x",
        ],
        "",
    );
    assert!(!out.status.success());
    // The passwords are nowhere in the database file.
    let db = std::fs::read(dir.path().join("callstream.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    for pw in [PASSWORD, "a brand new passphrase", "another good one!"] {
        assert!(!db.contains(pw), "{pw}");
    }
}
