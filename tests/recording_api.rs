//! The recording API end to end on a real gateway on 127.0.0.1: real speech
//! streamed through the Twilio endpoint, its metadata and signed link from
//! `GET /v1/recordings/{id}`, the decrypted WAV downloaded whole and in
//! ranges; links expired, edited, for another tenant or signed with a key
//! no longer in the ring; corrupt and truncated ciphertext; deletion; and
//! the retention worker.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use callstream::gateway::recording::RecordingSinks;
use callstream::media::codec::Codec;
use callstream::providers::twilio::stream::StreamTrack;
use callstream::recording::signing::{SigningKey, SigningKeys, UrlSigner};
use callstream::recording::{retention, LocalStorage, Recordings};
use callstream::secret::Secret;
use callstream::store::{RecordingStatus, TenantSettings};
use common::*;
use futures::SinkExt;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-fixtures")
        .join(name)
}

/// The JFK fixture's own 8 kHz μ-law bytes as base64 20 ms frames.
fn jfk_ulaw_frames() -> Vec<String> {
    let bytes = std::fs::read(fixture("jfk-8k-ulaw.wav")).unwrap();
    let info = callstream::recording::wav::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!((info.format_tag, info.sample_rate), (7, 8000));
    let data = &bytes[info.data_offset as usize..(info.data_offset + info.data_len) as usize];
    data.chunks_exact(160)
        .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
        .collect()
}

fn decoded(frames: &[String]) -> Vec<i16> {
    let mut out = Vec::new();
    for f in frames {
        let bytes = base64::engine::general_purpose::STANDARD.decode(f).unwrap();
        Codec::Mulaw.decode_into(&bytes, &mut out).unwrap();
    }
    out
}

fn key(id: &str) -> SigningKey {
    SigningKey {
        id: id.into(),
        secret: Secret::new(format!("{id}-secret-0123456789abcdef0123456789")),
    }
}

/// A server that records streams and serves recordings, its links signed
/// by a ring of `old` then `new`.
async fn api_server() -> (TestServer, Recordings) {
    let slot: Arc<Mutex<Option<Recordings>>> = Arc::default();
    let s = slot.clone();
    let server = TestServer::start_state(
        |cfg| {
            cfg.recording.url_signing_keys = Some(SigningKeys(vec![key("old"), key("new")]));
            cfg.recording.url_ttl_minutes = 5;
        },
        move |state, captured| {
            let storage = Arc::new(LocalStorage::new(state.config.recording_dir()).unwrap());
            let keys = callstream::recording::keyring(&state.config, state.store.clone()).unwrap();
            let recordings = Recordings::new(
                state.store.clone(),
                storage,
                keys,
                state.metrics.clone(),
                state.config.recording.max_duration_secs,
            );
            state.sinks = Arc::new(RecordingSinks {
                recordings: recordings.clone(),
                queue: state.config.stream.recording_queue,
                tracker: state.sessions.tracker(),
                next: Arc::new(CaptureSinks(captured)),
                after_call_attempts: 5,
            });
            state.recordings = Some(recordings.clone());
            *s.lock().unwrap() = Some(recordings);
        },
    )
    .await;
    let recordings = slot.lock().unwrap().take().unwrap();
    (server, recordings)
}

