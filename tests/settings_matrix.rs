//! Tenant settings × every path that produces or serves call data.
//!
//! The rows come from the settings definition (the fields of
//! `TenantSettings` as the API serialises them) and the columns from
//! `DataPath::ALL`; [`expect`] must name a cell for every pair, so a new
//! setting or a new path cannot land without its row. Each setting is
//! turned to its non-default value on a fresh gateway (assembled as `serve`
//! assembles it: recordings, live Whisper, job workers); a whole call life
//! runs through the public interfaces — the signed voice webhook, a
//! Twilio-format stream of real speech (the caller leaves a phone number),
//! a captions watcher, the provider's recording callback, a
//! re-transcription job, the transcript export and a retention sweep two
//! days on — and every cell of the row is checked against what happened.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callstream::providers::twilio::signature;
use callstream::recording::retention;
use callstream::store::{DataPath, TenantSettings};
use common::mock_twilio::MockTwilio;
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};

const NUMBER: &str = "+14155552671";
const CALLER: &str = "+14155550100";
const CONSENT: &str = "This call is recorded for quality.";
const DAY_MS: i64 = 86_400_000;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-fixtures")
        .join(name)
}

/// What one call life produced, path by path.
#[derive(Debug, Default)]
struct Observed {
    /// The TwiML answer to the voice webhook.
    answer: String,
    /// How the stream ended: close code and reason.
    stream_close: (u16, String),
    /// The call's recording (stream) status after the call, if any.
    stream_recording: Option<String>,
    /// Recording objects in storage after the call, before the provider's.
    files_after_call: usize,
    /// Call log events.
    events: Vec<String>,
    /// SSE data lines a watcher saw during the call.
    captions: Vec<Value>,
    /// The transcript stored during the call: (status, texts, summary).
    live: Option<(String, Vec<String>, Value)>,
    /// Whether the provider's recording was stored (and downloaded at all).
    provider_stored: bool,
    provider_downloaded: bool,
    /// Re-transcription: the POST status, then the stored texts and summary.
    batch_status: u16,
    batch: Option<(Vec<String>, Value)>,
    /// `GET …/transcript?format=txt` after everything.
    export: String,
    /// Recordings deleted by a sweep two days after the call.
    retention_deleted: usize,
}

/// What a cell expects: the path behaves as with default settings, or a
/// check of its own.
enum Expect {
    Normal,
    Check(fn(&Observed)),
}

/// Digits of a phone or card number surviving in `text`.
fn digit_runs(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 3 {
                return true;
            }
        } else if !matches!(c, '-' | ' ' | '.' | ',') {
            run = 0;
        }
    }
    false
}

