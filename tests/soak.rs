//! Soak: many short Twilio calls (start, a few 20 ms frames of real audio on
//! both tracks, stop) through one gateway as `callstream serve` builds it
//! (recordings on), then the process's open file descriptors, resident
//! memory and tokio tasks, and the gateway's own per-call state (session
//! registry, tracked per-call tasks, the active-streams gauge), must be back
//! where they were. A leak per call shows as growth between two equal
//! rounds: the first round brings pools and caches to their working size,
//! the second must not add to it.
//!
//! `cargo test` runs a slice (`SOAK_CALLS`, default 500, `SOAK_CONCURRENCY`,
//! default 50); `scripts/soak.sh` runs 10,000 and prints the figures.

mod common;

use common::{expect_close, jfk_frames, send_audio, Call, TestServer};
use futures::SinkExt;

/// Frames per track per call: 200 ms of speech.
const FRAMES_PER_CALL: usize = 10;
/// Slack for descriptors the runtime opens lazily (a blocking-pool thread's
/// file, a database connection the pool reopened).
const FD_TOLERANCE: usize = 8;
/// Allocator slack between the two rounds; a per-call leak of a few KiB
/// over thousands of calls exceeds it.
const RSS_TOLERANCE_KB: u64 = 24 * 1024;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the process holds, and the gateway's per-call state.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Footprint {
    fds: usize,
    rss_kb: u64,
    tokio_tasks: usize,
    call_tasks: usize,
    sessions: usize,
    active_streams: i64,
}

fn footprint(server: &TestServer) -> Footprint {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count();
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    let sessions = &server.state.sessions;
    Footprint {
        fds,
        rss_kb,
        tokio_tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        call_tasks: sessions.tracked_tasks(),
        sessions: sessions.open_calls().len(),
        active_streams: server.state.metrics.active_streams.get(),
    }
}

/// One call as Twilio makes it: signed upgrade, start, audio, stop; the
/// gateway answers the stop with 1000.
async fn one_call(server: &TestServer, frames: &[String]) {
    let mut ws = server.connect_signed().await;
    let mut call = Call::new();
    ws.send(call.start(&[])).await.expect("start");
    send_audio(&mut ws, &mut call, frames).await;
    ws.send(call.stop()).await.expect("stop");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1000, "a stopped call closes normally");
}

async fn round(server: &TestServer, frames: &[String], calls: usize, concurrency: usize) {
    use futures::StreamExt;
    futures::stream::iter(0..calls)
        .for_each_concurrent(concurrency, |_| one_call(server, frames))
        .await;
}

/// Waits until every call's work (session, recorder, call log) is done, then
/// measures.
async fn settled(server: &TestServer) -> Footprint {
    common::eventually(|| async {
        let f = footprint(server);
        f.call_tasks == 0 && f.sessions == 0 && f.active_streams == 0
    })
    .await;
    footprint(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_calls_leave_fds_memory_and_tasks_flat() {
    let calls = env_or("SOAK_CALLS", 500).max(2);
    let concurrency = env_or("SOAK_CONCURRENCY", 50).max(1);
    let mut server = TestServer::start_gateway(|cfg| {
        cfg.asr.enabled = false;
        cfg.jobs.enabled = false;
        // Real calls are announced by the voice webhook and need no REST
        // look-up; the soak measures the gateway, not the REST fake that
        // shares its process (its connections would count as ours).
        cfg.stream.accept_unannounced_calls = true;
    })
    .await;
    let frames: Vec<String> = jfk_frames().into_iter().take(FRAMES_PER_CALL).collect();
    let before = footprint(&server);

    round(&server, &frames, calls / 2, concurrency).await;
    let warm = settled(&server).await;
    round(&server, &frames, calls - calls / 2, concurrency).await;
    let after = settled(&server).await;

    let m = server.metrics().await;
    let completed = common::metric(&m, "callstream_recordings_total{outcome=\"completed\"}");
    eprintln!(
        "{}",
        serde_json::json!({
            "calls": calls, "concurrency": concurrency, "frames_per_track": FRAMES_PER_CALL,
            "before": before, "after_first_half": warm, "after_all": after,
            "recordings_completed": completed,
        })
    );
    assert_eq!(
        completed, calls as f64,
        "every call was recorded to its end"
    );
    assert!(
        after.fds <= warm.fds + FD_TOLERANCE,
        "open descriptors grew: {warm:?} → {after:?}"
    );
    assert!(
        after.tokio_tasks <= warm.tokio_tasks,
        "tasks left behind: {warm:?} → {after:?}"
    );
    assert!(
        after.rss_kb <= warm.rss_kb + RSS_TOLERANCE_KB,
        "resident memory grew: {warm:?} → {after:?}"
    );
    server.shutdown().await;
}
