//! Live transcription end to end: real speech streamed over the Twilio
//! endpoint of a real server, transcribed by the real Whisper model (tiny.en),
//! finals persisted and pushed to caption watchers.

mod common;

use std::time::Duration;

use base64::Engine as _;
use callstream::providers::twilio::stream::StreamTrack;
use callstream::transcript::wer::wer;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, \
                   ask what you can do for your country.";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-fixtures")
        .join(name)
}

/// Streams per-track frames paced in real time (20 ms per frame), like a
/// provider; `None` frames are not sent on that track.
async fn stream_call(ws: &mut Ws, call: &mut Call, caller: &[String], agent: Option<&[String]>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let n = caller.len().max(agent.map_or(0, |a| a.len()));
    for i in 0..n {
        tick.tick().await;
        let ts = i as u64 * 20;
        if let Some(p) = caller.get(i) {
            ws.feed(call.media(StreamTrack::Inbound, i as u64 + 1, ts, p))
                .await
                .unwrap();
        }
        if let Some(p) = agent.and_then(|a| a.get(i)) {
            ws.feed(call.media(StreamTrack::Outbound, i as u64 + 1, ts, p))
                .await
                .unwrap();
        }
        ws.flush().await.unwrap();
    }
}

/// Waits for the call's transcript to complete and returns the call detail
/// and its JSON export.
async fn finished_transcript(
    server: &TestServer,
    call_sid: &str,
) -> (serde_json::Value, serde_json::Value) {
    let mut id = None;
    for _ in 0..600 {
        let (_, page) = server.get("/v1/calls").await;
        if let Some(c) = page["calls"].as_array().and_then(|calls| {
            calls
                .iter()
                .find(|c| c["external_call_id"] == call_sid)
                .cloned()
        }) {
            let call_id = c["id"].as_str().unwrap().to_string();
            let (_, detail) = server.get(&format!("/v1/calls/{call_id}")).await;
            if detail["transcript"]["status"] == "completed" {
                id = Some((call_id, detail));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (call_id, detail) = id.expect("transcript completes within 60 s");
    let (status, export) = server
        .get(&format!("/v1/calls/{call_id}/transcript?format=json"))
        .await;
    assert_eq!(status, 200);
    (detail, export)
}

fn track_text(export: &serde_json::Value, track: &str) -> String {
    export["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["track"] == track)
        .map(|s| s["text"].as_str().unwrap().trim().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_path_speech_becomes_live_captions_and_finals() {
    let mut server = TestServer::start_live().await;
    let frames = jfk_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let sid = call.call_sid.clone();
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;
    let call_id = server.state.sessions.open_calls()[0].1.clone();

    // An agent watches from the start.
    let mut req = format!("ws://{}/v1/calls/{call_id}/captions", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.api_key).parse().unwrap(),
    );
    let (mut watcher, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let watch = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(Ok(msg)) = watcher.next().await {
            if let Message::Text(t) = msg {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                let end = v["type"] == "end";
                events.push(v);
                if end {
                    break;
                }
            }
        }
        events
    });

    // 11 s of speech plus 1 s of silence, paced like a live call.
    let mut padded = frames.clone();
    // μ-law silence is 0xFF.
    let silence = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
    padded.extend(std::iter::repeat_n(silence, 50));
    stream_call(&mut ws, &mut call, &padded, None).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let (detail, export) = finished_transcript(&server, &sid).await;
    let caller = track_text(&export, "caller");
    let w = wer(JFK, &caller);
    println!("phone-path finals: {caller:?} (WER {:.1} %)", w * 100.0);
    for s in export["segments"].as_array().into_iter().flatten() {
        println!(
            "  {} {}-{} {}",
            s["track"], s["start_ms"], s["end_ms"], s["text"]
        );
    }
    assert!(w <= 0.12, "live phone-path WER {w} > 12 %: {caller:?}");
    assert_eq!(
        track_text(&export, "agent"),
        "",
        "nothing on the silent track"
    );
    // Segments are timed within the call.
    for s in export["segments"].as_array().unwrap() {
        assert!(s["end_ms"].as_i64().unwrap() <= 12_500, "{s}");
        assert!(s["start_ms"].as_i64().unwrap() < s["end_ms"].as_i64().unwrap());
    }
    // The summary is persisted with the call.
    assert!(
        detail["transcript"]["summary"]["caller_words"]
            .as_u64()
            .unwrap()
            >= 15,
        "{detail}"
    );

    let events = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .unwrap()
        .unwrap();
    let partials = events.iter().filter(|e| e["type"] == "partial").count();
    let finals: Vec<_> = events.iter().filter(|e| e["type"] == "final").collect();
    assert!(partials >= 1, "live partials were pushed: {events:?}");
    assert_eq!(finals.len(), export["segments"].as_array().unwrap().len());
    assert_eq!(events.last().unwrap()["type"], "end");
    // Caption latencies are measured.
    let m = server.metrics().await;
    let count = |name: &str| metric(&m, name);
    // One observation per utterance; an utterance may yield several finals.
    let timed = count("callstream_caption_final_latency_seconds_count") as usize;
    assert!(
        (1..=finals.len()).contains(&timed),
        "{timed} vs {}",
        finals.len()
    );
    assert!(count("callstream_caption_partial_latency_seconds_count") >= 1.0);

    // After the call: the transcript as WebVTT, speakers labelled.
    let path = format!(
        "/v1/calls/{}/transcript?format=vtt",
        detail["id"].as_str().unwrap()
    );
    let (status, vtt) = http_text(server.addr, "GET", &path, Some(&server.api_key), None).await;
    assert_eq!(status, 200);
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    assert!(vtt.contains("<v Caller>"), "{vtt}");

    // A late watcher over Server-Sent Events: the finals so far, then the end.
    let path = format!("/v1/calls/{}/captions", detail["id"].as_str().unwrap());
    let (status, sse) = http_text(server.addr, "GET", &path, Some(&server.api_key), None).await;
    assert_eq!(status, 200);
    assert_eq!(sse.matches("event: final").count(), finals.len(), "{sse}");
    assert!(sse.trim_end().ends_with(r#"data: {"type":"end"}"#), "{sse}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_is_attributed_per_track() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("callstream=warn")
        .try_init();
    let server = TestServer::start_live().await;
    let caller = callstream::loadgen::mulaw_frames(&fixture("call-caller.wav")).unwrap();
    let agent = callstream::loadgen::mulaw_frames(&fixture("call-agent.wav")).unwrap();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    stream_call(&mut ws, &mut call, &caller, Some(&agent)).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let (detail, export) = finished_transcript(&server, &call.call_sid).await;
    let caller_text = track_text(&export, "caller");
    let agent_text = track_text(&export, "agent");
    println!("caller: {caller_text:?}\nagent: {agent_text:?}");
    let caller_ref = "Hi, I am calling because my internet has been down since Monday. Thank you, that works for me.";
    let agent_ref = "I am sorry to hear that. I will schedule a technician for tomorrow morning.";
    // Synthetic voices through an 8 kHz μ-law line are hard for tiny.en: the
    // words are checked loosely; what this test pins is who said what, when.
    let (wc, wa) = (wer(caller_ref, &caller_text), wer(agent_ref, &agent_text));
    println!("WER caller {:.1} %, agent {:.1} %", wc * 100.0, wa * 100.0);
    assert!(wc <= 0.5 && wa <= 0.5, "caller {wc}, agent {wa}");
    let (c, a) = (caller_text.to_lowercase(), agent_text.to_lowercase());
    // Whisper's wording varies a little from run to run (its temperature
    // fallback samples), so each track must carry most of its own key words
    // and none of the other's.
    let caller_words = ["calling", "internet", "monday", "thank"];
    let agent_words = ["sorry", "tomorrow", "morning"];
    let hits = |text: &str, words: &[&str]| words.iter().filter(|w| text.contains(*w)).count();
    assert!(hits(&c, &caller_words) >= 3, "caller track: {c:?}");
    assert!(hits(&a, &agent_words) >= 2, "agent track: {a:?}");
    assert_eq!(
        hits(&a, &caller_words),
        0,
        "caller's words on the agent track: {a:?}"
    );
    assert_eq!(
        hits(&c, &agent_words),
        0,
        "agent's words on the caller track: {c:?}"
    );
    // Each line landed on its own track, at its own time.
    let segs = export["segments"].as_array().unwrap();
    let agent_start = segs
        .iter()
        .filter(|s| s["track"] == "agent")
        .map(|s| s["start_ms"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(
        (4_500..7_000).contains(&agent_start),
        "agent starts at {agent_start}"
    );
    assert!(!caller_text.to_lowercase().contains("technician"));
    assert!(!agent_text.to_lowercase().contains("internet"));
    // The summary names the caller's reason.
    let reason = detail["transcript"]["summary"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(reason.contains("internet"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_pii_redaction_applies_to_live_finals() {
    let server = TestServer::start_live().await;
    let on = callstream::store::TenantSettings {
        pii_redaction: true,
        ..Default::default()
    };
    server
        .store
        .set_tenant_settings(&server.tenant_id, &on)
        .await
        .unwrap();
    // A caller leaves a phone number and an e-mail address (festival voice,
    // see media-fixtures/pii-caller.md).
    let frames = callstream::loadgen::mulaw_frames(&fixture("pii-caller.wav")).unwrap();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;
    let call_id = server.state.sessions.open_calls()[0].1.clone();
    let path = format!("/v1/calls/{call_id}/captions");
    let key = server.api_key.clone();
    let addr = server.addr;
    // A watcher over SSE from the start sees what agents see.
    let watch = tokio::spawn(async move { http_text(addr, "GET", &path, Some(&key), None).await });
    stream_call(&mut ws, &mut call, &frames, None).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let (_, export) = finished_transcript(&server, &call.call_sid).await;
    let stored = track_text(&export, "caller");
    println!("redacted finals: {stored:?}");
    let (_, captions) = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .unwrap()
        .unwrap();
    // Partials and finals as pushed live.
    let live: String = captions
        .lines()
        .filter(|l| l.starts_with("data:"))
        .collect();
    assert!(live.contains(r#""type":"final""#), "{live}");
    let (_, txt) = http_text(
        server.addr,
        "GET",
        &format!("/v1/calls/{call_id}/transcript?format=txt"),
        Some(&server.api_key),
        None,
    )
    .await;
    // The words around the PII are transcribed...
    assert!(stored.to_lowercase().contains("call me back"), "{stored:?}");
    // ...the phone number is replaced in what is stored, exported and shown
    // live, partials included (tiny.en writes it "415-555-0134"; no digit
    // group may survive).
    for text in [&stored, &live, &txt] {
        assert!(text.contains("[PHONE]"), "{text}");
        for digits in ["0134", "555", "415"] {
            assert!(!text.contains(digits), "{digits} in {text}");
        }
    }
    // The e-mail address in what is kept (a partial may show it half-said).
    for text in [&stored, &txt] {
        assert!(text.contains("[EMAIL]"), "{text}");
        assert!(!text.to_lowercase().contains("example"), "{text}");
    }
}