/// Every string in a JSON document (a summary's texts, not its numbers).
fn strings(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(strings).collect::<Vec<_>>().join(" "),
        Value::Object(o) => o.values().map(strings).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn finals(o: &Observed) -> Vec<&Value> {
    o.captions.iter().filter(|c| c["type"] == "final").collect()
}

/// The path's outcome with default settings.
fn normal(path: DataPath, o: &Observed) {
    match path {
        DataPath::CallAnswer => {
            assert!(o.answer.contains("<Connect><Stream"), "{}", o.answer);
            assert!(!o.answer.contains("<Say>"), "{}", o.answer);
            assert_eq!(o.stream_close.0, 1000, "{:?}", o.stream_close);
        }
        DataPath::StreamRecording => {
            assert_eq!(o.stream_recording.as_deref(), Some("completed"));
            assert_eq!(o.files_after_call, 1);
        }
        DataPath::ProviderRecording => assert!(o.provider_stored && o.provider_downloaded),
        DataPath::LiveCaptions => assert!(!finals(o).is_empty(), "{:?}", o.captions),
        DataPath::LiveTranscript => {
            let (status, texts, summary) = o.live.as_ref().expect("a live transcript");
            assert_eq!(status, "completed");
            assert!(
                texts.join(" ").to_lowercase().contains("call me back"),
                "{texts:?}"
            );
            assert!(summary.is_object(), "{summary}");
        }
        DataPath::BatchTranscript => {
            assert_eq!(o.batch_status, 202);
            let (texts, summary) = o.batch.as_ref().expect("a batch transcript");
            assert!(
                texts.join(" ").to_lowercase().contains("call me back"),
                "{texts:?}"
            );
            assert!(summary.is_object(), "{summary}");
        }
        DataPath::TranscriptExport => {
            assert!(
                o.export.to_lowercase().contains("call me back"),
                "{}",
                o.export
            )
        }
        DataPath::Retention => assert_eq!(o.retention_deleted, 0),
    }
}

/// The matrix: what each setting (at the value [`scenario`] gives it)
/// does to each path. `Normal`: the setting does not govern the path.
fn expect(setting: &str, path: DataPath) -> Expect {
    use DataPath::*;
    use Expect::*;
    match (setting, path) {
        ("pii_redaction", LiveCaptions) => Check(|o| {
            let texts: Vec<String> = finals(o).iter().map(|f| f["text"].to_string()).collect();
            let all = texts.join(" ");
            assert!(all.contains("[PHONE]"), "{all}");
            assert!(!digit_runs(&all), "{all}");
        }),
        ("pii_redaction", LiveTranscript) => Check(|o| {
            let (_, texts, summary) = o.live.as_ref().expect("a live transcript");
            let all = texts.join(" ");
            assert!(all.contains("[PHONE]") && !digit_runs(&all), "{all}");
            assert!(!digit_runs(&strings(summary)), "{summary}");
        }),
        ("pii_redaction", BatchTranscript) => Check(|o| {
            assert_eq!(o.batch_status, 202);
            let (texts, summary) = o.batch.as_ref().expect("a batch transcript");
            let all = texts.join(" ");
            assert!(all.contains("[PHONE]") && !digit_runs(&all), "{all}");
            assert!(
                summary.is_object() && !digit_runs(&strings(summary)),
                "{summary}"
            );
        }),
        ("pii_redaction", TranscriptExport) => Check(|o| {
            assert!(o.export.contains("[PHONE]"), "{}", o.export);
            assert!(!digit_runs(&o.export), "{}", o.export);
        }),
        ("pii_redaction", _) => Normal,

        ("record_calls", StreamRecording) => Check(|o| {
            assert_eq!(o.stream_recording, None);
            assert_eq!(o.files_after_call, 0);
            assert!(
                !o.events.iter().any(|e| e.starts_with("recording_")),
                "{:?}",
                o.events
            );
        }),
        ("record_calls", ProviderRecording) => Check(|o| {
            assert!(!o.provider_stored && !o.provider_downloaded);
            assert!(
                o.events.iter().any(|e| e == "provider_recording_skipped"),
                "{:?}",
                o.events
            );
        }),
        // Nothing was recorded, so there is nothing to re-transcribe.
        ("record_calls", BatchTranscript) => Check(|o| {
            assert_eq!(o.batch_status, 409);
            assert!(o.batch.is_none());
        }),
        ("record_calls", _) => Normal,

        ("transcribe_live", LiveCaptions) => Check(|o| {
            let said: Vec<&Value> = o.captions.iter().filter(|c| c["type"] != "end").collect();
            assert!(said.is_empty(), "{said:?}");
        }),
        ("transcribe_live", LiveTranscript) => Check(|o| assert!(o.live.is_none(), "{:?}", o.live)),
        // Re-transcribing a recording is an operator's explicit request.
        ("transcribe_live", _) => Normal,

        ("retention_days", Retention) => Check(|o| {
            // The stream's recording and the provider's.
            assert_eq!(o.retention_deleted, 2);
        }),
        ("retention_days", _) => Normal,

        ("consent_announcement", CallAnswer) => Check(|o| {
            let say = o.answer.find(&format!("<Say>{CONSENT}</Say>"));
            let connect = o.answer.find("<Connect><Stream");
            assert!(say.is_some() && connect > say, "{}", o.answer);
            assert_eq!(o.stream_close.0, 1000);
        }),
        ("consent_announcement", _) => Normal,

        // No transcription minutes left: the call is turned away at the
        // answer, its stream refused at start; nothing of it is made.
        ("quotas", CallAnswer) => Check(|o| {
            assert!(o.answer.contains("<Hangup/>"), "{}", o.answer);
            assert!(!o.answer.contains("<Connect>"), "{}", o.answer);
            assert_eq!(o.stream_close.0, 1008, "{:?}", o.stream_close);
        }),
        ("quotas", StreamRecording) => Check(|o| {
            assert_eq!(
                (o.stream_recording.as_deref(), o.files_after_call),
                (None, 0)
            );
        }),
        ("quotas", LiveCaptions) => Check(|o| assert!(finals(o).is_empty())),
        ("quotas", LiveTranscript) => Check(|o| assert!(o.live.is_none())),
        ("quotas", BatchTranscript) => Check(|o| {
            // The provider's recording is there to transcribe; the quota is not.
            assert_eq!(o.batch_status, 429);
            assert!(o.batch.is_none());
        }),
        ("quotas", TranscriptExport) => Check(|o| assert_eq!(o.export.trim(), "")),
        ("quotas", ProviderRecording | Retention) => Normal,

        (other, _) => panic!("setting `{other}` has no row in the settings matrix"),
    }
}

/// The settings with `setting` at its non-default value.
fn scenario(setting: &str) -> TenantSettings {
    let mut s = TenantSettings::default();
    match setting {
        "pii_redaction" => s.pii_redaction = true,
        "record_calls" => s.record_calls = false,
        "transcribe_live" => s.transcribe_live = false,
        "retention_days" => s.retention_days = Some(1),
        "consent_announcement" => s.consent_announcement = Some(CONSENT.into()),
        "quotas" => s.quotas.monthly_transcription_minutes = Some(0),
        other => panic!("setting `{other}` has no scenario in the settings matrix"),
    }
    s
}

/// The settings' names, from their definition.
fn setting_names() -> Vec<String> {
    let doc = serde_json::to_value(TenantSettings::default()).unwrap();
    doc.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_setting_has_a_row_for_every_path() {
    for setting in setting_names() {
        scenario(&setting);
        for path in DataPath::ALL {
            // Panics for a missing row.
            let _ = expect(&setting, path);
        }
    }
}

/// Posts a form to `path` signed as Twilio signs it.
async fn twilio_post(server: &TestServer, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let url = format!("http://{}{path}", server.addr);
    let params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let resp = reqwest::Client::new()
        .post(&url)
        .header(
            "X-Twilio-Signature",
            signature::compute(AUTH_TOKEN, &url, &params),
        )
        .header(
            "I-Twilio-Idempotency-Token",
            uuid::Uuid::new_v4().to_string(),
        )
        .form(&params)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn texts(server_segments: &[callstream::store::Segment]) -> Vec<String> {
    server_segments.iter().map(|s| s.text.clone()).collect()
}

/// One call's life under `settings`, observed path by path.
async fn call_life(settings: &TenantSettings) -> Observed {
    let wav = std::fs::read(fixture("pii-caller.wav")).unwrap();
    let mock = MockTwilio::start(wav).await;
    let base = mock.base_url.clone();
    let mut server = TestServer::start_gateway(move |cfg| {
        cfg.providers.twilio.api_base_url = base;
        cfg.jobs.poll_interval_ms = 20;
    })
    .await;
    let tenant = server.tenant_id.clone();
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/phone-numbers",
        Some(&server.api_key),
        Some(&json!({ "number": NUMBER })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server
        .store
        .set_tenant_settings(&tenant, settings)
        .await
        .unwrap();
    let mut o = Observed::default();

    // Twilio asks what to do with a call to our number.
    let mut call = Call::new();
    let sid = call.call_sid.clone();
    let voice = [
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", NUMBER),
    ];
    let (status, answer) = twilio_post(&server, "/v1/providers/twilio/voice", &voice).await;
    assert_eq!(status, 200, "{answer}");
    o.answer = answer;
    let call_id = server
        .store
        .find_call_by_external_id(&tenant, "twilio", &sid)
        .await
        .unwrap()
        .expect("the answer creates the call")
        .id;

    // The stream the answer asks for (or, turned away, the one a client
    // tries anyway, signed), with a watcher from its start.
    let token = o
        .answer
        .split(r#"name="token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string);
    let mut ws = match &token {
        Some(_) => server.connect_with(None).await.unwrap(),
        None => server.connect_signed().await,
    };
    let params: Vec<(&str, &str)> = token.iter().map(|t| ("token", t.as_str())).collect();
    ws.send(call.start(&params)).await.unwrap();
    let opened = {
        let mut opened = false;
        for _ in 0..100 {
            if server
                .state
                .sessions
                .open_calls()
                .iter()
                .any(|(_, c)| *c == call_id)
            {
                opened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        opened
    };
    let (addr, key, path) = (
        server.addr,
        server.api_key.clone(),
        format!("/v1/calls/{call_id}/captions"),
    );
    let watcher =
        tokio::spawn(async move { http_text(addr, "GET", &path, Some(&key), None).await });
    if opened {
        // Paced as a provider sends it: 20 ms a frame.
        let frames = callstream::loadgen::mulaw_frames(&fixture("pii-caller.wav")).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (i, payload) in frames.iter().enumerate() {
            tick.tick().await;
            let msg = call.media(
                callstream::providers::twilio::stream::StreamTrack::Inbound,
                i as u64 + 1,
                i as u64 * 20,
                payload,
            );
            ws.send(msg).await.unwrap();
        }
        ws.send(call.stop()).await.unwrap();
    }
    o.stream_close = expect_close(&mut ws).await;
    // Everything the call set going (recorder, transcriber) has finished.
    let tracker = server.state.sessions.tracker();
    wait_until("call tasks", 120, || {
        let idle = server.state.sessions.open_calls().is_empty() && tracker.is_empty();
        async move { idle }
    })
    .await;
    let (_, captions) = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("the watcher's stream ends with the call")
        .unwrap();
    o.captions = captions
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();

    let stored = server.store.get_call(&tenant, &call_id).await.unwrap();
    if let Some(rec) = &stored.recording_id {
        o.stream_recording = Some(
            server
                .store
                .get_recording(&tenant, rec)
                .await
                .unwrap()
                .status
                .as_str()
                .to_string(),
        );
    }
    let recordings = server.state.recordings.clone().expect("recording on");
    o.files_after_call = recordings.storage().list("").unwrap().len();
    if let Some(t) = &stored.transcript_id {
        let live = server.store.get_transcript(&tenant, t).await.unwrap();
        let segs = server
            .store
            .list_transcript_segments(&tenant, t)
            .await
            .unwrap();
        o.live = Some((
            live.status.as_str().to_string(),
            texts(&segs),
            live.summary.unwrap_or(Value::Null),
        ));
    }

    // Twilio recorded the call too and says so.
    let rec_sid = format!("RE{:032x}", rand::random::<u128>());
    let rec_url = mock.recording_url(&rec_sid);
    let callback = [
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("RecordingSid", rec_sid.as_str()),
        ("RecordingUrl", rec_url.as_str()),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "11"),
        ("RecordingChannels", "1"),
        ("RecordingSource", "RecordVerb"),
    ];
    let (status, body) = twilio_post(&server, "/v1/providers/twilio/recording", &callback).await;
    assert_eq!(status, 204, "{body}");
    let store = server.store.clone();
    wait_until("the recording fetch job", 60, || {
        let store = store.clone();
        async move {
            store
                .count_open_jobs()
                .await
                .unwrap()
                .iter()
                .all(|c| c.count == 0)
        }
    })
    .await;
    let logs = server
        .store
        .list_call_logs(&tenant, &call_id)
        .await
        .unwrap();
    o.provider_stored = logs
        .iter()
        .any(|l| l.event == callstream::jobs::fetch::STORED_EVENT);
    o.provider_downloaded = mock.requests().iter().any(|r| r.path.contains(&rec_sid))
        || !mock.storage_requests().is_empty();

    // An operator re-transcribes the call.
    let (status, job) = http(
        server.addr,
        "POST",
        &format!("/v1/calls/{call_id}/transcriptions"),
        Some(&server.api_key),
        None,
    )
    .await;
    o.batch_status = status;
    if status == 202 {
        let id = job["id"].as_str().unwrap().to_string();
        let store = server.store.clone();
        let tenant2 = tenant.clone();
        wait_until("the transcription job", 120, || {
            let (store, tenant, id) = (store.clone(), tenant2.clone(), id.clone());
            async move {
                callstream::jobs::is_finished(store.get_job(&tenant, &id).await.unwrap().status)
            }
        })
        .await;
        let done = server.store.get_job(&tenant, &id).await.unwrap();
        let transcript_id = done.result.as_ref().expect("succeeded")["transcript_id"]
            .as_str()
            .unwrap()
            .to_string();
        let t = server
            .store
            .get_transcript(&tenant, &transcript_id)
            .await
            .unwrap();
        let segs = server
            .store
            .list_transcript_segments(&tenant, &transcript_id)
            .await
            .unwrap();
        o.batch = Some((texts(&segs), t.summary.unwrap_or(Value::Null)));
    }
    let (status, export) = http_text(
        server.addr,
        "GET",
        &format!("/v1/calls/{call_id}/transcript?format=txt"),
        Some(&server.api_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    o.export = export;

    let report = retention::sweep(&recordings, callstream::store::now_ms() + 2 * DAY_MS)
        .await
        .unwrap();
    o.retention_deleted = report.deleted;
    o.events = server
        .store
        .list_call_logs(&tenant, &call_id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.event)
        .collect();
    server.shutdown().await;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_setting_governs_exactly_its_paths() {
    // The reference: default settings, every path at its normal outcome.
    let baseline = call_life(&TenantSettings::default()).await;
    for path in DataPath::ALL {
        normal(path, &baseline);
    }
    let mut checked: HashMap<String, usize> = HashMap::new();
    for setting in setting_names() {
        let o = call_life(&scenario(&setting)).await;
        eprintln!("{setting}: {o:?}");
        for path in DataPath::ALL {
            eprintln!("  {setting} × {}", path.as_str());
            match expect(&setting, path) {
                Expect::Normal => normal(path, &o),
                Expect::Check(check) => check(&o),
            }
            *checked.entry(setting.clone()).or_default() += 1;
        }
    }
    assert!(checked.values().all(|&n| n == DataPath::ALL.len()));
}
