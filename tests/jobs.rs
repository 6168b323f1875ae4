//! The durable job queue and its two job kinds, end to end:
//! - batch re-transcription of a real recorded call (JFK speech streamed
//!   through the Twilio endpoint with recording on) by the real Whisper
//!   model, stored once even when the job runs again;
//! - a Twilio recording status callback (signed like Twilio signs it) that
//!   queues the download of the provider's recording from a local Twilio
//!   stand-in that fails the first attempts; the stored copy decrypts to
//!   the very bytes served;
//! - retries with backoff, attempts running out, permanent failures, a
//!   dead worker's lease expiring, and a restart with a fresh store and
//!   pool picking up what the killed one held.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callstream::config::Config;
use callstream::gateway::recording::RecordingSinks;
use callstream::jobs::{
    fetch, is_finished, transcribe, JobContext, JobError, JobHandler, PoolSettings, WorkerPool,
};
use callstream::metrics::Metrics;
use callstream::providers::twilio::signature;
use callstream::recording::{LocalStorage, Recordings};
use callstream::store::{
    now_ms, Direction, Job, JobStatus, NewJob, Role, Store, StreamCall, TranscriptStatus,
};
use common::mock_twilio::{MockTwilio, FLAKY_FAILURES, FLAKY_RECORDING, MISSING_RECORDING};
use common::*;
use futures::SinkExt;

const REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, \
                         ask what you can do for your country.";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-fixtures")
        .join(name)
}

