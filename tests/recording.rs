//! Encrypted call recordings end to end: real speech through the Twilio
//! WebSocket endpoint into an age-encrypted stereo WAV, read back by our
//! reader and by the standard `age` CLI with the key the CLI exports; a
//! real `callstream serve` killed with SIGKILL mid-call and restarted;
//! storage that is unwritable or fills up mid-call.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use callstream::gateway::recording::RecordingSinks;
use callstream::media::codec::Codec;
use callstream::providers::twilio::stream::StreamTrack;
use callstream::recording::storage::{ObjectInfo, ObjectRead, ObjectWriter, Storage, StorageError};
use callstream::recording::{LocalStorage, Recordings};
use callstream::store::RecordingStatus;
use common::*;
use futures::SinkExt;

const BIN: &str = env!("CARGO_BIN_EXE_callstream");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-fixtures")
        .join(name)
}

/// The JFK fixture's own 8 kHz μ-law bytes as base64 20 ms frames.
fn jfk_ulaw_frames() -> Vec<String> {
    let bytes = std::fs::read(fixture("jfk-8k-ulaw.wav")).unwrap();
    let info = callstream::recording::wav::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(
        (info.format_tag, info.sample_rate),
        (7, 8000),
        "μ-law 8 kHz"
    );
    let data = &bytes[info.data_offset as usize..(info.data_offset + info.data_len) as usize];
    data.chunks_exact(160)
        .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
        .collect()
}

/// The agent's side of the two-voice call fixture, μ-law encoded.
fn agent_frames() -> Vec<String> {
    callstream::loadgen::mulaw_frames(&fixture("call-agent.wav")).unwrap()
}

/// What the gateway must hear: the frames μ-law decoded.
fn decoded(frames: &[String]) -> Vec<i16> {
    let mut out = Vec::new();
    for f in frames {
        let bytes = base64::engine::general_purpose::STANDARD.decode(f).unwrap();
        Codec::Mulaw.decode_into(&bytes, &mut out).unwrap();
    }
    out
}

/// Sends the caller's frames from 0 and the agent's from `agent_at`
/// (a frame index), interleaved in time order as Twilio does.
async fn send_call(
    ws: &mut Ws,
    call: &mut Call,
    caller: &[String],
    agent: &[String],
    agent_at: usize,
) {
    let slots = caller.len().max(agent_at + agent.len());
    for slot in 0..slots {
        let ts = slot as u64 * 20;
        if let Some(p) = caller.get(slot) {
            ws.feed(call.media(StreamTrack::Inbound, slot as u64 + 1, ts, p))
                .await
                .unwrap();
        }
        if let Some(p) = slot.checked_sub(agent_at).and_then(|i| agent.get(i)) {
            ws.feed(call.media(StreamTrack::Outbound, slot as u64 + 1, ts, p))
                .await
                .unwrap();
        }
    }
    ws.flush().await.unwrap();
}

