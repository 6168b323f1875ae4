//! Hostile clients against a real server on 127.0.0.1 (issue 10): each test
//! reproduces an attack and checks it is now refused, cheaply, leaving the
//! database as it was.

mod common;

use std::time::Duration;

use callstream::providers::twilio::{signature, token};
use common::*;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

async fn calls(server: &TestServer) -> Vec<serde_json::Value> {
    let (status, page) = server.get("/v1/calls").await;
    assert_eq!(status, 200, "{page}");
    page["calls"].as_array().unwrap().clone()
}

async fn detail_of(server: &TestServer, call_sid: &str) -> serde_json::Value {
    let id = calls(server)
        .await
        .into_iter()
        .find(|c| c["external_call_id"] == call_sid)
        .unwrap_or_else(|| panic!("call {call_sid} is listed"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, detail) = server.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(status, 200);
    detail
}

async fn wait_for_status(server: &TestServer, call_sid: &str, status: &str) {
    eventually(|| async {
        calls(server)
            .await
            .iter()
            .any(|c| c["external_call_id"] == call_sid && c["status"] == status)
    })
    .await;
}

fn events(detail: &serde_json::Value) -> Vec<String> {
    detail["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect()
}

fn limit_hits(text: &str, limit: &str) -> f64 {
    metric(
        text,
        &format!("callstream_stream_limit_hits_total{{limit=\"{limit}\"}}"),
    )
}

fn rejections(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("callstream_stream_rejections_total{{reason=\"{reason}\"}}"),
    )
}

fn token_for(server: &TestServer, call_sid: &str) -> String {
    token::issue(
        server.state.token_secret.expose().as_bytes(),
        &server.tenant_id,
        call_sid,
        callstream::store::now_ms() / 1000 + 60,
    )
}

/// A start frame for `call` with its text edited by `edit`.
fn start_edited(
    call: &mut Call,
    params: &[(&str, &str)],
    edit: impl Fn(String) -> String,
) -> Message {
    let text = call.start(params).into_text().unwrap().to_string();
    Message::text(edit(text))
}

#[tokio::test]
async fn idle_unsigned_upgrades_hold_no_stream_slot_and_time_out() {
    let server = TestServer::start_with(|c| {
        c.stream.max_streams = 2;
        c.stream.max_pending_upgrades = 4;
        c.stream.pending_start_timeout_ms = 1_000;
    })
    .await;
    // The attack: idle unsigned upgrades, as many as the server takes.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(server.connect_with(None).await.unwrap());
    }
    let refused = server.connect_with(None).await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");
    assert_eq!(rejections(&server.metrics().await, "pending_limit"), 1.0);

    // Correctly signed calls still get in, up to max_streams.
    let mut live = Vec::new();
    for _ in 0..2 {
        let mut ws = server.connect_signed().await;
        let mut call = Call::new();
        ws.send(call.start(&[])).await.unwrap();
        live.push((ws, call));
    }
    eventually(|| async { server.state.sessions.open_calls().len() == 2 }).await;
    // A third authenticated start finds the stream slots taken.
    let mut third = server.connect_signed().await;
    third.send(Call::new().start(&[])).await.unwrap();
    let (code, reason) = expect_close(&mut third).await;
    assert_eq!((code, reason.as_str()), (1013, "stream capacity reached"));

    // The idle ones are closed after the short pending timeout...
    for ws in &mut idle {
        let (code, reason) = expect_close(ws).await;
        assert_eq!(code, 1008, "{reason}");
    }
    // ...and their places are free again.
    eventually(|| async { metric(&server.metrics().await, "callstream_pending_upgrades") == 0.0 })
        .await;
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(Call::new().start(&[])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1008);

    for (mut ws, mut call) in live {
        ws.send(call.stop()).await.unwrap();
        assert_eq!(expect_close(&mut ws).await.0, 1000);
    }
}

