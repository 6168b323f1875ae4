//! The Twilio Media Streams endpoint against a real server on 127.0.0.1,
//! driven by a real WebSocket client sending real Twilio-format frames.

mod common;

use std::time::Duration;

use base64::Engine as _;
use callstream::gateway::{run_session, Inbound, OutFrame, PreAuth, SocketError};
use callstream::media::codec::Codec;
use callstream::media::Track;
use callstream::providers::twilio::stream::StreamTrack;
use callstream::store::TwilioCredentials;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn dropped(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("callstream_frames_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// The call (with logs) the API lists for `call_sid`, if it exists yet.
async fn find_call(server: &TestServer, call_sid: &str) -> Option<serde_json::Value> {
    let (status, page) = server.get("/v1/calls").await;
    assert_eq!(status, 200, "{page}");
    let id = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["external_call_id"] == call_sid)?["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, detail) = server.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(status, 200);
    Some(detail)
}

async fn call_detail(server: &TestServer, call_sid: &str) -> serde_json::Value {
    find_call(server, call_sid)
        .await
        .unwrap_or_else(|| panic!("call {call_sid} is listed"))
}

/// Waits until the call exists and has `status`.
async fn wait_status(server: &TestServer, call_sid: &str, status: &str) {
    eventually(|| async {
        find_call(server, call_sid)
            .await
            .is_some_and(|c| c["status"] == status)
    })
    .await;
}

fn log_events(detail: &serde_json::Value) -> Vec<String> {
    detail["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect()
}

/// Decodes base64 μ-law frames to the PCM the gateway must produce.
fn decoded(frames: &[String]) -> Vec<i16> {
    let mut out = Vec::new();
    for f in frames {
        let bytes = base64::engine::general_purpose::STANDARD.decode(f).unwrap();
        Codec::Mulaw.decode_into(&bytes, &mut out).unwrap();
    }
    out
}

fn track_pcm(captured: &Captured, track: Track) -> Vec<i16> {
    let mut chunks: Vec<_> = captured
        .pcm
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.track == track)
        .cloned()
        .collect();
    chunks.sort_by_key(|c| c.start_sample);
    let mut out = Vec::new();
    for c in chunks {
        assert_eq!(c.start_sample as usize, out.len(), "contiguous chunks");
        out.extend_from_slice(&c.samples);
    }
    out
}

#[tokio::test]
async fn signed_stream_carries_a_call_from_start_to_stop() {
    let mut server = TestServer::start().await;
    let frames = jfk_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(Message::text(
        callstream::providers::twilio::stream::frames::connected(),
    ))
    .await
    .unwrap();
    ws.send(call.start(&[("agent", "42")])).await.unwrap();
    send_audio(&mut ws, &mut call, &frames).await;
    ws.send(call.dtmf('7')).await.unwrap();
    ws.send(call.mark("greeting-done")).await.unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "completed").await;
    let detail = call_detail(&server, &call.call_sid).await;
    assert_eq!(detail["provider"], "twilio");
    assert_eq!(detail["stream_id"], call.stream_sid.as_str());
    assert!(detail["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        log_events(&detail),
        ["stream_started", "dtmf", "mark", "stream_stopped"]
    );
    assert_eq!(detail["logs"][1]["detail"]["digit"], "7");
    assert_eq!(detail["logs"][2]["detail"]["name"], "greeting-done");

    // Every sample arrived, in place, on the right track.
    // Each track and rate reaches its sink from its own task: wait for all
    // of them, not one, before comparing.
    let expected = decoded(&frames);
    let wide_caller = || -> usize {
        server
            .captured
            .wide
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.track == Track::Caller)
            .map(|c| c.samples.len())
            .sum()
    };
    eventually(|| async {
        track_pcm(&server.captured, Track::Caller).len() >= expected.len()
            && track_pcm(&server.captured, Track::Agent).len() >= expected.len()
            && wide_caller() >= expected.len() * 2
    })
    .await;
    assert_eq!(track_pcm(&server.captured, Track::Caller), expected);
    assert_eq!(track_pcm(&server.captured, Track::Agent), expected);
    assert_eq!(
        wide_caller(),
        expected.len() * 2,
        "16 kHz output is twice the 8 kHz input"
    );

    let m = server.metrics().await;
    assert_eq!(
        metric(&m, "callstream_frames_in_total"),
        (frames.len() * 2) as f64
    );
    assert_eq!(metric(&m, "callstream_active_streams"), 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn reordered_and_missing_frames_are_placed_by_timestamp() {
    let server = TestServer::start().await;
    let frames = jfk_frames()[..50].to_vec();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    // Caller: swap each pair of frames and leave out frame 10 entirely.
    let mut order: Vec<usize> = (0..frames.len()).collect();
    for pair in order.chunks_mut(2) {
        pair.reverse();
    }
    for i in order.into_iter().filter(|i| *i != 10) {
        ws.send(call.media(
            StreamTrack::Inbound,
            i as u64 + 1,
            i as u64 * 20,
            &frames[i],
        ))
        .await
        .unwrap();
    }
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let mut expected = decoded(&frames);
    expected[10 * 160..11 * 160].fill(0);
    eventually(|| async { track_pcm(&server.captured, Track::Caller).len() >= expected.len() })
        .await;
    assert_eq!(track_pcm(&server.captured, Track::Caller), expected);
}

#[tokio::test]
async fn bad_signature_is_refused_before_anything_exists() {
    let server = TestServer::start().await;
    let wrong =
        callstream::providers::twilio::signature::compute("not-the-token", &server.ws_url(), &[]);
    let err = server.connect_with(Some(&wrong)).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    // Signed for another URL (a different path) is refused too.
    let other = callstream::providers::twilio::signature::compute(
        AUTH_TOKEN,
        &format!("ws://{}/elsewhere", server.addr),
        &[],
    );
    assert!(server.connect_with(Some(&other)).await.is_err());
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 0);
    assert!(
        metric(
            &server.metrics().await,
            "callstream_stream_rejections_total{reason=\"bad_signature\"}"
        ) >= 2.0
    );
}

#[tokio::test]
async fn start_for_another_account_is_closed() {
    let server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    let start = call
        .start(&[])
        .into_text()
        .unwrap()
        .replace(ACCOUNT_SID, "AC99999999999999999999999999999999");
    ws.send(Message::text(start.as_str())).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("accountSid"), "{reason}");
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unsigned_stream_needs_a_valid_per_call_token() {
    let server = TestServer::start().await;
    let secret = server.state.token_secret.expose().as_bytes().to_vec();
    let now = callstream::store::now_ms() / 1000;

    // No token at all.
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(Call::new().start(&[])).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(
        (code, reason.contains("unauthenticated")),
        (1008, true),
        "{reason}"
    );

    // Expired, and issued for another call.
    let mut call = Call::new();
    let expired = callstream::providers::twilio::token::issue(
        &secret,
        &server.tenant_id,
        &call.call_sid,
        now - 1,
    );
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(call.start(&[("token", &expired)])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1008);
    let other = callstream::providers::twilio::token::issue(
        &secret,
        &server.tenant_id,
        "CAother",
        now + 60,
    );
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(call.start(&[("token", &other)])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1008);
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 0);

    // A good one.
    let good = callstream::providers::twilio::token::issue(
        &secret,
        &server.tenant_id,
        &call.call_sid,
        now + 60,
    );
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(call.start(&[("token", &good)])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()[..10]).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "completed").await;
    let detail = call_detail(&server, &call.call_sid).await;
    assert_eq!(detail["logs"][0]["detail"]["auth"], "token");
    // The token value is never stored; only the parameter names are.
    assert!(!detail.to_string().contains(&good));
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_start_timeout() {
    let server = TestServer::start_with(|c| c.stream.start_timeout_secs = 1).await;
    let mut ws = server.connect_with(None).await.unwrap();
    ws.send(Message::text(
        callstream::providers::twilio::stream::frames::connected(),
    ))
    .await
    .unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn bad_input_is_dropped_counted_and_loses_nothing() {
    let server = TestServer::start().await;
    let frames = jfk_frames()[..20].to_vec();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    // Media before start.
    ws.send(call.media(StreamTrack::Inbound, 1, 0, &frames[0]))
        .await
        .unwrap();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &frames[..10]).await;
    // Malformed JSON, wrong types, invalid base64, unknown event, other streamSid,
    // a second start, binary data: each dropped, none fatal.
    for bad in [
        "{not json".to_string(),
        r#"{"event":"media","media":{"track":"inbound"}}"#.to_string(),
        format!(
            r#"{{"event":"media","sequenceNumber":"99","media":{{"track":"inbound","chunk":"99","timestamp":"5000","payload":"!!!notbase64"}},"streamSid":"{}"}}"#,
            call.stream_sid
        ),
        r#"{"event":"somethingNew","streamSid":"x"}"#.to_string(),
        r#"{"event":"media","sequenceNumber":"98","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"AAAA"},"streamSid":"MZother"}"#.to_string(),
    ] {
        ws.send(Message::text(bad.as_str())).await.unwrap();
    }
    let mut second = Call::new();
    second.stream_sid = call.stream_sid.clone();
    ws.send(second.start(&[])).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    // The stream goes on.
    send_audio_from(&mut ws, &mut call, &frames, 10).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let expected = decoded(&frames);
    eventually(|| async { track_pcm(&server.captured, Track::Agent).len() >= expected.len() })
        .await;
    assert_eq!(track_pcm(&server.captured, Track::Caller), expected);

    let m = server.metrics().await;
    assert_eq!(dropped(&m, "before_start"), 1.0);
    assert_eq!(dropped(&m, "malformed"), 3.0);
    assert_eq!(dropped(&m, "unknown_event"), 1.0);
    assert_eq!(dropped(&m, "stream_mismatch"), 1.0);
    assert_eq!(dropped(&m, "duplicate_start"), 1.0);
    assert_eq!(dropped(&m, "binary"), 1.0);
    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "completed").await;
}

