//! Live-caption admission, end to end on a gateway assembled as `serve`
//! assembles it (real Whisper, recordings, job workers): with one live slot,
//! the first call is captioned live; a second call at the same time is told
//! "captions unavailable: capacity", loses no audio, and ends with a
//! complete transcript and summary made from its recording after the call;
//! the slot frees when the first call ends.

mod common;

use std::time::Duration;

use callstream::store::TranscriptStatus;
use common::*;
use futures::SinkExt;

const REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, \
                         ask what you can do for your country.";

async fn open_call(server: &TestServer) -> (Ws, Call, String) {
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let sid = call.call_sid.clone();
    let mut id = None;
    for _ in 0..200 {
        if let Some(c) = server
            .store
            .find_call_by_external_id(&server.tenant_id, "twilio", &sid)
            .await
            .unwrap()
        {
            if server
                .state
                .sessions
                .open_calls()
                .iter()
                .any(|(_, open)| *open == c.id)
            {
                id = Some(c.id);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ws, call, id.expect("the stream starts"))
}

/// The call's transcript once it is complete (live or after the call).
async fn completed_transcript(server: &TestServer, call_id: &str) -> callstream::store::Transcript {
    for _ in 0..1200 {
        let call = server
            .store
            .get_call(&server.tenant_id, call_id)
            .await
            .unwrap();
        if let Some(t) = call.transcript_id {
            let t = server
                .store
                .get_transcript(&server.tenant_id, &t)
                .await
                .unwrap();
            if t.status == TranscriptStatus::Completed {
                return t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no complete transcript for {call_id}");
}

async fn text_of(server: &TestServer, transcript_id: &str) -> String {
    let segs = server
        .store
        .list_transcript_segments(&server.tenant_id, transcript_id)
        .await
        .unwrap();
    segs.iter()
        .filter(|s| s.track == "caller")
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_live_slot_is_told_and_transcribed_after_it_ends() {
    let mut server = TestServer::start_gateway(|cfg| {
        cfg.asr.max_live_calls = 1;
        cfg.jobs.poll_interval_ms = 20;
    })
    .await;
    let frames = jfk_frames();

    let (mut ws_a, mut a, a_id) = open_call(&server).await;
    let (mut ws_b, mut b, b_id) = open_call(&server).await;
    // B's watcher: told at once why there are no captions.
    let (addr, key) = (server.addr, server.api_key.clone());
    let path = format!("/v1/calls/{b_id}/captions");
    let watcher =
        tokio::spawn(async move { http_text(addr, "GET", &path, Some(&key), None).await });

    // Both calls carry the same speech on the caller track, all at once
    // (bunched frames: an admitted call takes them without shedding).
    for (ws, call) in [(&mut ws_a, &mut a), (&mut ws_b, &mut b)] {
        for (i, p) in frames.iter().enumerate() {
            let msg = call.media(
                callstream::providers::twilio::stream::StreamTrack::Inbound,
                i as u64 + 1,
                i as u64 * 20,
                p,
            );
            ws.feed(msg).await.unwrap();
        }
        ws.flush().await.unwrap();
    }
    for (ws, call) in [(&mut ws_a, &mut a), (&mut ws_b, &mut b)] {
        ws.send(call.stop()).await.unwrap();
        assert_eq!(expect_close(ws).await.0, 1000);
    }

    let (_, captions) = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("B's captions end with the call")
        .unwrap();
    assert!(captions.contains("event: status"), "{captions}");
    assert!(captions.contains(r#""reason":"capacity""#), "{captions}");
    assert!(
        captions.contains("captions unavailable: capacity"),
        "{captions}"
    );
    assert!(!captions.contains(r#""type":"partial""#), "{captions}");

    // A was captioned live; B from its recording, after the call, in full.
    let ta = completed_transcript(&server, &a_id).await;
    let tb = completed_transcript(&server, &b_id).await;
    let (text_a, text_b) = (
        text_of(&server, &ta.id).await,
        text_of(&server, &tb.id).await,
    );
    eprintln!("live: {text_a:?}\nafter the call: {text_b:?}");
    for text in [&text_a, &text_b] {
        let wer = callstream::transcript::wer::wer(REFERENCE, text);
        assert!(wer <= 0.15, "WER {wer:.2}: {text}");
    }
    assert!(tb.summary.as_ref().is_some_and(|s| s.is_object()), "{tb:?}");
    let logs = server
        .store
        .list_call_logs(&server.tenant_id, &b_id)
        .await
        .unwrap();
    assert!(
        logs.iter()
            .any(|l| l.event == "after_call_transcription_queued"),
        "{logs:?}"
    );
    let logs_a = server
        .store
        .list_call_logs(&server.tenant_id, &a_id)
        .await
        .unwrap();
    assert!(!logs_a.iter().any(|l| l.event.starts_with("after_call")));

    let m = server.metrics().await;
    let admissions = |o: &str| {
        metric(
            &m,
            &format!(r#"callstream_live_admissions_total{{outcome="{o}"}}"#),
        )
    };
    assert_eq!((admissions("admitted"), admissions("refused")), (1.0, 1.0));
    assert_eq!(
        metric(&m, "callstream_after_call_transcriptions_total"),
        1.0
    );
    assert_eq!(metric(&m, r#"callstream_live_calls{state="live"}"#), 0.0);
    assert_eq!(metric(&m, r#"callstream_live_calls{state="waiting"}"#), 0.0);

    // The slot is free again: the next call is captioned live.
    let (mut ws_c, mut c, _) = open_call(&server).await;
    ws_c.send(c.stop()).await.unwrap();
    expect_close(&mut ws_c).await;
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"callstream_live_admissions_total{outcome="admitted"}"#
        ),
        2.0
    );
    server.shutdown().await;
}