#[tokio::test]
async fn bad_signatures_and_tokens_are_refused_without_the_database() {
    let server = TestServer::start_with(|c| c.stream.credentials_refresh_ms = 3_600_000).await;
    // One good stream loads the credentials.
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let before = metric(
        &server.metrics().await,
        "callstream_tenant_credential_lookups_total",
    );
    assert_eq!(before, 1.0);

    let wrong = signature::compute("not-the-token", &server.ws_url(), &[]);
    for _ in 0..200 {
        let err = server.connect_with(Some(&wrong)).await.unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }
    // Forged tokens: signed with another secret, and for an unknown account.
    for i in 0..20 {
        let mut forged = Call::new();
        let tok = token::issue(
            b"another secret, not the server's one",
            &server.tenant_id,
            &forged.call_sid,
            callstream::store::now_ms() / 1000 + 60,
        );
        let mut ws = server.connect_with(None).await.unwrap();
        let msg = if i % 2 == 0 {
            forged.start(&[("token", &tok)])
        } else {
            let good = token_for(&server, &forged.call_sid);
            start_edited(&mut forged, &[("token", &good)], |t| {
                t.replace(ACCOUNT_SID, "AC99999999999999999999999999999999")
            })
        };
        ws.send(msg).await.unwrap();
        assert_eq!(expect_close(&mut ws).await.0, 1008);
    }
    let m = server.metrics().await;
    assert_eq!(
        metric(&m, "callstream_tenant_credential_lookups_total"),
        before,
        "refusals must not reach the database"
    );
    assert_eq!(rejections(&m, "bad_signature"), 200.0);
    assert_eq!(calls(&server).await.len(), 1);
}

/// An edit of a start frame's text.
type Edit = Box<dyn Fn(String) -> String>;