#[tokio::test]
async fn oversized_message_closes_the_stream_but_keeps_its_audio() {
    let server = TestServer::start_with(|c| c.stream.max_message_bytes = 4096).await;
    let frames = jfk_frames()[..10].to_vec();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &frames).await;
    let huge = format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(10_000));
    let _ = ws.send(Message::text(huge.as_str())).await;
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1009);

    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "interrupted").await;
    let detail = call_detail(&server, &call.call_sid).await;
    assert!(log_events(&detail).contains(&"stream_message_too_big".to_string()));
    let expected = decoded(&frames);
    eventually(|| async { track_pcm(&server.captured, Track::Caller).len() >= expected.len() })
        .await;
    assert_eq!(track_pcm(&server.captured, Track::Caller), expected);
    assert_eq!(dropped(&server.metrics().await, "oversized"), 1.0);
}

#[tokio::test]
async fn socket_lost_without_stop_marks_the_call_interrupted() {
    let server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()[..5]).await;
    drop(ws);
    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "interrupted").await;
    let detail = call_detail(&server, &call.call_sid).await;
    assert_eq!(
        log_events(&detail),
        ["stream_started", "stream_disconnected"]
    );
    assert!(detail["ended_at"].as_i64().is_some());
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_streams() {
    let mut server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let frames = jfk_frames()[..25].to_vec();
    send_audio(&mut ws, &mut call, &frames).await;
    let sid = call.call_sid.clone();
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;
    // Let the frames sent so far be read before the shutdown starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closing = tokio::spawn(async move {
        let close = expect_close(&mut ws).await;
        (close, ws)
    });
    server.shutdown().await;
    let ((code, _), _ws) = closing.await.unwrap();
    assert_eq!(code, 1001);
    let call = server
        .store
        .list_calls(&server.tenant_id, 10, None)
        .await
        .unwrap()
        .calls
        .into_iter()
        .find(|c| c.external_call_id == sid)
        .unwrap();
    assert_eq!(call.status.as_str(), "interrupted");
    let logs = server
        .store
        .list_call_logs(&server.tenant_id, &call.id)
        .await
        .unwrap();
    assert_eq!(logs.last().unwrap().event, "gateway_shutdown");
    // Audio accepted before the shutdown was flushed to the sinks.
    assert_eq!(track_pcm(&server.captured, Track::Caller), decoded(&frames));
}

