//! The agent page (`/ui/calls/{id}`) in headless Chromium against a real
//! gateway on 127.0.0.1.
//!
//! - `page_shows_captions_from_the_caption_hub`: a real call streams over
//!   the Twilio endpoint while captions go through the server's own
//!   `CaptionHub` (the fan-out the transcription sinks publish to) and the
//!   real captions WebSocket to the page: classes, partial replaced in place
//!   by its final, escaping, time stamps, lag and reconnect, end, the key
//!   kept out of request lines, the CSP enforced.
//! - `live_call_is_captioned_on_the_page`: the same page captioning a real
//!   two-party call with the real Whisper model (tiny.en).
//! - `console_sign_in_per_role_on_a_real_serve`: the console (`/ui/login`,
//!   `/ui/`) on a `callstream serve` process, people made by the CLI:
//!   sign-in per role, role-scoped navigation, a real call's live events,
//!   an admin's settings change (CSRF header), an agent refused admin views
//!   and their API calls, sign-out killing the session.
//!
//! Needs Debian's chromium, Node.js and playwright-core
//! (`bash scripts/setup-browser.sh`); `tests/ui/driver.mjs` drives the
//! browser. Without them the tests say so and pass, except under CI, where
//! they fail. Screenshots go to `target/tmp/ui-*.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callstream::asr::live::{CaptionEvent, FinalSegment, LiveConfig};
use callstream::gateway::transcription::TranscriptionSinks;
use callstream::gateway::{NoSinks, SinkFactory};
use callstream::media::codec::Codec;
use callstream::media::Track;
use callstream::providers::twilio::signature;
use callstream::providers::twilio::stream::{frames, StreamTrack};
use callstream::AppState;
use common::{
    expect_close, http, jfk_frames, whisper_engine, Call, TestServer, Ws, AUTH_TOKEN, STREAM_PATH,
};
use futures::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------
// The speech engine

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn page_shows_captions_from_the_caption_hub() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let started = Instant::now();
    let server = ui_server(|_| Arc::new(NoSinks)).await;
    let mut call = TwilioCall::start(&server).await;
    call.stream(&jfk_frames()[..50], &[]).await; // 1 s, paced: the call is live
    let hub = server.state.captions.clone();
    let id = call.id.clone();
    hub.open(&server.tenant_id, &id);
    hub.publish(
        &id,
        fin(
            Track::Caller,
            1_240,
            3_400,
            "Hi, I was charged twice this month.",
        ),
    );
    let page = format!("http://{}/ui/calls/{id}", server.addr);
    let key = server.api_key.clone();

    // The key in the fragment: history arrives, the key leaves the URL.
    assert_eq!(
        browser.goto(&format!("{page}#access_token={key}")).await,
        200
    );
    browser
        .wait(&format!("{STATUS} === 'live' && {FINALS} === 1"))
        .await;
    let shown = browser.captions().await;
    assert_eq!(shown[0]["class"], "caption caller final");
    assert_eq!(shown[0]["who"], "Caller");
    assert_eq!(shown[0]["time"], "00:01");
    assert_eq!(shown[0]["text"], "Hi, I was charged twice this month.");
    assert_eq!(browser.eval("location.hash").await, "");
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('callstream.apiKey')")
            .await,
        key.as_str()
    );

    // Partials of the agent's utterance revise one tentative bubble; the
    // final replaces it in place.
    hub.publish(&id, partial(Track::Agent, 4_000, 4_700, "Sure, let me"));
    browser
        .wait("document.querySelector('.caption.agent.partial')?.textContent.includes('Sure, let me')")
        .await;
    let style = browser
        .eval(
            "(() => { const t = getComputedStyle(document.querySelector('.caption.agent.partial .text'));
                      return [t.fontStyle, t.color !== getComputedStyle(document.querySelector('.caption.caller .text')).color]; })()",
        )
        .await;
    assert_eq!(
        style,
        json!(["italic", true]),
        "partial text is italic and muted"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('.caption.agent').getAttribute('aria-hidden')")
            .await,
        "",
        "screen readers skip tentative text"
    );
    hub.publish(
        &id,
        partial(Track::Agent, 4_000, 5_400, "Sure, let me pull up"),
    );
    browser
        .wait("document.querySelector('.caption.agent.partial')?.textContent.includes('pull up')")
        .await;
    hub.publish(
        &id,
        fin(
            Track::Agent,
            4_080,
            6_100,
            "Sure, let me pull up your account.",
        ),
    );
    browser.wait(&format!("{FINALS} === 2")).await;
    let shown = browser.captions().await;
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[1]["class"], "caption agent final");
    assert_eq!(shown[1]["who"], "Agent");
    assert_eq!(shown[1]["text"], "Sure, let me pull up your account.");
    assert_eq!(shown[1]["hidden"], Value::Null);
    let replaced = assert_partial_became_final(&browser.log().await, "agent");
    assert_eq!(replaced, ["Sure, let me", "Sure, let me pull up"]);

    // Transcript text is text: markup in it is shown, never run.
    let hostile = r#"<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> "$42.10" & <b>twice</b>"#;
    hub.publish(&id, partial(Track::Caller, 65_300, 66_000, hostile));
    hub.publish(&id, fin(Track::Caller, 65_300, 69_000, hostile));
    hub.publish(
        &id,
        fin(
            Track::Agent,
            70_200,
            73_900,
            "I see two charges of $42.10 on the 3rd. I'll refund one now.",
        ),
    );
    hub.publish(
        &id,
        partial(Track::Caller, 75_000, 76_100, "Thank you, how long"),
    );
    browser
        .wait(&format!(
            "{FINALS} === 4 && document.querySelector('.caption.caller.partial')"
        ))
        .await;
    let shown = browser.captions().await;
    assert_eq!(shown[2]["text"], hostile);
    assert_eq!(shown[2]["time"], "01:05");
    assert_eq!(shown[4]["class"], "caption caller partial");
    assert_eq!(
        browser
            .eval("[document.querySelectorAll('#captions script, #captions img, #captions b').length, window.__pwned ?? null]")
            .await,
        json!([0, null])
    );
    let shot = browser.screenshot("ui-captions.png").await;

    // A watcher that falls behind is dropped (4001) and reconnects; the
    // history it gets again is not shown twice, and stale partials go. (This
    // runtime has one thread: the watcher cannot drain during the burst,
    // which overflows its queue of 256.)
    for i in 0..400 {
        hub.publish(&id, partial(Track::Agent, 80_000, 80_000 + i, "So, um"));
    }
    browser
        .wait(&format!(
            "window.__ui.history.some(h => h.status === 'lagged') && {STATUS} === 'live'"
        ))
        .await;
    hub.publish(
        &id,
        fin(
            Track::Caller,
            75_000,
            77_000,
            "Thank you, how long will it take?",
        ),
    );
    browser
        .wait(&format!(
            "{FINALS} === 5 && !document.querySelector('.partial')"
        ))
        .await;

    // The end of the transcript: ended, and no reconnect.
    hub.close(&id);
    browser.wait(&format!("{STATUS} === 'ended'")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(browser.eval(STATUS).await, "ended");
    let log = browser.log().await;
    assert_eq!(
        statuses(&log),
        [
            "connecting",
            "live",
            "lagged",
            "connecting",
            "live",
            "ended"
        ]
    );
    let finals: Vec<_> = browser
        .captions()
        .await
        .into_iter()
        .map(|c| c["time"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(finals, ["00:01", "00:04", "01:05", "01:10", "01:15"]);

    // Same origin only; the key only in the captions WebSocket's query (the
    // API's way for browsers), never in a page or asset request.
    let origin = format!("http://{}/", server.addr);
    let ws_origin = format!("ws://{}/", server.addr);
    let sockets: Vec<_> = log
        .requests
        .iter()
        .filter(|u| u.starts_with(&ws_origin))
        .collect();
    assert_eq!(sockets.len(), 2, "{:?}", log.requests);
    for url in &log.requests {
        assert!(
            url.starts_with(&origin) || url.starts_with(&ws_origin),
            "{url}"
        );
        assert_eq!(url.contains(&key), sockets.contains(&url), "{url}");
    }
    assert_no_errors(&log);

    // The CSP is in force: injected inline script does not run.
    let ran = browser
        .eval("(() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s); return window.__inline ?? null; })()")
        .await;
    assert_eq!(ran, Value::Null);
    browser
        .wait("window.__ui.violations.some(v => v.startsWith('script-src'))")
        .await;

    // A link with a wrong key (in this tab: only the fragment changes) asks
    // for another; the form's key is used.
    browser.goto(&format!("{page}#access_token=wrong")).await;
    browser
        .wait(&format!(
            "{STATUS} === 'error' && !document.getElementById('key-form').hidden"
        ))
        .await;
    browser.screenshot("ui-key-form.png").await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('callstream.apiKey')")
            .await,
        Value::Null
    );
    browser.fill("#key", &key).await;
    browser.click("#key-form button").await;
    // The call is no longer live on this node: its stored transcript (none
    // here), then the end.
    browser.wait(&format!("{STATUS} === 'ended'")).await;

    // A call this key cannot see.
    browser
        .goto(&format!("http://{}/ui/calls/no-such-call", server.addr))
        .await;
    browser
        .wait(&format!("{STATUS} === 'error' && document.getElementById('status').textContent.includes('No such call')"))
        .await;

    call.stop().await;
    browser.close().await;
    eprintln!(
        "ui: hub test {:.1} s (browser launch {:.1} s); screenshot {}",
        started.elapsed().as_secs_f64(),
        browser_launch_secs(),
        shot.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_call_is_captioned_on_the_page() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let started = Instant::now();
    let engine = whisper_engine();
    let server = ui_server(move |state| {
        Arc::new(TranscriptionSinks {
            engine,
            store: state.store.clone(),
            hub: state.captions.clone(),
            config: LiveConfig::default(),
            queue: 4096,
            tracker: state.sessions.tracker(),
            metrics: state.metrics.clone(),
            admission: callstream::gateway::transcription::LiveAdmission::new(4),
        })
    })
    .await;
    let mut call = TwilioCall::start(&server).await;
    browser
        .goto(&format!(
            "http://{}/ui/calls/{}#access_token={}",
            server.addr, call.id, server.api_key
        ))
        .await;
    browser.wait(&format!("{STATUS} === 'live'")).await;

    let (caller, agent) = two_party_frames();
    call.stream(&caller, &agent).await;
    let call_id = call.id.clone();
    call.stop().await;
    browser
        .wait_for(&format!("{STATUS} === 'ended'"), Duration::from_secs(60))
        .await;
    let shot = browser.screenshot("ui-live-call.png").await;

    let shown = browser.captions().await;
    let text_of = |track: &str| -> String {
        shown
            .iter()
            .filter(|c| c["class"] == format!("caption {track} final"))
            .map(|c| c["text"].as_str().unwrap().to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The page shows exactly the finals the gateway stored, on the right side.
    let path = format!("/v1/calls/{call_id}/transcript?format=json");
    let (status, export) = http(server.addr, "GET", &path, Some(&server.api_key), None).await;
    assert_eq!(status, 200);
    let stored_of = |track: &str| -> String {
        export["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["track"] == track)
            .map(|s| s["text"].as_str().unwrap().trim().to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for track in ["caller", "agent"] {
        assert!(
            !text_of(track).is_empty(),
            "no {track} final shown: {shown:?}"
        );
        assert_eq!(text_of(track), stored_of(track), "{shown:?}");
    }
    assert!(shown
        .iter()
        .all(|c| c["class"] != "caption caller partial" && c["class"] != "caption agent partial"));
    let log = browser.log().await;
    let replaced = ["caller", "agent"]
        .iter()
        .filter(|track| partial_became_final(&log, track).is_some())
        .count();
    assert!(
        replaced > 0,
        "no partial was replaced by its final: {:?}",
        log.history
    );
    assert_no_errors(&log);
    browser.close().await;
    eprintln!(
        "ui: live call test {:.1} s, {replaced} track(s) with a partial replaced by its final; screenshot {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}

/// The console on a real `callstream serve` process: people made with
/// `callstream user create --password-stdin`, signed in per role through the
/// form; each sees what their role may use; a real call's events appear
/// live; an admin changes a setting through the browser (CSRF header);
/// an agent can reach neither the admin view nor its API; signing out kills
/// the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_per_role_on_a_real_serve() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let serve = Serve::start().await;
    let base = format!("http://{}", serve.addr);

    // Admin: the sign-in link names the organisation.
    let login = format!("{base}/ui/login?tenant={}", serve.tenant_id);
    assert_eq!(browser.goto(&login).await, 200);
    assert_eq!(
        browser
            .eval("document.getElementById('tenant').value")
            .await,
        serve.tenant_id.as_str()
    );
    browser.fill("#email", "ada@example.com").await;
    browser.fill("#password", "not the password").await;
    browser.submit("form button[type=submit]").await;
    browser.wait("document.getElementById('login-error') && !document.getElementById('login-error').hidden").await;
    assert_eq!(
        browser
            .eval("document.getElementById('login-error').textContent")
            .await,
        "The organisation, e-mail or password is not right."
    );
    assert_eq!(
        browser.eval("document.getElementById('email').value").await,
        "ada@example.com"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('password').value")
            .await,
        "",
        "the password is not echoed"
    );
    browser.screenshot("ui-console-login-error.png").await;
    browser.fill("#password", PERSON_PASSWORD).await;
    browser.submit("form button[type=submit]").await;
    browser
        .wait("document.getElementById('user-role').textContent === 'admin'")
        .await;
    assert_eq!(browser.eval("location.pathname").await, "/ui/");
    assert_eq!(
        browser.eval(NAV).await,
        json!(["Activity", "Calls", "Usage", "Settings"])
    );
    assert_eq!(
        browser
            .eval("document.getElementById('user-name').textContent")
            .await,
        "Ada Admin"
    );
    assert_eq!(
        browser.eval("document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );

    // A real call: its events appear on the activity view as they happen.
    browser
        .wait("document.getElementById('view').dataset.state === 'live'")
        .await;
    serve.call().await;
    browser
        .wait_for(
            "['call.started', 'call.completed', 'recording.ready'].every(t => document.querySelector(`#events li[data-type=\"${t}\"]`))",
            Duration::from_secs(60),
        )
        .await;
    browser.screenshot("ui-console-admin-activity.png").await;

    // Settings: an admin changes one through the browser (PUT + CSRF token).
    browser.goto(&format!("{base}/ui/#settings")).await;
    browser
        .wait("document.getElementById('setting-pii_redaction')")
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('setting-pii_redaction').disabled")
            .await,
        false
    );
    browser.click("#setting-pii_redaction").await;
    browser.click("#settings-form button").await;
    browser
        .wait("document.getElementById('status').textContent === 'Settings saved.'")
        .await;
    let (status, settings) = http(
        serve.addr,
        "GET",
        "/v1/settings/telephony",
        Some(&serve.api_key),
        None,
    )
    .await;
    assert_eq!(
        (status, settings["pii_redaction"].clone()),
        (200, json!(true))
    );
    browser.screenshot("ui-console-admin-settings.png").await;
    // (The console's only error line is the wrong password's 401 above.)
    let log = browser.log().await;
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // Sign out: back to the form, and the session is dead.
    browser.submit("#logout button").await;
    assert_eq!(browser.eval("location.pathname").await, "/ui/login");
    browser.goto(&format!("{base}/ui/")).await;
    browser.wait("location.pathname === '/ui/login'").await;
    let status = browser
        .eval("fetch('/v1/calls', {credentials: 'same-origin'}).then(r => r.status)")
        .await;
    assert_eq!(status, 401);

    // Agent: no usage or settings, not even by URL or by API.
    browser.goto(&login).await;
    browser.fill("#email", "al@example.com").await;
    browser.fill("#password", PERSON_PASSWORD).await;
    browser.submit("form button[type=submit]").await;
    browser
        .wait("document.getElementById('user-role').textContent === 'agent'")
        .await;
    assert_eq!(browser.eval(NAV).await, json!(["Activity", "Calls"]));
    browser.goto(&format!("{base}/ui/#calls")).await;
    browser
        .wait("document.querySelectorAll('#view tbody tr').length === 1")
        .await;
    browser.screenshot("ui-console-agent-calls.png").await;
    browser.goto(&format!("{base}/ui/#settings")).await;
    browser
        .wait("document.getElementById('status').textContent === 'That page is not available to your role.'")
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('title').textContent")
            .await,
        "Activity"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('setting-pii_redaction')")
            .await,
        Value::Null
    );
    browser.screenshot("ui-console-agent-refused.png").await;
    let refused = browser
        .eval(
            "Promise.all([
               fetch('/v1/settings/telephony').then(r => r.status),
               fetch('/v1/usage').then(r => r.status),
               fetch('/v1/settings/telephony', {method: 'PUT', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.json()).then(b => b.error.code),
             ])",
        )
        .await;
    assert_eq!(refused, json!([403, 403, "csrf_failed"]));
    // The agent's activity, resumed from the start: call events, no recording.
    let seen = browser
        .eval(
            "new Promise(done => { const seen = []; const es = new EventSource('/v1/events');
               es.onopen = () => setTimeout(() => { es.close(); done(seen); }, 300); es.onmessage = m => seen.push(JSON.parse(m.data).type); })",
        )
        .await;
    assert_eq!(seen, json!([]), "a fresh stream starts with the next event");
    browser.submit("#logout button").await;
    let log = browser.log().await;
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    browser.close().await;
}

/// `/ui/` navigation labels, in order.
const NAV: &str = "[...document.querySelectorAll('#nav a')].map(a => a.textContent)";

const PERSON_PASSWORD: &str = "correct horse battery staple";

/// A `callstream serve` process (no Whisper: captions are not what these
/// tests look at) on a free port, with a tenant, an admin and an agent made
/// by the CLI.
struct Serve {
    addr: std::net::SocketAddr,
    tenant_id: String,
    api_key: String,
    child: std::process::Child,
    /// Twilio's REST API stand-in, where the gateway looks calls up.
    _twilio: common::mock_twilio::MockTwilio,
    _dir: tempfile::TempDir,
}

impl Serve {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap().to_string();
        let cli = |args: &[&str], stdin: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callstream"))
                .args(args)
                .args(["--data-dir", &data])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "callstream {args:?}");
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        let tenant = cli(
            &[
                "tenant",
                "create",
                "Acme",
                "--twilio-account-sid",
                common::ACCOUNT_SID,
                "--twilio-auth-token-stdin",
            ],
            &format!("{AUTH_TOKEN}\n"),
        );
        let tenant_id = tenant["tenant_id"].as_str().unwrap().to_string();
        for (role, name, email) in [
            ("admin", "Ada Admin", "ada@example.com"),
            ("agent", "Al Agent", "al@example.com"),
        ] {
            let line = format!("{PERSON_PASSWORD}\n");
            let args = [
                "user",
                "create",
                "--tenant",
                &tenant_id,
                "--role",
                role,
                "--name",
                name,
                "--email",
                email,
                "--password-stdin",
            ];
            assert_eq!(cli(&args, &line)["password_set"], true);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let twilio = common::mock_twilio::MockTwilio::start(Vec::new()).await;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_callstream"))
            .args(["serve", "--data-dir", &data, "--listen", &addr.to_string()])
            .env("CALLSTREAM_ASR__ENABLED", "false")
            .env(
                "CALLSTREAM_PROVIDERS__TWILIO__API_BASE_URL",
                twilio.base_url.as_str(),
            )
            .env_remove("CALLSTREAM_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let serve = Self {
            addr,
            tenant_id,
            api_key: tenant["api_key"].as_str().unwrap().to_string(),
            child,
            _twilio: twilio,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "callstream serve listens");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    /// Two seconds of a real call (JFK on both tracks), then its end.
    async fn call(&self) {
        let url = format!("ws://{}{STREAM_PATH}", self.addr);
        let mut req = url.as_str().into_client_request().unwrap();
        let sig = signature::compute(AUTH_TOKEN, &url, &[]);
        req.headers_mut()
            .insert("X-Twilio-Signature", sig.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut call = Call::new();
        ws.send(Message::text(frames::connected())).await.unwrap();
        ws.send(call.start(&[])).await.unwrap();
        common::send_audio(&mut ws, &mut call, &jfk_frames()[..100]).await;
        ws.send(call.stop()).await.unwrap();
        assert_eq!(expect_close(&mut ws).await.0, 1000);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Captions and what the page recorded

/// The page's connection state.
const STATUS: &str = "document.getElementById('status').dataset.state";
/// Number of final captions shown.
const FINALS: &str = "document.querySelectorAll('#captions > .caption.final').length";

fn fin(track: Track, start_ms: u64, end_ms: u64, text: &str) -> CaptionEvent {
    CaptionEvent::Final(FinalSegment {
        track,
        start_ms,
        end_ms,
        text: text.into(),
        confidence: Some(0.9),
    })
}

fn partial(track: Track, start_ms: u64, end_ms: u64, text: &str) -> CaptionEvent {
    CaptionEvent::Partial {
        track,
        start_ms,
        end_ms,
        text: text.into(),
    }
}

/// What `driver.mjs` recorded in the page, and about it.
#[derive(Debug, Deserialize)]
struct PageLog {
    /// Every state of the status line and caption list, in order.
    history: Vec<Snapshot>,
    violations: Vec<String>,
    requests: Vec<String>,
    console: Vec<String>,
    errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    status: String,
    captions: Vec<Shown>,
}

#[derive(Debug, Deserialize)]
struct Shown {
    /// Stable per element: the same id is the same `<li>`.
    id: u64,
    class: String,
    text: String,
}

/// The statuses the page went through, repeats folded.
fn statuses(log: &PageLog) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in &log.history {
        if out.last() != Some(&s.status.as_str()) {
            out.push(&s.status);
        }
    }
    out
}

/// The texts a `track` caption showed as partial before the same element
/// turned final, if one did.
fn partial_became_final(log: &PageLog, track: &str) -> Option<Vec<String>> {
    let (partial_class, final_class) = (
        format!("caption {track} partial"),
        format!("caption {track} final"),
    );
    let mut partials: Vec<(u64, Vec<String>)> = Vec::new();
    for shown in log.history.iter().flat_map(|s| &s.captions) {
        if shown.class == partial_class {
            match partials.iter_mut().find(|(id, _)| *id == shown.id) {
                Some((_, texts)) if texts.last() != Some(&shown.text) => {
                    texts.push(shown.text.clone())
                }
                Some(_) => {}
                None => partials.push((shown.id, vec![shown.text.clone()])),
            }
        } else if shown.class == final_class {
            if let Some((_, texts)) = partials.iter().find(|(id, _)| *id == shown.id) {
                return Some(texts.clone());
            }
        }
    }
    None
}

fn assert_partial_became_final(log: &PageLog, track: &str) -> Vec<String> {
    partial_became_final(log, track)
        .unwrap_or_else(|| panic!("no {track} partial turned final: {:?}", log.history))
}

fn assert_no_errors(log: &PageLog) {
    assert!(log.errors.is_empty(), "page errors: {:?}", log.errors);
    assert!(
        log.violations.is_empty(),
        "CSP violations: {:?}",
        log.violations
    );
    let bad: Vec<_> = log
        .console
        .iter()
        .filter(|l| l.starts_with("error") && !l.contains("/favicon.ico"))
        .collect();
    assert!(bad.is_empty(), "console errors: {bad:?}");
}

// ---------------------------------------------------------------------------
// The gateway and a Twilio call

/// The gateway of these tests: `common::TestServer` with the sinks a test
/// chooses (the captions come from the sinks).
type UiServer = TestServer;

async fn ui_server(sinks: impl FnOnce(&AppState) -> Arc<dyn SinkFactory>) -> UiServer {
    TestServer::start_full(|_| {}, |state, _| sinks(state)).await
}

/// A call streamed over the Twilio endpoint, signed as Twilio does.
struct TwilioCall {
    ws: Ws,
    call: Call,
    /// The gateway's id of the call (what the page URL names).
    id: String,
    frames_sent: u64,
}

impl TwilioCall {
    async fn start(server: &UiServer) -> Self {
        let url = format!("ws://{}{STREAM_PATH}", server.addr);
        let mut req = url.as_str().into_client_request().unwrap();
        let sig = signature::compute(AUTH_TOKEN, &url, &[]);
        req.headers_mut()
            .insert("X-Twilio-Signature", sig.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut call = Call::new();
        ws.send(Message::text(frames::connected())).await.unwrap();
        ws.send(call.start(&[])).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let (status, page) =
                http(server.addr, "GET", "/v1/calls", Some(&server.api_key), None).await;
            assert_eq!(status, 200, "{page}");
            let found = page["calls"].as_array().unwrap().iter().find_map(|c| {
                (c["external_call_id"] == call.call_sid.as_str())
                    .then(|| c["id"].as_str().unwrap().to_string())
            });
            if let Some(id) = found {
                break id;
            }
            assert!(Instant::now() < deadline, "the call is listed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            ws,
            call,
            id,
            frames_sent: 0,
        }
    }

    /// Streams 20 ms μ-law frames (base64) on both tracks in real time, as
    /// Twilio does; a track with no frame left sends silence.
    async fn stream(&mut self, caller: &[String], agent: &[String]) {
        let silence = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..caller.len().max(agent.len()) {
            tick.tick().await;
            let n = self.frames_sent;
            for (track, frames) in [
                (StreamTrack::Inbound, caller),
                (StreamTrack::Outbound, agent),
            ] {
                let payload = frames.get(i).unwrap_or(&silence);
                self.ws
                    .send(self.call.media(track, n + 1, n * 20, payload))
                    .await
                    .unwrap();
            }
            self.frames_sent += 1;
        }
    }

    async fn stop(mut self) {
        self.ws.send(self.call.stop()).await.unwrap();
        assert_eq!(expect_close(&mut self.ws).await.0, 1000);
    }
}

/// JFK's speech as a two-party call: the caller says what comes before the
/// longest pause ("And so my fellow Americans"), the agent the rest; each
/// track is silent while the other speaks.
fn two_party_frames() -> (Vec<String>, Vec<String>) {
    const QUIET_RMS: f64 = 800.0;
    let frames = jfk_frames();
    let rms: Vec<f64> = frames
        .iter()
        .map(|f| {
            let mut pcm = Vec::new();
            let bytes = base64::engine::general_purpose::STANDARD.decode(f).unwrap();
            Codec::Mulaw.decode_into(&bytes, &mut pcm).unwrap();
            (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
        })
        .collect();
    let speech_from = rms.iter().position(|&r| r > QUIET_RMS).unwrap();
    let (mut pause, mut run_start) = ((0, 0), None);
    for (i, &r) in rms.iter().enumerate().skip(speech_from) {
        if r > QUIET_RMS {
            run_start = None;
            continue;
        }
        let start = *run_start.get_or_insert(i);
        if i + 1 - start > pause.1 - pause.0 {
            pause = (start, i + 1);
        }
    }
    let split = (pause.0 + pause.1) / 2;
    let silence = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
    let mut agent = vec![silence; split];
    agent.extend_from_slice(&frames[split..]);
    (frames[..split].to_vec(), agent)
}

// ---------------------------------------------------------------------------
// The browser

static LAUNCH_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn browser_launch_secs() -> f64 {
    LAUNCH_MS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
}

/// Headless Chromium behind `tests/ui/driver.mjs`, one JSON line each way.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser, or `None` (the test is skipped) when what it
    /// needs is not installed, except under CI.
    async fn launch() -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let missing: Vec<&str> = [
            (Path::new(&chromium).exists(), "chromium"),
            (node, "node"),
            (
                root.join("node_modules/playwright-core").exists(),
                "playwright-core",
            ),
        ]
        .into_iter()
        .filter_map(|(ok, what)| (!ok).then_some(what))
        .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the browser tests: missing {missing:?}; run scripts/setup-browser.sh"
            );
            eprintln!("SKIPPED: missing {missing:?}; run scripts/setup-browser.sh");
            return None;
        }
        let started = Instant::now();
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("node")
            .arg(root.join("tests/ui/driver.mjs"))
            .arg(profile.path())
            .current_dir(root)
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut browser = Self {
            stdin: child.stdin.take().unwrap(),
            replies: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            next_id: 0,
            _profile: profile,
        };
        let ready = browser.reply(Duration::from_secs(60)).await;
        assert_eq!(ready["ready"], true, "{ready}");
        LAUNCH_MS.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Some(browser)
    }

    async fn reply(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.replies.next_line())
            .await
            .expect("the browser driver answers in time")
            .expect("the driver's output is readable")
            .expect("the browser driver is running (see its stderr above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }

    async fn call(&mut self, cmd: &str, mut args: Value, within: Duration) -> Value {
        self.next_id += 1;
        args["id"] = json!(self.next_id);
        args["cmd"] = json!(cmd);
        self.stdin
            .write_all(format!("{args}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        let mut reply = self.reply(within + Duration::from_secs(30)).await;
        assert_eq!(reply["id"], self.next_id);
        assert_eq!(
            reply["ok"], true,
            "browser {cmd} {args}: {}",
            reply["error"]
        );
        reply["value"].take()
    }

    async fn goto(&mut self, url: &str) -> u64 {
        let value = self.call("goto", json!({"url": url}), Duration::ZERO).await;
        value["status"].as_u64().unwrap()
    }

    async fn eval(&mut self, expr: &str) -> Value {
        self.call("eval", json!({"expr": expr}), Duration::ZERO)
            .await
    }

    /// Waits until `expr` is truthy in the page (10 s at most).
    async fn wait(&mut self, expr: &str) -> Value {
        self.wait_for(expr, Duration::from_secs(10)).await
    }

    async fn wait_for(&mut self, expr: &str, timeout: Duration) -> Value {
        let args = json!({"expr": expr, "timeout_ms": timeout.as_millis() as u64});
        self.call("wait", args, timeout).await
    }

    async fn fill(&mut self, selector: &str, value: &str) {
        let args = json!({"selector": selector, "value": value});
        self.call("fill", args, Duration::ZERO).await;
    }

    /// Clicks and waits for the page it leads to.
    async fn submit(&mut self, selector: &str) {
        let args = json!({"selector": selector});
        self.call("submit", args, Duration::ZERO).await;
    }

    async fn click(&mut self, selector: &str) {
        let args = json!({"selector": selector});
        self.call("click", args, Duration::ZERO).await;
    }

    /// The captions shown, in order: class, who, time, text, aria-hidden.
    async fn captions(&mut self) -> Vec<Value> {
        let value = self
            .eval(
                "[...document.querySelectorAll('#captions > li')].map(li => ({
                    class: li.className,
                    who: li.querySelector('.who').textContent,
                    time: li.querySelector('.time').textContent,
                    text: li.querySelector('.text').textContent,
                    hidden: li.getAttribute('aria-hidden'),
                }))",
            )
            .await;
        serde_json::from_value(value).unwrap()
    }

    async fn log(&mut self) -> PageLog {
        serde_json::from_value(self.call("log", json!({}), Duration::ZERO).await).unwrap()
    }

    /// A full-page PNG under the target dir; returns its path.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let args = json!({"path": path});
        self.call("screenshot", args, Duration::ZERO).await;
        path
    }

    /// Closes the browser (the driver exits when its input ends).
    async fn close(mut self) {
        drop(self.stdin);
        let exited = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        assert!(
            exited.is_ok_and(|s| s.is_ok_and(|s| s.success())),
            "driver exits cleanly"
        );
    }
}