#[tokio::test]
async fn an_invalid_start_is_refused_before_any_row_is_written() {
    let server = TestServer::start().await;
    let huge_sid = format!("CA{}", "0".repeat(20_000));
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|t| t.replace(r#""sampleRate":8000"#, r#""sampleRate":0"#)),
            "unsupported sample rate",
        ),
        (
            Box::new(|t| t.replace(r#""channels":1"#, r#""channels":2"#)),
            "only mono media is supported",
        ),
        (
            Box::new(|t| t.replace(r#"["inbound","outbound"]"#, "[]")),
            "start.tracks must name one or two distinct tracks",
        ),
        (
            Box::new(|t| t.replace("audio/x-mulaw", "audio/x-unknown")),
            "unsupported media encoding",
        ),
        (
            Box::new(move |t| {
                let sid = t.split(r#""callSid":""#).nth(1).unwrap()[..34].to_string();
                t.replace(&sid, &huge_sid)
            }),
            "start.callSid is not a Twilio SID",
        ),
        (
            Box::new(|t| {
                let sid = t.split(r#""streamSid":""#).nth(1).unwrap()[..34].to_string();
                t.replace(&sid, "MZ<b>hi</b>")
            }),
            "start.streamSid is not a Twilio SID",
        ),
    ];
    for (edit, want) in cases {
        let mut ws = server.connect_signed().await;
        ws.send(start_edited(&mut Call::new(), &[], edit))
            .await
            .unwrap();
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!((code, reason.as_str()), (1008, want));
    }
    // Too many, or too long, customParameters.
    let many: Vec<(String, String)> = (0..17).map(|i| (format!("p{i}"), "x".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
    let long = "x".repeat(2_000);
    for params in [many, vec![("from", long.as_str())]] {
        let mut ws = server.connect_signed().await;
        ws.send(Call::new().start(&params)).await.unwrap();
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!(code, 1008);
        assert!(reason.starts_with("start.customParameters"), "{reason}");
    }
    assert!(
        calls(&server).await.is_empty(),
        "no call row for a refused start"
    );
    assert_eq!(rejections(&server.metrics().await, "invalid_start"), 8.0);
}

#[tokio::test]
async fn parties_that_are_not_e164_numbers_are_dropped() {
    let server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[
        ("from", "<script>alert(1)</script>"),
        ("to", "+14155550100"),
    ]))
    .await
    .unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let sid = call.call_sid.clone();
    wait_for_status(&server, &sid, "completed").await;
    let detail = detail_of(&server, &sid).await;
    assert_eq!(detail["from_number"], serde_json::Value::Null);
    assert_eq!(detail["to_number"], "+14155550100");
    assert!(!detail.to_string().contains("alert(1)"));
}

#[tokio::test]
async fn a_token_replayed_after_its_call_ended_is_refused_and_the_call_untouched() {
    let server = TestServer::start().await;
    let mut call = Call::new();
    let tok = token_for(&server, &call.call_sid);
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(call.start(&[("token", &tok)])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()[..10]).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let sid = call.call_sid.clone();
    wait_for_status(&server, &sid, "completed").await;
    let before = detail_of(&server, &sid).await;

    // The replay: same token and callSid, a new stream.
    let mut replay = Call::new();
    replay.call_sid = sid.clone();
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(replay.start(&[("token", &tok)])).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1008, "the call has ended"));
    // Signed the same: the call stays ended.
    let mut ws = server.connect_signed().await;
    ws.send(replay.start(&[])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.1, "the call has ended");

    let after = detail_of(&server, &sid).await;
    assert_eq!(before, after, "the ended call is left as it was");
    assert_eq!(after["stream_id"], call.stream_sid.as_str());
    assert_eq!(rejections(&server.metrics().await, "call_ended"), 2.0);
}

#[tokio::test]
async fn a_second_stream_on_a_live_call_is_refused_and_the_first_goes_on() {
    let server = TestServer::start().await;
    let frames = jfk_frames()[..20].to_vec();
    let mut first = server.connect_signed().await;
    let mut call = Call::new();
    first.send(call.start(&[])).await.unwrap();
    send_audio(&mut first, &mut call, &frames[..10]).await;
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;

    let mut second_call = Call::new();
    second_call.call_sid = call.call_sid.clone();
    let mut second = server.connect_signed().await;
    second.send(second_call.start(&[])).await.unwrap();
    let (code, reason) = expect_close(&mut second).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "the call already has a live stream")
    );
    assert_eq!(server.state.sessions.open_calls().len(), 1);

    // The first stream is untouched: still in progress, still its stream.
    let sid = call.call_sid.clone();
    let live = detail_of(&server, &sid).await;
    assert_eq!(live["status"], "in_progress");
    assert_eq!(live["stream_id"], call.stream_sid.as_str());
    send_audio_from(&mut first, &mut call, &frames, 10).await;
    first.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut first).await.0, 1000);
    wait_for_status(&server, &sid, "completed").await;
    let done = detail_of(&server, &sid).await;
    assert_eq!(done["stream_id"], call.stream_sid.as_str());
    assert_eq!(events(&done), ["stream_started", "stream_stopped"]);
    eventually(|| async {
        server
            .captured
            .pcm
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.samples.len())
            .sum::<usize>()
            >= frames.len() * 160 * 2
    })
    .await;
}