#[tokio::test]
async fn messages_are_sent_back_on_a_bidirectional_stream() {
    let server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let sid = call.call_sid.clone();
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;
    let id = call_detail(&server, &sid).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/calls/{id}/stream/messages");
    let payload = jfk_frames()[0].clone();
    for body in [
        serde_json::json!({"type": "media", "payload": payload}),
        serde_json::json!({"type": "mark", "name": "prompt-1"}),
        serde_json::json!({"type": "clear"}),
    ] {
        let (status, resp) = http(
            server.addr,
            "POST",
            &path,
            Some(&server.api_key),
            Some(&body),
        )
        .await;
        assert_eq!(status, 202, "{resp}");
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            got.push(serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap());
        }
    }
    assert_eq!(got[0]["event"], "media");
    assert_eq!(got[0]["media"]["payload"], payload.as_str());
    assert_eq!(got[0]["streamSid"], call.stream_sid.as_str());
    assert_eq!(got[1]["mark"]["name"], "prompt-1");
    assert_eq!(
        got[2],
        serde_json::json!({"event": "clear", "streamSid": call.stream_sid})
    );

    // Bad payloads and unknown calls are refused.
    let (status, _) = http(
        server.addr,
        "POST",
        &path,
        Some(&server.api_key),
        Some(&serde_json::json!({"type": "media", "payload": "@@"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        server.addr,
        "POST",
        "/v1/calls/nope/stream/messages",
        Some(&server.api_key),
        Some(&serde_json::json!({"type": "clear"})),
    )
    .await;
    assert_eq!(status, 404);
    // Twilio echoes the mark once played: it is logged.
    ws.send(call.mark("prompt-1")).await.unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    wait_status(&server, &sid, "completed").await;
    let events = log_events(&call_detail(&server, &sid).await);
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "stream_message_sent")
            .count(),
        3
    );
    assert!(events.contains(&"mark".to_string()));
}