/// A WAV's samples as (left, right) channels.
fn stereo(wav: &[u8]) -> (Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::new(std::io::Cursor::new(wav)).expect("a WAV hound reads");
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    (
        s.iter().step_by(2).copied().collect(),
        s.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// A test server whose sinks record (and capture, standing in for
/// transcription, which must go on whatever happens to the recording).
async fn recording_server(
    storage: impl FnOnce(&Path) -> Arc<dyn Storage>,
) -> (TestServer, Recordings) {
    let slot: Arc<Mutex<Option<Recordings>>> = Arc::default();
    let s = slot.clone();
    let server = TestServer::start_full(
        |_| {},
        move |state, captured| {
            let storage = storage(&state.config.recording_dir());
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
        },
    )
    .await;
    let recordings = slot.lock().unwrap().take().unwrap();
    (server, recordings)
}

fn local(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(LocalStorage::new(dir).unwrap())
}

/// The call's detail (with its recording) once its recording has ended
/// and the call log says how.
async fn finished_call(server: &TestServer, call_sid: &str) -> serde_json::Value {
    for _ in 0..200 {
        let (_, page) = server.get("/v1/calls").await;
        let id = page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["external_call_id"] == call_sid)
            .map(|c| c["id"].as_str().unwrap().to_string());
        if let Some(id) = id {
            let (_, detail) = server.get(&format!("/v1/calls/{id}")).await;
            // The handler reads logs and recording one after the other:
            // wait for both the final status and the log that explains it.
            let done = detail["status"] != "in_progress"
                && detail["recording"]["status"]
                    .as_str()
                    .is_some_and(|s| s != "recording")
                && log_events(&detail)
                    .iter()
                    .any(|e| e == "recording_completed" || e == "recording_failed");
            if done {
                return detail;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {call_sid} and its recording did not finish within 10 s");
}

fn log_events(detail: &serde_json::Value) -> Vec<String> {
    detail["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn speech_round_trips_into_an_encrypted_stereo_recording() {
    let (mut server, recordings) = recording_server(local).await;
    let caller = jfk_ulaw_frames();
    let agent = agent_frames();
    // The agent starts a second in: its audio must start a second in.
    let agent_at = 50;
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_call(&mut ws, &mut call, &caller, &agent, agent_at).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    let detail = finished_call(&server, &call.call_sid).await;
    assert_eq!(detail["status"], "completed");
    let rec = &detail["recording"];
    assert_eq!(rec["status"], "completed", "{detail}");
    assert_eq!(detail["recording_id"], rec["id"]);
    assert_eq!(
        (rec["channels"].as_i64(), rec["sample_rate"].as_i64()),
        (Some(2), Some(8000))
    );
    assert_eq!(rec["algorithm"], "age-x25519");
    assert!(rec["key_id"].is_string());
    let frames = (agent_at + agent.len()) * 160;
    assert_eq!(rec["duration_ms"].as_u64().unwrap(), frames as u64 / 8);
    assert_eq!(rec["bytes"].as_u64().unwrap(), 44 + 4 * frames as u64);
    let events = log_events(&detail);
    assert!(
        events.contains(&"recording_started".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"recording_completed".to_string()),
        "{events:?}"
    );

    // Decrypted: caller left, agent right, every sample where it was sent.
    let rec_id = rec["id"].as_str().unwrap();
    let (row, mut reader) = recordings
        .open_wav(&server.tenant_id, rec_id)
        .await
        .unwrap();
    assert_eq!(row.status, RecordingStatus::Completed);
    let mut wav = Vec::new();
    reader.read_to_end(&mut wav).unwrap();
    assert_eq!(wav.len() as u64, reader.len());
    let (left, right) = stereo(&wav);
    assert_eq!(left.len(), frames);
    let want_caller = decoded(&caller);
    let want_agent = decoded(&agent);
    assert_eq!(left[..want_caller.len()], want_caller[..]);
    assert!(left[want_caller.len()..].iter().all(|s| *s == 0));
    assert!(right[..agent_at * 160].iter().all(|s| *s == 0));
    assert_eq!(right[agent_at * 160..], want_agent[..]);

    // A seek lands anywhere without reading from the start.
    let at = 44 + 4 * 100_000u64;
    reader.seek(SeekFrom::Start(at)).unwrap();
    let mut slice = vec![0u8; 4000];
    reader.read_exact(&mut slice).unwrap();
    assert_eq!(slice, wav[at as usize..at as usize + 4000]);

    // At rest: one age file, by tenant/date/id; no plaintext, no spool.
    let files = files_under(&server.state.config.recording_dir());
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = &files[0];
    let rel = stored
        .strip_prefix(server.state.config.recording_dir())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(rel.starts_with(&format!("{}/", server.tenant_id)), "{rel}");
    assert!(rel.ends_with(&format!("/{rec_id}.wav.age")), "{rel}");
    assert_eq!(rel.split('/').count(), 5, "tenant/yyyy/mm/dd/file: {rel}");
    let ciphertext = std::fs::read(stored).unwrap();
    assert!(ciphertext.starts_with(b"age-encryption.org/v1\n"));
    assert!(!ciphertext.windows(4).any(|w| w == b"RIFF"));
    let probe = &wav[44 + 4 * 20_000..44 + 4 * 20_000 + 32];
    assert!(
        !ciphertext.windows(32).any(|w| w == probe),
        "plaintext audio at rest"
    );

    // Tampered: an error, never altered audio.
    let mut bad = ciphertext.clone();
    let n = bad.len();
    bad[n - 70_000] ^= 0x40;
    std::fs::write(stored, &bad).unwrap();
    let (_, mut reader) = recordings
        .open_wav(&server.tenant_id, rec_id)
        .await
        .unwrap();
    let mut got = Vec::new();
    let err = reader.read_to_end(&mut got).unwrap_err();
    assert!(err.to_string().contains("failed authentication"), "{err}");
    assert_eq!(
        got[..],
        wav[..got.len()],
        "only authenticated bytes came out"
    );
    // Truncated: refused at open.
    std::fs::write(stored, &ciphertext[..n - 1]).unwrap();
    let err = recordings
        .open_wav(&server.tenant_id, rec_id)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // Another tenant cannot open it.
    let other = server.store.create_tenant("Other", None).await.unwrap();
    assert!(recordings.open_wav(&other.id, rec_id).await.is_err());

    let m = server.metrics().await;
    assert_eq!(
        metric(&m, "callstream_recordings_total{outcome=\"completed\"}"),
        1.0
    );
    assert!(metric(&m, "callstream_recording_bytes_total") > (4 * frames) as f64);
    server.shutdown().await;
}

#[tokio::test]
async fn a_one_track_call_is_stereo_with_a_silent_agent() {
    let (mut server, recordings) = recording_server(local).await;
    let caller = jfk_ulaw_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_call(&mut ws, &mut call, &caller, &[], 0).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let detail = finished_call(&server, &call.call_sid).await;
    assert_eq!(detail["recording"]["status"], "completed");
    let id = detail["recording"]["id"].as_str().unwrap();
    let (_, mut r) = recordings.open_wav(&server.tenant_id, id).await.unwrap();
    let mut wav = Vec::new();
    r.read_to_end(&mut wav).unwrap();
    let (left, right) = stereo(&wav);
    // Nothing of the caller is held back waiting for the absent track.
    assert_eq!(left, decoded(&caller));
    assert!(right.iter().all(|s| *s == 0));
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finalises_open_recordings() {
    let (mut server, recordings) = recording_server(local).await;
    let caller = jfk_ulaw_frames()[..200].to_vec();
    let agent = agent_frames()[..200].to_vec();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_call(&mut ws, &mut call, &caller, &agent, 0).await;
    // Everything received before the shutdown is placed and recorded.
    let frames_in =
        || async { metric(&server.metrics().await, "callstream_frames_in_total") >= 400.0 };
    eventually(frames_in).await;
    let store = server.store.clone();
    let tenant = server.tenant_id.clone();
    server.shutdown().await; // waits for sessions and recorders
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    let page = store.list_calls(&tenant, 10, None).await.unwrap();
    let c = &page.calls[0];
    assert_eq!(c.status.as_str(), "interrupted");
    let rec_id = c.recording_id.clone().unwrap();
    let (rec, mut r) = recordings.open_wav(&tenant, &rec_id).await.unwrap();
    assert_eq!(rec.status, RecordingStatus::Completed);
    let mut wav = Vec::new();
    r.read_to_end(&mut wav).unwrap();
    let (left, right) = stereo(&wav);
    assert_eq!(left, decoded(&caller));
    assert_eq!(right, decoded(&agent));
}

/// `callstream recording key export` against `data_dir`; the key file.
fn export_key(data_dir: &Path, tenant: &str, out: &Path, identities: usize) {
    let res = Command::new(BIN)
        .args([
            "recording",
            "key",
            "export",
            "--tenant",
            tenant,
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("CALLSTREAM_LOG")
        .output()
        .expect("callstream runs");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = String::from_utf8(res.stdout).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .count(),
        identities,
        "{identities} identities"
    );
    assert!(!String::from_utf8_lossy(&res.stderr).contains("AGE-SECRET-KEY"));
    std::fs::write(out, text).unwrap();
}

/// `age -d -i KEY FILE` with the Debian `age` CLI; the plaintext.
fn age_decrypt(key: &Path, file: &Path) -> Vec<u8> {
    let res = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(file)
        .output()
        .expect("the age CLI is installed (apt-get install -y age)");
    assert!(
        res.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    res.stdout
}

#[tokio::test]
async fn the_age_cli_decrypts_a_recording_with_the_exported_key() {
    let (mut server, _recordings) = recording_server(local).await;
    let caller = jfk_ulaw_frames();
    let agent = agent_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_call(&mut ws, &mut call, &caller, &agent, 0).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let detail = finished_call(&server, &call.call_sid).await;
    assert_eq!(detail["recording"]["status"], "completed");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tenant.key");
    export_key(&server.state.config.data_dir, &server.tenant_id, &key, 1);
    let files = files_under(&server.state.config.recording_dir());
    assert_eq!(files.len(), 1);
    let wav = age_decrypt(&key, &files[0]);
    let (left, right) = stereo(&wav);
    let want_caller = decoded(&caller);
    let want_agent = decoded(&agent);
    assert_eq!(left.len(), want_caller.len().max(want_agent.len()));
    assert_eq!(left[..want_caller.len()], want_caller[..]);
    assert_eq!(right[..want_agent.len()], want_agent[..]);

    // After a rotation the export holds both keys, and the old recording
    // still decrypts.
    let out = Command::new(BIN)
        .args([
            "recording",
            "key",
            "rotate",
            "--tenant",
            &server.tenant_id,
            "--data-dir",
        ])
        .arg(&server.state.config.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rotated["public_key"].as_str().unwrap().starts_with("age1"));
    export_key(&server.state.config.data_dir, &server.tenant_id, &key, 2);
    assert_eq!(age_decrypt(&key, &files[0]), wav);

    // sox reads it too.
    let path = dir.path().join("call.wav");
    std::fs::write(&path, &wav).unwrap();
    let out = Command::new("sox")
        .args(["--i", "-s"])
        .arg(&path)
        .output()
        .expect("sox is installed (scripts/setup.sh sox)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        left.len().to_string()
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// A real process, killed.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve {
    child: std::process::Child,
    listen: String,
}

impl Serve {
    /// `callstream serve` on its own data dir, Whisper off.
    async fn start(data: &Path, log: &Path) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(data)
            .env("CALLSTREAM_ASR__ENABLED", "false")
            // The test invents its calls; no Twilio API here to look them up.
            .env("CALLSTREAM_STREAM__ACCEPT_UNANNOUNCED_CALLS", "true")
            .env_remove("CALLSTREAM_LOG")
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let serve = Self { child, listen };
        let addr: std::net::SocketAddr = serve.listen.parse().unwrap();
        eventually(|| async { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
        serve
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.listen.parse().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_gateway_killed_at_a_random_moment_loses_at_most_the_last_second() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let token = dir.path().join("auth.token");
    std::fs::write(&token, AUTH_TOKEN).unwrap();
    let out = Command::new(BIN)
        .args(["tenant", "create", "Acme", "--data-dir"])
        .arg(&data)
        .args([
            "--twilio-account-sid",
            ACCOUNT_SID,
            "--twilio-auth-token-file",
        ])
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap().to_string();
    let api_key = tenant["api_key"].as_str().unwrap().to_string();

    let mut serve = Serve::start(&data, &log).await;
    let url = format!("ws://{}{}", serve.listen, STREAM_PATH);
    let sig = callstream::providers::twilio::signature::compute(AUTH_TOKEN, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    // Real speech on both tracks, paced like Twilio (one 20 ms frame per
    // track every 20 ms); the gateway is killed after a random number of
    // frames, between 1.5 s and 9.5 s of audio.
    let caller = jfk_ulaw_frames()[..500].to_vec();
    let agent = agent_frames()[..500].to_vec();
    let kill_at = rand::thread_rng().gen_range(75..475usize);
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for slot in 0..kill_at {
        tick.tick().await;
        let ts = slot as u64 * 20;
        let seq = slot as u64 + 1;
        ws.feed(call.media(StreamTrack::Inbound, seq, ts, &caller[slot]))
            .await
            .unwrap();
        ws.send(call.media(StreamTrack::Outbound, seq, ts, &agent[slot]))
            .await
            .unwrap();
    }
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();
    drop(ws);
    let sent = kill_at as u64 * 160;
    let rec_dir = data.join("recordings");
    let left_behind = files_under(&rec_dir);
    assert_eq!(left_behind.len(), 1);
    assert!(left_behind[0]
        .to_string_lossy()
        .ends_with(".wav.age.spool.partial"));
    // No plaintext audio at rest: no run of the sent PCM is in the spool.
    let spool = std::fs::read(&left_behind[0]).unwrap();
    let pcm: Vec<u8> = decoded(&caller[..kill_at])
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let probe = &pcm[pcm.len() / 2..pcm.len() / 2 + 64];
    assert!(!spool.windows(probe.len()).any(|w| w == probe));

    // Restart: the recording is recovered before streams are taken.
    let serve = Serve::start(&data, &log).await;
    let (status, page) = http(serve.addr(), "GET", "/v1/calls", Some(&api_key), None).await;
    assert_eq!(status, 200, "{page}");
    let call_id = page["calls"][0]["id"].as_str().unwrap().to_string();
    let (_, detail) = http(
        serve.addr(),
        "GET",
        &format!("/v1/calls/{call_id}"),
        Some(&api_key),
        None,
    )
    .await;
    assert_eq!(detail["status"], "interrupted", "{detail}");
    assert_eq!(detail["recording"]["status"], "interrupted", "{detail}");
    let events = log_events(&detail);
    assert!(
        events.contains(&"recording_interrupted".to_string()),
        "{events:?}"
    );

    // One finalised file, no spool; the real age CLI decrypts and
    // authenticates it with the exported key.
    let files = files_under(&rec_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".wav.age"));
    let key = dir.path().join("tenant.key");
    export_key(&data, &tenant_id, &key, 1);
    let wav = age_decrypt(&key, &files[0]);
    let (left, right) = stereo(&wav);
    let recovered = left.len() as u64;
    eprintln!("killed after {sent} samples sent, {recovered} recovered");
    // All audio sent up to one second (8000 samples) before the kill came
    // back, exactly as sent; nothing that was not sent.
    assert!(
        recovered <= sent && sent - recovered <= 8000,
        "killed after {sent} samples, recovered {recovered}"
    );
    assert_eq!(left[..], decoded(&caller)[..recovered as usize]);
    assert_eq!(right[..], decoded(&agent)[..recovered as usize]);
    let rec_ms = detail["recording"]["duration_ms"].as_i64().unwrap();
    assert_eq!(rec_ms as u64, recovered / 8);
    // The call ended where its audio did, not at the restart.
    let (_, rec) = http(
        serve.addr(),
        "GET",
        &format!(
            "/v1/recordings/{}",
            detail["recording"]["id"].as_str().unwrap()
        ),
        Some(&api_key),
        None,
    )
    .await;
    let rec_start = rec["created_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{rec}"));
    let ended = detail["ended_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(ended, rec_start + rec_ms, "{detail}");
    let started = detail["started_at"].as_i64().unwrap();
    assert_eq!(detail["duration_ms"].as_i64().unwrap(), ended - started);

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("recovered"),
        "the restart logs the recovery"
    );
    assert!(!log_text.contains("AGE-SECRET-KEY"));
    let master = std::fs::read_to_string(data.join("keys/master.key")).unwrap();
    assert!(!log_text.contains(master.trim()), "master key in the log");
}

// ---------------------------------------------------------------------------
// Storage failures: the call goes on.

/// Local storage whose writers fail with ENOSPC after `budget` bytes, as a
/// full disk does.
struct FillsUp {
    inner: LocalStorage,
    budget: u64,
}

struct FullWriter {
    inner: Box<dyn ObjectWriter>,
    left: u64,
}

impl Write for FullWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.left -= buf.len() as u64;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FullWriter {
    fn written(&self) -> u64 {
        self.inner.written()
    }
    fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        self.inner.commit()
    }
    fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.abort()
    }
}

impl Storage for FillsUp {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(FullWriter {
            inner: self.inner.create(key)?,
            left: self.budget,
        }))
    }
    fn open(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError> {
        self.inner.open(key)
    }
    fn open_partial(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError> {
        self.inner.open_partial(key)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix)
    }
}

/// Streams a whole call and checks the call and its other sink were
/// unaffected while the recording failed for `reason`.
async fn call_survives_a_failed_recording(server: &TestServer, error_says: &str) {
    let caller = jfk_ulaw_frames();
    let agent = agent_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    send_call(&mut ws, &mut call, &caller, &agent, 0).await;
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    let detail = finished_call(server, &call.call_sid).await;
    assert_eq!(detail["status"], "completed", "{detail}");
    assert_eq!(detail["recording"]["status"], "failed", "{detail}");
    let failed = detail["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["event"] == "recording_failed")
        .unwrap_or_else(|| panic!("a recording_failed log: {detail}"));
    assert_eq!(failed["detail"]["reason"], "storage");
    let error = failed["detail"]["error"].as_str().unwrap();
    assert!(error.contains(error_says), "{error}");
    // The other sink (transcription) got every sample.
    let wide = || -> usize {
        server
            .captured
            .wide
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.track == callstream::media::Track::Caller)
            .map(|c| c.samples.len())
            .sum()
    };
    let expected = caller.len() * 160 * 2;
    eventually(|| async { wide() >= expected }).await;
    assert_eq!(wide(), expected);
    // Visible in the metrics endpoint.
    let (status, text) = http_text(server.addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            "callstream_recording_failures_total{reason=\"storage\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "callstream_recordings_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "callstream_frames_dropped_total{reason=\"recording_overflow\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn unwritable_storage_fails_the_recording_not_the_call() {
    let (mut server, _r) = recording_server(local).await;
    // The storage root becomes a file: nothing can be created under it
    // (root or not).
    let root = server.state.config.recording_dir();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    call_survives_a_failed_recording(&server, "storage I/O error").await;
    server.shutdown().await;
}

#[tokio::test]
async fn storage_filling_up_mid_call_fails_the_recording_not_the_call() {
    let (mut server, _r) = recording_server(|dir| {
        Arc::new(FillsUp {
            inner: LocalStorage::new(dir).unwrap(),
            budget: 150_000,
        })
    })
    .await;
    call_survives_a_failed_recording(&server, "storage is full").await;
    // Nothing half-written is left behind.
    let left: Vec<_> = files_under(&server.state.config.recording_dir());
    assert!(left.is_empty(), "{left:?}");
    server.shutdown().await;
}