#[tokio::test]
async fn a_mark_flood_is_cut_and_bounded_in_the_call_log() {
    let server = TestServer::start_with(|c| {
        c.stream.max_call_log_entries = 50;
        c.stream.max_mark_name_bytes = 64;
    })
    .await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let name = "m".repeat(60_000);
    for _ in 0..300 {
        ws.feed(call.mark(&name)).await.unwrap();
    }
    ws.flush().await.unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let sid = call.call_sid.clone();
    wait_for_status(&server, &sid, "completed").await;
    let detail = detail_of(&server, &sid).await;
    let ev = events(&detail);
    assert_eq!(ev.first().unwrap(), "stream_started");
    assert_eq!(ev.last().unwrap(), "stream_stopped");
    assert!(ev.contains(&"call_log_truncated".to_string()), "{ev:?}");
    assert_eq!(ev.iter().filter(|e| *e == "mark").count(), 50);
    for log in detail["logs"].as_array().unwrap() {
        if log["event"] == "mark" {
            assert_eq!(log["detail"]["name"].as_str().unwrap().len(), 64);
            assert_eq!(log["detail"]["truncated"], true);
        }
    }
    assert!(
        detail.to_string().len() < 64 * 1024,
        "the call detail stays small"
    );
    let m = server.metrics().await;
    assert!(limit_hits(&m, "mark_name") >= 50.0);
    assert!(limit_hits(&m, "call_log_entries") >= 1.0);
}

#[tokio::test]
async fn dtmf_bursts_and_message_floods_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.stream.max_dtmf_per_second = 5;
        c.stream.max_messages_per_second = 100;
        c.stream.message_burst = 200;
    })
    .await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    for _ in 0..50 {
        ws.feed(call.dtmf('1')).await.unwrap();
    }
    ws.flush().await.unwrap();
    // 1,000 frames at once: far past the burst.
    let frame = jfk_frames()[0].clone();
    let frames = vec![frame; 500];
    send_audio(&mut ws, &mut call, &frames).await;
    // Let the bucket refill so the stop gets through.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let sid = call.call_sid.clone();
    wait_for_status(&server, &sid, "completed").await;
    let ev = events(&detail_of(&server, &sid).await);
    let dtmf = ev.iter().filter(|e| *e == "dtmf").count();
    assert!((5..=7).contains(&dtmf), "{dtmf} DTMF events logged");
    let m = server.metrics().await;
    assert!(limit_hits(&m, "dtmf_rate") >= 40.0);
    assert!(limit_hits(&m, "message_rate") >= 700.0);
    assert!(metric(&m, "callstream_frames_in_total") <= 300.0);
}

#[tokio::test]
async fn half_open_connections_are_capped_and_closed_while_real_requests_succeed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.http.max_connections = 20;
        c.http.header_read_timeout_secs = 1;
        c.http.idle_timeout_secs = 2;
        c.http.body_timeout_secs = 1;
    })
    .await;
    // The attack: connections that never finish a request head, and ones
    // that never send a byte.
    let mut half_open = Vec::new();
    for i in 0..15 {
        let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        if i % 3 != 0 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        half_open.push(conn);
    }
    eventually(|| async { metric(&server.metrics().await, "callstream_http_connections") >= 15.0 })
        .await;
    // Real requests still succeed beside them.
    for _ in 0..5 {
        assert_eq!(
            http(server.addr, "GET", "/healthz", None, None).await.0,
            200
        );
    }
    // More than the cap: never more than 20 served at once.
    for _ in 0..30 {
        half_open.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(metric(&server.metrics().await, "callstream_http_connections") <= 20.0);
    // Once the timeouts free slots, a real request gets through.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(20),
        http(server.addr, "GET", "/healthz", None, None),
    )
    .await
    .expect("a real request is served once half-open ones time out");
    assert_eq!(status, 200);
    // Every half-open connection is closed by the server.
    for conn in &mut half_open {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("the server closes a half-open connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // A body that never arrives in full is cut off too.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/calls/x/stream/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\"",
        server.api_key
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer))
        .await
        .expect("the server gives up on a slow body")
        .ok();
    let m = server.metrics().await;
    let closed = |reason: &str| {
        metric(
            &m,
            &format!("callstream_http_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(closed("header_timeout") >= 10.0, "{m}");
    assert!(closed("idle_timeout") >= 5.0, "{m}");
    assert_eq!(closed("body_timeout"), 1.0);
    eventually(|| async { metric(&server.metrics().await, "callstream_http_connections") == 0.0 })
        .await;
}