#[tokio::test]
async fn rest_api_is_authenticated_and_tenant_scoped() {
    let server = TestServer::start().await;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    ws.send(call.stop()).await.unwrap();
    expect_close(&mut ws).await;
    let sid = call.call_sid.clone();
    wait_status(&server, &sid, "completed").await;
    let id = call_detail(&server, &sid).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = http(server.addr, "GET", "/v1/calls", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = http(
        server.addr,
        "GET",
        "/v1/calls",
        Some("csk_000000000000_nope"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let other = server.store.create_tenant("Other", None).await.unwrap();
    let other_key = server
        .store
        .create_api_key(&other.id, "admin", callstream::store::Role::Admin)
        .await
        .unwrap();
    let key = other_key.plaintext.expose();
    let (status, _) = http(
        server.addr,
        "GET",
        &format!("/v1/calls/{id}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, page) = http(server.addr, "GET", "/v1/calls", Some(key), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["calls"].as_array().unwrap().len(), 0);
    let (status, _) = http(
        server.addr,
        "POST",
        &format!("/v1/calls/{id}/stream/messages"),
        Some(key),
        Some(&serde_json::json!({"type": "clear"})),
    )
    .await;
    assert_eq!(status, 404);
}

/// A provider socket made of two channels: what the test sends in, and
/// what the session writes back.
struct ChannelSocket {
    rx: futures::channel::mpsc::UnboundedReceiver<Result<Inbound<String>, SocketError>>,
    tx: futures::channel::mpsc::UnboundedSender<OutFrame>,
}

impl futures::Stream for ChannelSocket {
    type Item = Result<Inbound<String>, SocketError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl futures::Sink<OutFrame> for ChannelSocket {
    type Error = futures::channel::mpsc::SendError;
    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.tx.poll_ready_unpin(cx)
    }
    fn start_send(mut self: std::pin::Pin<&mut Self>, item: OutFrame) -> Result<(), Self::Error> {
        self.tx.start_send_unpin(item)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.tx.poll_flush_unpin(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.tx.poll_close_unpin(cx)
    }
}

/// The call runtime needs no WebSocket: the same Twilio frames through
/// channels place the same audio, and `stop` is answered with a 1000 close.
#[tokio::test]
async fn a_session_runs_over_any_stream_and_sink() {
    let server = TestServer::start().await;
    let (in_tx, rx) = futures::channel::mpsc::unbounded();
    let (tx, mut out_rx) = futures::channel::mpsc::unbounded();
    let auth = PreAuth::Signed(TwilioCredentials {
        tenant_id: server.tenant_id.clone(),
        account_sid: ACCOUNT_SID.to_string(),
        auth_token: callstream::secret::Secret::new(AUTH_TOKEN),
    });
    let session = tokio::spawn(run_session(
        ChannelSocket { rx, tx },
        server.state.runtime(),
        auth,
    ));
    let text = |m: Message| Ok(Inbound::Text(m.into_text().unwrap().to_string()));
    let mut call = Call::new();
    let frames = jfk_frames()[..20].to_vec();
    in_tx.unbounded_send(text(call.start(&[]))).unwrap();
    for (i, payload) in frames.iter().enumerate() {
        let ts = i as u64 * 20;
        for track in [StreamTrack::Inbound, StreamTrack::Outbound] {
            in_tx
                .unbounded_send(text(call.media(track, i as u64 + 1, ts, payload)))
                .unwrap();
        }
    }
    in_tx.unbounded_send(text(call.stop())).unwrap();
    assert_eq!(
        out_rx.next().await,
        Some(OutFrame::Close {
            code: 1000,
            reason: "stream stopped"
        })
    );
    session.await.unwrap();
    let samples = decoded(&frames).len();
    eventually(|| async { track_pcm(&server.captured, Track::Agent).len() == samples }).await;
    assert_eq!(track_pcm(&server.captured, Track::Caller), decoded(&frames));
    assert_eq!(track_pcm(&server.captured, Track::Agent), decoded(&frames));
    let calls = server
        .store
        .list_calls(&server.tenant_id, 10, None)
        .await
        .unwrap()
        .calls;
    assert_eq!(calls[0].status.as_str(), "completed");
}