/// Streams the JFK speech as the caller (the agent silent but for a
/// frame) and returns the recording id once it is completed.
async fn streamed_recording(server: &TestServer) -> (String, Vec<String>) {
    let caller = jfk_ulaw_frames();
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.unwrap();
    for (i, p) in caller.iter().enumerate() {
        ws.feed(call.media(StreamTrack::Inbound, i as u64 + 1, i as u64 * 20, p))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    ws.send(call.stop()).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    for _ in 0..200 {
        let (_, page) = server.get("/v1/calls").await;
        if let Some(c) = page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["external_call_id"] == call.call_sid.as_str())
        {
            let (_, detail) = server
                .get(&format!("/v1/calls/{}", c["id"].as_str().unwrap()))
                .await;
            if detail["recording"]["status"] == "completed" {
                return (
                    detail["recording"]["id"].as_str().unwrap().to_string(),
                    caller,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the recording did not complete");
}

struct Download {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Result<Vec<u8>, String>,
}

async fn fetch(url: &str, range: Option<&str>) -> Download {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string());
    Download {
        status,
        headers,
        body,
    }
}

fn header<'a>(d: &'a Download, name: &str) -> &'a str {
    d.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn error_code(d: &Download) -> String {
    let body = d.body.as_ref().unwrap();
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"]["code"].as_str().unwrap().to_string()
}

/// The metadata and the signed link of a recording.
async fn link(server: &TestServer, id: &str) -> (serde_json::Value, String) {
    let (status, meta) = server.get(&format!("/v1/recordings/{id}")).await;
    assert_eq!(status, 200, "{meta}");
    let url = meta["download"]["url"].as_str().unwrap().to_string();
    (meta, url)
}

/// A link for `path` signed by `signer` as the server would sign it.
fn signed(server: &TestServer, signer: &UrlSigner, id: &str, tenant: &str, expires: i64) -> String {
    let path = format!("/v1/recordings/{id}/download");
    let p = signer.sign("GET", &path, tenant, expires);
    format!("http://{}{path}?{}", server.addr, p.query())
}

fn now_s() -> i64 {
    callstream::store::now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_round_trips_through_metadata_signed_link_and_ranges() {
    let (server, _) = api_server().await;
    let (id, caller) = streamed_recording(&server).await;
    let (meta, url) = link(&server, &id).await;
    let frames = caller.len() * 160;
    assert_eq!(meta["id"], id.as_str());
    assert!(meta["call_id"].is_string());
    assert_eq!(meta["status"], "completed");
    assert_eq!(
        (meta["channels"].as_i64(), meta["sample_rate"].as_i64()),
        (Some(2), Some(8000))
    );
    assert_eq!(meta["duration_ms"].as_u64(), Some(frames as u64 / 8));
    let len = 44 + 4 * frames;
    assert_eq!(meta["bytes"].as_u64(), Some(len as u64));
    assert_eq!(meta["algorithm"], "age-x25519");
    assert!(meta["key_id"].is_string() && meta["created_at"].is_i64());
    // Absolute, from public_url, signed with the newest key, expiring in
    // the configured 5 minutes.
    assert!(
        url.starts_with(&format!(
            "http://{}/v1/recordings/{id}/download?",
            server.addr
        )),
        "{url}"
    );
    assert!(url.contains("key_id=new"), "{url}");
    let expires = meta["download"]["expires_at"].as_i64().unwrap();
    assert!((expires - now_s() - 300).abs() <= 5, "{expires}");

    let full = fetch(&url, None).await;
    assert_eq!(full.status, 200);
    assert_eq!(header(&full, "content-type"), "audio/wav");
    assert_eq!(header(&full, "content-length"), len.to_string());
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert!(header(&full, "content-disposition").contains(&format!("{id}.wav")));
    let wav = full.body.unwrap();
    assert_eq!(wav.len(), len);
    // Caller left, every sample where it was sent; the silent agent right.
    let mut r = hound::WavReader::new(std::io::Cursor::new(&wav)).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 8000));
    let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left, decoded(&caller));
    assert!(right.iter().all(|x| *x == 0));

    // Ranges equal slices of the whole, across 64 KiB chunk boundaries.
    let chunk = 65_536usize;
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-43".into(), 0, 43),
        ("bytes=0-0".into(), 0, 0),
        (
            format!("bytes={}-{}", chunk - 10, chunk + 9),
            chunk - 10,
            chunk + 9,
        ),
        (format!("bytes={}-{}", chunk, chunk), chunk, chunk),
        (
            format!("bytes={}-{}", chunk - 1, 3 * chunk + 1),
            chunk - 1,
            3 * chunk + 1,
        ),
        (
            format!("bytes={}-{}", 2 * chunk + 5, len + 10_000),
            2 * chunk + 5,
            len - 1,
        ),
        (format!("bytes={}-", len - 3), len - 3, len - 1),
        (format!("bytes={}-", chunk + 123), chunk + 123, len - 1),
        ("bytes=-1000".into(), len - 1000, len - 1),
        (format!("bytes=-{}", len + 5), 0, len - 1),
    ];
    for (range, first, last) in cases {
        let part = fetch(&url, Some(&range)).await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(
            header(&part, "content-range"),
            format!("bytes {first}-{last}/{len}"),
            "{range}"
        );
        assert_eq!(
            header(&part, "content-length"),
            (last - first + 1).to_string()
        );
        assert_eq!(part.body.unwrap(), &wav[first..=last], "{range}");
    }

    // Past the end: 416 naming the length.
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 1, len + 9),
        "bytes=-0".into(),
    ] {
        let d = fetch(&url, Some(&range)).await;
        assert_eq!(d.status, 416, "{range}");
        assert_eq!(header(&d, "content-range"), format!("bytes */{len}"));
        assert_eq!(error_code(&d), "range_not_satisfiable");
    }
    // Invalid syntax, another unit, several ranges: ignored, all of it.
    for range in ["bytes=9-3", "bytes=x-", "lines=1-2", "bytes=0-1,4-5"] {
        let d = fetch(&url, Some(range)).await;
        assert_eq!(d.status, 200, "{range}");
        assert_eq!(d.body.unwrap(), wav, "{range}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_edited_foreign_and_rotated_out_links_are_refused() {
    let (server, recordings) = api_server().await;
    let wav = std::fs::read(fixture("jfk-8k-ulaw.wav")).unwrap();
    let rec = recordings
        .store_wav(&server.tenant_id, None, std::io::Cursor::new(wav.clone()))
        .await
        .unwrap();
    let (_, url) = link(&server, &rec.id).await;
    let ok = fetch(&url, None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body.unwrap(), wav);

    let refused = |d: &Download, what: &str| {
        assert_eq!(d.status, 403, "{what}");
        assert_eq!(error_code(d), "forbidden", "{what}");
    };
    // Each field edited.
    let parsed = url::Url::parse(&url).unwrap();
    let params: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    for field in ["tenant", "expires", "key_id", "signature"] {
        let mut edited = parsed.clone();
        edited.query_pairs_mut().clear();
        for (k, v) in &params {
            let v = if k == field {
                match field {
                    "expires" => (v.parse::<i64>().unwrap() + 3600).to_string(),
                    "key_id" => "old".to_string(),
                    "signature" => {
                        format!("{}{}", if v.starts_with('0') { "1" } else { "0" }, &v[1..])
                    }
                    _ => "another-tenant".to_string(),
                }
            } else {
                v.clone()
            };
            edited.query_pairs_mut().append_pair(k, &v);
        }
        refused(&fetch(edited.as_str(), None).await, field);
        // Without the field at all.
        let mut missing = parsed.clone();
        missing.query_pairs_mut().clear();
        for (k, v) in params.iter().filter(|(k, _)| k != field) {
            missing.query_pairs_mut().append_pair(k, v);
        }
        refused(&fetch(missing.as_str(), None).await, &format!("no {field}"));
    }
    // The path names the recording: the same query on another id.
    let other = recordings
        .store_wav(&server.tenant_id, None, std::io::Cursor::new(wav.clone()))
        .await
        .unwrap();
    refused(
        &fetch(&url.replace(&rec.id, &other.id), None).await,
        "other recording",
    );

    let ring = UrlSigner::new(vec![key("old"), key("new")]).unwrap();
    // Expired (correctly signed).
    refused(
        &fetch(
            &signed(&server, &ring, &rec.id, &server.tenant_id, now_s() - 1),
            None,
        )
        .await,
        "expired",
    );
    // Another tenant's link (correctly signed for it) does not open this
    // tenant's recording.
    let b = server.store.create_tenant("B", None).await.unwrap();
    refused(
        &fetch(&signed(&server, &ring, &rec.id, &b.id, now_s() + 60), None).await,
        "other tenant",
    );
    // Rotation: a link signed by the old key still works while the key is
    // in the ring; one signed by a key rotated out is refused.
    let old_only = UrlSigner::new(vec![key("old")]).unwrap();
    let d = fetch(
        &signed(&server, &old_only, &rec.id, &server.tenant_id, now_s() + 60),
        None,
    )
    .await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body.unwrap(), wav);
    let gone = UrlSigner::new(vec![key("retired")]).unwrap();
    refused(
        &fetch(
            &signed(&server, &gone, &rec.id, &server.tenant_id, now_s() + 60),
            None,
        )
        .await,
        "rotated out",
    );
    // The same id under a key with a known id but another secret.
    let forged = UrlSigner::new(vec![SigningKey {
        id: "new".into(),
        secret: Secret::new("x".repeat(40)),
    }])
    .unwrap();
    refused(
        &fetch(
            &signed(&server, &forged, &rec.id, &server.tenant_id, now_s() + 60),
            None,
        )
        .await,
        "forged",
    );

    // Unknown ids: 404 on the metadata; a signed link to nothing is refused.
    let (status, body) = server.get("/v1/recordings/no-such-recording").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    refused(
        &fetch(
            &signed(
                &server,
                &ring,
                "no-such-recording",
                &server.tenant_id,
                now_s() + 60,
            ),
            None,
        )
        .await,
        "unknown id",
    );

    // Deleted: the row stays, without a link; old links find nothing to serve.
    let (status, deleted) = http(
        server.addr,
        "DELETE",
        &format!("/v1/recordings/{}", rec.id),
        Some(&server.api_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["status"], "deleted");
    assert!(deleted["deleted_at"].is_i64());
    let (_, meta) = server.get(&format!("/v1/recordings/{}", rec.id)).await;
    assert_eq!(meta["status"], "deleted");
    assert!(meta["download"].is_null());
    let d = fetch(&url, None).await;
    assert_eq!(d.status, 409);
    assert_eq!(error_code(&d), "not_readable");
    let (status, _) = http(
        server.addr,
        "DELETE",
        "/v1/recordings/no-such-recording",
        Some(&server.api_key),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// The one object file of a recording.
fn object_file(server: &TestServer) -> PathBuf {
    let mut found = Vec::new();
    let mut dirs = vec![server.state.config.recording_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".wav.age") {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_ciphertext_is_an_error_never_audio() {
    let (server, recordings) = api_server().await;
    // 11 s of 16 kHz mono: 352 KiB, six 64 KiB encryption chunks.
    let wav = std::fs::read(fixture("jfk.wav")).unwrap();
    let rec = recordings
        .store_wav(&server.tenant_id, None, std::io::Cursor::new(wav.clone()))
        .await
        .unwrap();
    let (_, url) = link(&server, &rec.id).await;
    assert_eq!(fetch(&url, None).await.body.unwrap(), wav);

    // Flip one byte inside the third chunk's ciphertext (each sealed chunk
    // is 64 KiB + a 16-byte tag, after the age header; counting from the
    // end keeps clear of the header whatever its size).
    let path = object_file(&server);
    let mut bytes = std::fs::read(&path).unwrap();
    let sealed = 65_536 + 16;
    let chunks = wav.len().div_ceil(65_536);
    let header_len = bytes.len() - (chunks - 1) * sealed - (wav.len() - (chunks - 1) * 65_536 + 16);
    let at = header_len + 2 * sealed + 1000;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // A range in an intact chunk still reads (only its chunk is decrypted).
    let d = fetch(&url, Some("bytes=70000-70099")).await;
    assert_eq!(d.status, 206);
    assert_eq!(d.body.unwrap(), &wav[70_000..70_100]);
    // A range starting in the tampered chunk: a JSON error, no audio.
    let d = fetch(&url, Some(&format!("bytes={}-", 2 * 65_536 + 10))).await;
    assert_eq!(d.status, 500);
    assert_eq!(error_code(&d), "recording_corrupt");
    // The whole file: the start is served, then the transfer fails; the
    // client never gets a complete body with altered audio in it.
    // (The failure may even reach the client before the response head
    // has been flushed: then the request itself fails.)
    match reqwest::get(&url).await {
        Err(_) => {}
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            match resp.bytes().await {
                Err(_) => {}
                Ok(body) => panic!("a tampered recording downloaded as {} bytes", body.len()),
            }
        }
    }

    // Truncated (the final chunk cut off): refused before any body.
    bytes[at] ^= 0x40;
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&path, &bytes).unwrap();
    let d = fetch(&url, None).await;
    assert_eq!(d.status, 500);
    assert_eq!(error_code(&d), "recording_corrupt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_recordings_and_keeps_young_ones() {
    let (server, recordings) = api_server().await;
    let store = &server.store;
    let wav = std::fs::read(fixture("jfk-8k-ulaw.wav")).unwrap();
    let a = server.tenant_id.clone();
    let b = store.create_tenant("B", None).await.unwrap().id;
    let c = store.create_tenant("C", None).await.unwrap().id;
    for (tenant, days) in [(&a, Some(1)), (&b, Some(3)), (&c, None)] {
        let settings = TenantSettings {
            retention_days: days,
            ..TenantSettings::default()
        };
        store.set_tenant_settings(tenant, &settings).await.unwrap();
    }
    let call = callstream::store::StreamCall {
        provider: "twilio",
        external_call_id: "CA-retention",
        stream_id: "MZ-retention",
        direction: callstream::store::Direction::Inbound,
        from_number: None,
        to_number: None,
    };
    let call_id = store
        .start_stream_call(&a, &call, callstream::store::now_ms())
        .await
        .unwrap()
        .id;
    let mut made = Vec::new();
    for (tenant, call) in [(&a, Some(call_id.as_str())), (&b, None), (&c, None)] {
        let r = recordings
            .store_wav(tenant, call, std::io::Cursor::new(wav.clone()))
            .await
            .unwrap();
        made.push((tenant.clone(), r.id));
    }
    let status = |i: usize| {
        let (tenant, id) = made[i].clone();
        async move { store.get_recording(&tenant, &id).await.unwrap().status }
    };
    let day = 86_400_000;
    let now = callstream::store::now_ms();

    // Half a day on: everything is young.
    let report = retention::sweep(&recordings, now + day / 2).await.unwrap();
    assert_eq!(report.deleted, 0);
    // Two days on: A's (1 day) goes, B's (3 days) and C's (no limit) stay.
    let report = retention::sweep(&recordings, now + 2 * day).await.unwrap();
    assert_eq!((report.deleted, report.failed), (1, 0));
    assert_eq!(status(0).await, RecordingStatus::Deleted);
    assert_eq!(status(1).await, RecordingStatus::Completed);
    assert_eq!(status(2).await, RecordingStatus::Completed);
    let gone = store.get_recording(&a, &made[0].1).await.unwrap();
    assert!(gone.deleted_at.is_some());
    let logs = store.list_call_logs(&a, &call_id).await.unwrap();
    let log = logs
        .iter()
        .find(|l| l.event == "recording_deleted")
        .expect("logged");
    assert_eq!(log.detail["recording_id"], made[0].1.as_str());
    assert_eq!(log.detail["reason"], "retention: older than 1 days");
    // Its file is gone; the others' remain and still download.
    let files = recordings.storage().list("").unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| !f.key.contains(&made[0].1)));
    let (_, kept) = recordings.open_wav(&made[1].0, &made[1].1).await.unwrap();
    assert_eq!(kept.len(), wav.len() as u64);

    // The worker: sweeps on its interval with its clock, stops when asked.
    let stop = tokio_util::sync::CancellationToken::new();
    let clock: retention::Clock = Arc::new(move || now + 4 * day);
    let task = retention::spawn(
        recordings.clone(),
        Duration::from_millis(50),
        clock,
        stop.clone(),
    );
    for _ in 0..200 {
        if status(1).await == RecordingStatus::Deleted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status(1).await, RecordingStatus::Deleted);
    assert_eq!(
        status(2).await,
        RecordingStatus::Completed,
        "no retention: kept"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