/// Quick polling and short backoff so the tests do not wait on defaults.
fn settings(lease_ms: u64) -> PoolSettings {
    PoolSettings {
        concurrency: 2,
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_millis(lease_ms),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

/// A server whose streams are recorded, with its config tweaked.
async fn recording_server(tweak: impl FnOnce(&mut Config)) -> (TestServer, Recordings) {
    let slot: Arc<Mutex<Option<Recordings>>> = Arc::default();
    let s = slot.clone();
    let server = TestServer::start_full(tweak, move |state, captured| {
        let storage = Arc::new(LocalStorage::new(state.config.recording_dir()).unwrap());
        let keys = callstream::recording::keyring(&state.config, state.store.clone()).unwrap();
        let recordings = Recordings::new(
            state.store.clone(),
            storage,
            keys,
            state.metrics.clone(),
            state.config.recording.max_duration_secs,
        );
        *s.lock().unwrap() = Some(recordings.clone());
        Arc::new(RecordingSinks {
            recordings,
            queue: state.config.stream.recording_queue,
            tracker: state.sessions.tracker(),
            next: Arc::new(CaptureSinks(captured)),
            after_call_attempts: 5,
        })
    })
    .await;
    let recordings = slot.lock().unwrap().take().unwrap();
    (server, recordings)
}

/// Waits (bounded) for a job to succeed or fail.
async fn finished_job(store: &Store, tenant: &str, id: &str) -> Job {
    for _ in 0..3000 {
        let job = store.get_job(tenant, id).await.unwrap();
        if is_finished(job.status) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} did not finish");
}

/// A call's detail once its recording is finished.
async fn recorded_call(server: &TestServer, call_sid: &str) -> serde_json::Value {
    for _ in 0..500 {
        let (_, page) = server.get("/v1/calls").await;
        let id = page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["external_call_id"] == call_sid)
            .map(|c| c["id"].as_str().unwrap().to_string());
        if let Some(id) = id {
            let (_, detail) = server.get(&format!("/v1/calls/{id}")).await;
            if detail["recording"]["status"] == "completed" {
                return detail;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("call {call_sid} was not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_is_retranscribed_once_by_a_batch_job() {
    let (mut server, recordings) = recording_server(|_| {}).await;
    let key = server.api_key.clone();
    let post = |path: String| {
        let key = key.clone();
        let addr = server.addr;
        async move { http(addr, "POST", &path, Some(&key), None).await }
    };

    // JFK on both tracks of a real Twilio-format stream, recorded.
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let detail = recorded_call(&server, &call.call_sid).await;
    let call_id = detail["id"].as_str().unwrap().to_string();

    // Unknown call: 404; a call without a recording: 409.
    let (status, body) = post("/v1/calls/nope/transcriptions".into()).await;
    assert_eq!((status, &body["error"]["code"]), (404, &"not_found".into()));
    let bare = server
        .store
        .start_stream_call(&server.tenant_id, &stream_call("CA1", "MZ1"), now_ms())
        .await
        .unwrap();
    let (status, body) = post(format!("/v1/calls/{}/transcriptions", bare.id)).await;
    assert_eq!((status, &body["error"]["code"]), (409, &"conflict".into()));
    // Agents may read jobs but not start them (they use quota).
    let agent = server
        .store
        .create_user(&server.tenant_id, "ag", None, Role::Agent)
        .await
        .unwrap();
    let (status, _) = http(
        server.addr,
        "POST",
        &format!("/v1/calls/{call_id}/transcriptions"),
        Some(agent.key.plaintext.expose()),
        None,
    )
    .await;
    assert_eq!(status, 403);

    let (status, queued) = post(format!("/v1/calls/{call_id}/transcriptions")).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["call_id"], call_id.as_str());
    assert_eq!(queued["recording_id"], detail["recording_id"]);
    let job_id = queued["id"].as_str().unwrap().to_string();

    let handler = Arc::new(transcribe::TranscriptionHandler {
        store: server.store.clone(),
        recordings: recordings.clone(),
        engine: whisper_asr_engine(),
    });
    let pool = WorkerPool::start(
        server.store.clone(),
        vec![handler.clone()],
        settings(30_000),
        server.state.metrics.clone(),
    );
    finished_job(&server.store, &server.tenant_id, &job_id).await;
    let (status, job) = server
        .get(&format!("/v1/transcription-jobs/{job_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["progress"].as_f64(), job["attempts"].as_i64()),
        (Some(1.0), Some(1))
    );
    let transcript_id = job["transcript_id"].as_str().unwrap().to_string();

    let tenant = server.tenant_id.clone();
    let t = server
        .store
        .get_transcript(&tenant, &transcript_id)
        .await
        .unwrap();
    assert_eq!(t.status, TranscriptStatus::Completed);
    assert_eq!(t.call_id.as_deref(), Some(call_id.as_str()));
    let segments = server
        .store
        .list_transcript_segments(&tenant, &transcript_id)
        .await
        .unwrap();
    for track in ["caller", "agent"] {
        let text: Vec<&str> = segments
            .iter()
            .filter(|s| s.track == track)
            .map(|s| s.text.as_str())
            .collect();
        let text = text.join(" ");
        let wer = callstream::transcript::wer::wer(REFERENCE, &text);
        eprintln!("batch job, {track} track: WER {:.1}% ({text})", wer * 100.0);
        assert!(wer <= 0.10, "{track}: WER {wer:.3}: {text}");
    }
    // It is the call's transcript now, served by the transcript endpoint.
    let (_, call_now) = server.get(&format!("/v1/calls/{call_id}")).await;
    assert_eq!(call_now["transcript_id"], transcript_id.as_str());
    let (status, text) = http_text(
        server.addr,
        "GET",
        &format!("/v1/calls/{call_id}/transcript?format=txt"),
        Some(&server.api_key),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.to_lowercase().contains("ask not"), "{text}");

    // The job runs again (say its worker died after storing the transcript
    // but before marking the job): no second transcript.
    sqlx::query("UPDATE jobs SET status = 'queued', run_after = 0 WHERE id = $1")
        .bind(&job_id)
        .execute(server.store.pool())
        .await
        .unwrap();
    let again = finished_job(&server.store, &tenant, &job_id).await;
    assert_eq!(again.status, JobStatus::Succeeded);
    assert_eq!(again.attempts, 2);
    assert_eq!(
        again.result.as_ref().unwrap()["transcript_id"],
        transcript_id.as_str()
    );
    assert_eq!(again.result.as_ref().unwrap()["reused"], true);
    assert_eq!(
        server
            .store
            .count_call_transcripts(&tenant, &call_id)
            .await
            .unwrap(),
        1
    );
    // Another tenant sees no such job.
    let other = server.store.create_tenant("Other", None).await.unwrap();
    let other_key = server
        .store
        .create_api_key(&other.id, "admin", Role::Admin)
        .await
        .unwrap();
    let (status, _) = http(
        server.addr,
        "GET",
        &format!("/v1/transcription-jobs/{job_id}"),
        Some(other_key.plaintext.expose()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"callstream_jobs_total{kind="transcription",outcome="succeeded"}"#
        ),
        2.0
    );
    pool.stop(Duration::from_secs(5)).await;
    server.shutdown().await;
}

fn stream_call<'a>(call_sid: &'a str, stream_sid: &'a str) -> StreamCall<'a> {
    StreamCall {
        provider: "twilio",
        external_call_id: call_sid,
        stream_id: stream_sid,
        direction: Direction::Inbound,
        from_number: None,
        to_number: None,
    }
}

/// Posts a recording status callback the way Twilio does: form fields,
/// `X-Twilio-Signature` over the URL and sorted fields.
async fn post_callback(
    server: &TestServer,
    fields: &[(&str, &str)],
    signature: Option<&str>,
) -> u16 {
    let url = format!("http://{}/v1/providers/twilio/recording", server.addr);
    let params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = signature.map_or_else(
        || signature::compute(AUTH_TOKEN, &url, &params),
        str::to_string,
    );
    reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", sig)
        .header(
            "I-Twilio-Idempotency-Token",
            uuid::Uuid::new_v4().to_string(),
        )
        .form(&params)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn job_for_recording(store: &Store, recording_sid: &str) -> String {
    sqlx::query_scalar("SELECT id FROM jobs WHERE dedup_key = $1")
        .bind(recording_sid)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_recording_is_fetched_with_retries_and_stored_encrypted() {
    let wav = std::fs::read(fixture("jfk.wav")).unwrap();
    let mock = MockTwilio::start(wav.clone()).await;
    let base = mock.base_url.clone();
    let (mut server, recordings) =
        recording_server(move |cfg| cfg.providers.twilio.api_base_url = base).await;
    let tenant = server.tenant_id.clone();
    let call_sid = "CA0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";
    let call = server
        .store
        .start_stream_call(&tenant, &stream_call(call_sid, "MZ2"), now_ms())
        .await
        .unwrap();
    let flaky_url = mock.recording_url(FLAKY_RECORDING);
    let fields = |sid: &'static str, url: &'static str, status: &'static str| {
        vec![
            ("AccountSid", ACCOUNT_SID),
            ("CallSid", call_sid),
            ("RecordingSid", sid),
            ("RecordingUrl", url),
            ("RecordingStatus", status),
            ("RecordingDuration", "11"),
            ("RecordingChannels", "1"),
            ("RecordingSource", "RecordVerb"),
            ("RecordingStartTime", "Tue, 31 Aug 2010 20:36:28 +0000"),
            ("ErrorCode", "0"),
        ]
    };
    let flaky_url: &'static str = Box::leak(flaky_url.into_boxed_str());
    let missing_url: &'static str =
        Box::leak(mock.recording_url(MISSING_RECORDING).into_boxed_str());

    // Unsigned, wrongly signed, or signed for another body: refused, nothing queued.
    let completed = fields(FLAKY_RECORDING, flaky_url, "completed");
    assert_eq!(post_callback(&server, &completed, Some("")).await, 403);
    assert_eq!(
        post_callback(&server, &completed, Some("bm9wZQ==")).await,
        403
    );
    let url = format!("http://{}/v1/providers/twilio/recording", server.addr);
    let other: Vec<(String, String)> = fields(FLAKY_RECORDING, flaky_url, "in-progress")
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let other_sig = signature::compute(AUTH_TOKEN, &url, &other);
    assert_eq!(
        post_callback(&server, &completed, Some(&other_sig)).await,
        403
    );
    assert!(server.store.count_open_jobs().await.unwrap().is_empty());

    // Progress callbacks queue nothing; `completed` (sent twice, as Twilio
    // retries) queues one job.
    assert_eq!(
        post_callback(
            &server,
            &fields(FLAKY_RECORDING, flaky_url, "in-progress"),
            None
        )
        .await,
        204
    );
    assert!(server.store.count_open_jobs().await.unwrap().is_empty());
    assert_eq!(post_callback(&server, &completed, None).await, 204);
    assert_eq!(post_callback(&server, &completed, None).await, 204);
    let missing = fields(MISSING_RECORDING, missing_url, "completed");
    assert_eq!(post_callback(&server, &missing, None).await, 204);
    let open: i64 = server
        .store
        .count_open_jobs()
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum();
    assert_eq!(open, 2);

    let handler = Arc::new(fetch::RecordingFetchHandler {
        store: server.store.clone(),
        recordings: recordings.clone(),
        provider: server.state.provider.clone(),
    });
    let pool = WorkerPool::start(
        server.store.clone(),
        vec![handler],
        settings(30_000),
        server.state.metrics.clone(),
    );
    let flaky_job = job_for_recording(&server.store, FLAKY_RECORDING).await;
    let job = finished_job(&server.store, &tenant, &flaky_job).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts as usize, FLAKY_FAILURES + 1);
    let recording_id = job.result.as_ref().unwrap()["recording_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Every download asked with the tenant's credentials (the mock refuses
    // others) for the callback's recording.
    let downloads: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(FLAKY_RECORDING))
        .collect();
    assert_eq!(downloads.len(), FLAKY_FAILURES + 1);
    assert!(downloads.iter().all(
        |r| r.method == "GET" && r.basic_auth == Some((ACCOUNT_SID.into(), AUTH_TOKEN.into()))
    ));

    // Stored encrypted, linked to the call, decrypting to the bytes served.
    let (row, mut reader) = recordings.open_wav(&tenant, &recording_id).await.unwrap();
    assert_eq!(row.call_id.as_deref(), Some(call.id.as_str()));
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert_eq!(back, wav);
    let call_now = server.store.get_call(&tenant, &call.id).await.unwrap();
    assert_eq!(
        call_now.recording_id.as_deref(),
        Some(recording_id.as_str())
    );

    // A recording the provider does not have: failed at once, logged.
    let missing_job = job_for_recording(&server.store, MISSING_RECORDING).await;
    let job = finished_job(&server.store, &tenant, &missing_job).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Failed, 1));
    assert!(
        job.error.as_deref().unwrap().contains("404"),
        "{:?}",
        job.error
    );

    let events: Vec<(String, serde_json::Value)> = server
        .store
        .list_call_logs(&tenant, &call.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.event, l.detail))
        .collect();
    let count = |event: &str, sid: &str| {
        events
            .iter()
            .filter(|(e, d)| e == event && d["recording_sid"] == sid)
            .count()
    };
    // The repeated `completed` callback is logged once.
    assert_eq!(
        count("provider_recording_status", FLAKY_RECORDING),
        2,
        "{events:?}"
    );
    assert_eq!(
        count("provider_recording_fetch_error", FLAKY_RECORDING),
        FLAKY_FAILURES
    );
    assert_eq!(count("provider_recording_stored", FLAKY_RECORDING), 1);
    assert_eq!(count("provider_recording_failed", MISSING_RECORDING), 1);

    // The job running again stores nothing new.
    sqlx::query("UPDATE jobs SET status = 'queued', run_after = 0 WHERE id = $1")
        .bind(&flaky_job)
        .execute(server.store.pool())
        .await
        .unwrap();
    let again = finished_job(&server.store, &tenant, &flaky_job).await;
    assert_eq!(
        again.result.as_ref().unwrap()["recording_id"],
        recording_id.as_str()
    );
    assert_eq!(again.result.as_ref().unwrap()["reused"], true);
    let fetched = mock
        .requests()
        .iter()
        .filter(|r| r.path.contains(FLAKY_RECORDING))
        .count();
    assert_eq!(fetched, FLAKY_FAILURES + 1);

    let metrics = server.metrics().await;
    let kind = fetch::KIND;
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"callstream_jobs_total{{kind="{kind}",outcome="retried"}}"#)
        ),
        FLAKY_FAILURES as f64
    );
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"callstream_jobs_total{{kind="{kind}",outcome="failed"}}"#)
        ),
        1.0
    );
    pool.stop(Duration::from_secs(5)).await;
    server.shutdown().await;
}

/// A handler that fails its first `fail_first` attempts, then succeeds;
/// `permanent` makes failures final; `hang` makes every attempt hang.
struct TestHandler {
    runs: AtomicUsize,
    fail_first: usize,
    permanent: bool,
    hang: bool,
}

impl TestHandler {
    fn new(fail_first: usize) -> Arc<Self> {
        Arc::new(Self {
            runs: AtomicUsize::new(0),
            fail_first,
            permanent: false,
            hang: false,
        })
    }
}

#[async_trait::async_trait]
impl JobHandler for TestHandler {
    fn kind(&self) -> &'static str {
        "test"
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<serde_json::Value, JobError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.progress(0.5).await;
        if self.hang {
            std::future::pending::<()>().await;
        }
        if n <= self.fail_first {
            return Err(if self.permanent {
                JobError::permanent(format!("bad input {n}"))
            } else {
                JobError::retry(format!("boom {n}"))
            });
        }
        Ok(serde_json::json!({"echo": job.payload, "run": n}))
    }
}

/// One deadline covers every part of shutdown: with a stream open and a job
/// stuck in its handler, `serve` winds both down and returns. The stream
/// gets 1001 and its call is interrupted; the job's attempt is abandoned
/// (still running under its lease, to be claimed again after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_winds_down_an_open_stream_and_a_running_job_by_one_deadline() {
    let stuck = Arc::new(TestHandler {
        runs: AtomicUsize::new(0),
        fail_first: 0,
        permanent: false,
        hang: true,
    });
    let handler = stuck.clone();
    let mut server = TestServer::start_with_jobs(
        |cfg| cfg.shutdown_grace_secs = 1,
        move |state| {
            WorkerPool::start(
                state.store.clone(),
                vec![handler],
                settings(60_000),
                state.metrics.clone(),
            )
        },
    )
    .await;
    let job = enqueue(&server.store, &server.tenant_id, 5).await;
    eventually(|| async { stuck.runs.load(Ordering::SeqCst) == 1 }).await;

    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_audio(&mut ws, &mut call, &jfk_frames()[..10]).await;
    eventually(|| async { server.state.sessions.open_calls().len() == 1 }).await;
    let closing = tokio::spawn(async move { expect_close(&mut ws).await });

    let report = server.shutdown().await;
    assert_eq!(closing.await.unwrap().0, 1001, "the stream was told why");
    assert!(report.jobs_forced, "the stuck attempt was abandoned");
    assert_eq!(report.streams_forced, 0, "the stream wound down by itself");
    let job = server.store.get_job(&server.tenant_id, &job).await.unwrap();
    assert_eq!(job.status, JobStatus::Running, "left to its lease");
    let calls = server
        .store
        .list_calls(&server.tenant_id, 10, None)
        .await
        .unwrap()
        .calls;
    let ended = calls
        .iter()
        .find(|c| c.external_call_id == call.call_sid)
        .expect("the call row");
    assert_eq!(ended.status.as_str(), "interrupted");
}

async fn temp_store(dir: &Path) -> (Store, String) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("jobs.db").display());
    let store = Store::connect(&url).await.unwrap();
    let tenant = store.create_tenant("T", None).await.unwrap();
    (store, tenant.id)
}

async fn enqueue(store: &Store, tenant: &str, max_attempts: u32) -> String {
    let payload = serde_json::json!({"n": 1});
    store
        .enqueue_job(
            tenant,
            &NewJob {
                kind: "test",
                payload: &payload,
                max_attempts,
                dedup_key: None,
                run_after: None,
            },
            now_ms(),
        )
        .await
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_attempts_are_retried_then_failed_with_the_error_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = temp_store(dir.path()).await;
    let metrics = Arc::new(Metrics::new());

    // Two failures, then success: three attempts.
    let handler = TestHandler::new(2);
    let pool = WorkerPool::start(
        store.clone(),
        vec![handler.clone()],
        settings(30_000),
        metrics.clone(),
    );
    let id = enqueue(&store, &tenant, 5).await;
    let job = finished_job(&store, &tenant, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 3));
    assert_eq!(job.result.as_ref().unwrap()["run"], 3);
    assert_eq!(job.error, None);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
    pool.stop(Duration::from_secs(5)).await;

    // Always failing: attempts run out, the last error is kept.
    let handler = TestHandler::new(usize::MAX);
    let pool = WorkerPool::start(
        store.clone(),
        vec![handler.clone()],
        settings(30_000),
        metrics.clone(),
    );
    let id = enqueue(&store, &tenant, 3).await;
    let job = finished_job(&store, &tenant, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Failed, 3));
    assert_eq!(
        job.error.as_deref(),
        Some("gave up after 3 attempts: boom 3")
    );
    pool.stop(Duration::from_secs(5)).await;

    // A permanent error fails at once.
    let handler = Arc::new(TestHandler {
        runs: AtomicUsize::new(0),
        fail_first: usize::MAX,
        permanent: true,
        hang: false,
    });
    let pool = WorkerPool::start(
        store.clone(),
        vec![handler.clone()],
        settings(30_000),
        metrics.clone(),
    );
    let id = enqueue(&store, &tenant, 5).await;
    let job = finished_job(&store, &tenant, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Failed, 1));
    assert_eq!(job.error.as_deref(), Some("bad input 1"));
    pool.stop(Duration::from_secs(5)).await;

    let text = metrics.render();
    let m = |outcome: &str| {
        metric(
            &text,
            &format!(r#"callstream_jobs_total{{kind="test",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!((m("retried"), m("succeeded"), m("failed")), (4.0, 1.0, 2.0));
    callstream::jobs::refresh_queue_depth(&store, &metrics).await;
    assert!(!metrics.render().contains("callstream_jobs_queue_depth{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_claimed_again_when_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = temp_store(dir.path()).await;
    let id = enqueue(&store, &tenant, 5).await;
    // A worker claims it for 300 ms and dies without a word.
    let held = store
        .claim_job(&["test"], "dead-worker", 300, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((held.id.as_str(), held.attempts), (id.as_str(), 1));
    let metrics = Arc::new(Metrics::new());
    callstream::jobs::refresh_queue_depth(&store, &metrics).await;
    assert_eq!(
        metric(
            &metrics.render(),
            r#"callstream_jobs_queue_depth{kind="test",status="running"}"#
        ),
        1.0
    );
    let handler = TestHandler::new(0);
    let pool = WorkerPool::start(
        store.clone(),
        vec![handler.clone()],
        settings(30_000),
        metrics,
    );
    let job = finished_job(&store, &tenant, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 2));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    // The dead worker, back from the grave, cannot overwrite the outcome.
    assert!(!store
        .complete_job(&id, "dead-worker", &serde_json::json!({}), now_ms())
        .await
        .unwrap());
    pool.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_running_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = temp_store(dir.path()).await;
    let running = enqueue(&store, &tenant, 5).await;

    // First process: one worker, stuck in its job when the process dies.
    let stuck = Arc::new(TestHandler {
        runs: AtomicUsize::new(0),
        fail_first: 0,
        permanent: false,
        hang: true,
    });
    let mut one = settings(400);
    one.concurrency = 1;
    let pool = WorkerPool::start(
        store.clone(),
        vec![stuck.clone()],
        one,
        Arc::new(Metrics::new()),
    );
    for _ in 0..500 {
        if stuck.runs.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stuck.runs.load(Ordering::SeqCst), 1);
    let waiting = enqueue(&store, &tenant, 5).await;
    pool.abort();
    store.close().await;

    // Second process: a new connection to the same database, a new pool.
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        store.get_job(&tenant, &running).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(
        store.get_job(&tenant, &waiting).await.unwrap().status,
        JobStatus::Queued
    );
    let handler = TestHandler::new(0);
    let pool = WorkerPool::start(
        store.clone(),
        vec![handler.clone()],
        settings(30_000),
        Arc::new(Metrics::new()),
    );
    let a = finished_job(&store, &tenant, &running).await;
    let b = finished_job(&store, &tenant, &waiting).await;
    assert_eq!((a.status, a.attempts), (JobStatus::Succeeded, 2));
    assert_eq!((b.status, b.attempts), (JobStatus::Succeeded, 1));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    pool.stop(Duration::from_secs(5)).await;
}
