//! The real-speech evaluation (`scripts/eval-asr.sh`): word error rate of
//! the batch path (`callstream transcribe`), of the live path (streamed at
//! real time through the Twilio endpoint as 8 kHz μ-law, caller and agent
//! on separate tracks) and of the full-window reference decode of the same
//! audio (the file for batch, the phone line for live), per subset of
//! `media-fixtures/eval` and overall, with real-time factors, for each
//! model asked for.
//!
//! ```text
//! cargo bench --bench asr_eval -- [--model tiny.en]… [--per-subset N]
//!     [--live-calls C] [--no-live] [--json FILE] [--min-audio-ctx N]
//!     [--check] [--show]
//! ```
//! Under `cargo test` (no `--bench` flag) it runs a checked slice of five
//! clips per subset with tiny.en: the evaluation's CI run.
//! `--per-subset N` takes N clips of each subset, evenly spread over the
//! manifest (a representative slice; CI runs one); 0 (default) takes all.
//! `--check` fails unless, on every subset, batch and live each make at
//! most 1.05 × the errors of their full-window reference (one word of
//! slack, for small slices) and no output repeats what the reference does
//! not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use callstream::asr::engine::{AsrEngine, DecodeOptions, EngineConfig};
use callstream::asr::eval::{has_new_repeat, Clip, Score};
use callstream::asr::scheduler::Priority;
use callstream::config::Config;
use callstream::providers::twilio::signature;
use callstream::providers::twilio::stream::{frames, StreamTrack};
use callstream::secret::Secret;
use callstream::store::{Store, TranscriptStatus};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000e7a";
const AUTH_TOKEN: &str = "e7a1e7a1e7a1e7a1e7a1e7a1e7a1e7a1";
/// Silence before the first utterance of a call and between turns.
const LEAD_MS: u64 = 500;
const TURN_GAP_MS: u64 = 1200;

struct Args {
    models: Vec<String>,
    per_subset: usize,
    live_calls: usize,
    live: bool,
    json: Option<PathBuf>,
    min_audio_ctx: Option<u32>,
    set: PathBuf,
    /// Print every clip's reference and hypotheses.
    show: bool,
    /// Exit non-zero unless every subset meets the targets (see `meets`).
    check: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        models: Vec::new(),
        per_subset: 0,
        live_calls: 4,
        live: true,
        json: None,
        min_audio_ctx: None,
        set: Path::new(env!("CARGO_MANIFEST_DIR")).join("media-fixtures/eval"),
        show: false,
        check: false,
    };
    // `cargo bench` passes `--bench`: the whole set. Run any other way
    // (`cargo test --all-targets`, CI) it is the representative slice,
    // checked against the targets.
    if !std::env::args().any(|a| a == "--bench") {
        args.per_subset = 5;
        args.live_calls = 2;
        args.check = true;
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--model" => args.models.push(value("--model")?),
            "--per-subset" => args.per_subset = value("--per-subset")?.parse()?,
            "--live-calls" => args.live_calls = value("--live-calls")?.parse()?,
            "--no-live" => args.live = false,
            "--show" => args.show = true,
            "--check" => args.check = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--min-audio-ctx" => args.min_audio_ctx = Some(value("--min-audio-ctx")?.parse()?),
            "--set" => args.set = value("--set")?.into(),
            // cargo bench passes this to every bench binary.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if args.models.is_empty() {
        args.models.push("tiny.en".into());
    }
    args.live_calls = args.live_calls.max(1);
    Ok(args)
}

/// One path's hypotheses, by clip index.
type Hyps = Vec<String>;

/// What one path made of each clip, and how long each decode took.
#[derive(Default)]
struct PathRun {
    hyps: Hyps,
    secs: Vec<f64>,
}

/// The engine `callstream transcribe` builds for these files, with the
/// window floor asked for.
fn engine_config(model: &str, clips: &[Clip], min_audio_ctx: Option<u32>) -> EngineConfig {
    let args = callstream::asr::batch::TranscribeArgs {
        files: clips.iter().map(|c| c.path.clone()).collect(),
        format: callstream::transcript::export::Format::Txt,
        model: model.to_string(),
        threads: None,
    };
    let mut cfg = callstream::asr::batch::engine_config(
        &args,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
    );
    if let Some(n) = min_audio_ctx {
        cfg.min_audio_ctx = n;
    }
    cfg
}

/// The phone line: the clip as the live path hears it (8 kHz μ-law frames),
/// back as 16 kHz samples for the reference decode.
fn phone_audio(frames: &[String]) -> anyhow::Result<Vec<f32>> {
    let codec = callstream::media::codec::Codec::Mulaw;
    let mut pcm = Vec::new();
    for f in frames {
        let bytes = base64::engine::general_purpose::STANDARD.decode(f)?;
        codec.decode_into(&bytes, &mut pcm)?;
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut wav, spec)?;
        for s in &pcm {
            w.write_sample(*s)?;
        }
        w.finalize()?;
    }
    Ok(callstream::audio::decode_bytes(wav.into_inner(), Some("wav"))?.samples)
}

/// The reference decode: whisper.cpp's defaults with the full 30 s window,
/// on its own (no text from an earlier run as context).
fn reference_options() -> DecodeOptions {
    DecodeOptions {
        audio_ctx: None,
        no_context: true,
        ..DecodeOptions::default()
    }
}

/// Batch (the CLI's own path), the file's full-window reference, and the
/// phone line's full-window reference. Each path runs subset by subset with
/// as many clips at once as the engine has jobs (as `callstream transcribe`
/// does with several files); a subset's wall time is shared among its clips
/// by length, so the real-time factors are audio over wall time.
async fn batch_paths(
    engine: &AsrEngine,
    clips: &[Clip],
    phone: &[Vec<f32>],
) -> anyhow::Result<(PathRun, PathRun, PathRun)> {
    let jobs = engine.config().max_parallel_jobs;
    let batch = timed_by_subset(clips, jobs, |i| async move {
        let clip = &clips[i];
        let file = callstream::asr::batch::transcribe_file(engine, &clip.path)
            .await
            .with_context(|| format!("{}", clip.path.display()))?;
        Ok(file.transcription.text())
    })
    .await?;
    let reference = timed_by_subset(clips, jobs, |i| async move {
        let samples = callstream::audio::decode_file(&clips[i].path)?.samples;
        let t = engine
            .transcribe(samples, reference_options(), Priority::Batch)
            .await?;
        Ok(t.text())
    })
    .await?;
    let phone_ref = timed_by_subset(clips, jobs, |i| async move {
        let t = engine
            .transcribe(phone[i].clone(), reference_options(), Priority::Batch)
            .await?;
        Ok(t.text())
    })
    .await?;
    Ok((batch, reference, phone_ref))
}

/// Runs `decode` on every clip, `jobs` at a time, one subset after another.
async fn timed_by_subset<F, Fut>(clips: &[Clip], jobs: usize, decode: F) -> anyhow::Result<PathRun>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut run = PathRun {
        hyps: vec![String::new(); clips.len()],
        secs: vec![0.0; clips.len()],
    };
    let mut subsets: Vec<&str> = clips.iter().map(|c| c.subset.as_str()).collect();
    subsets.sort_unstable();
    subsets.dedup();
    for subset in subsets {
        let members: Vec<usize> = (0..clips.len())
            .filter(|&i| clips[i].subset == subset)
            .collect();
        let started = Instant::now();
        let texts: Vec<anyhow::Result<String>> = futures::stream::iter(members.iter().copied())
            .map(&decode)
            .buffered(jobs.max(1))
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let audio: f64 = members.iter().map(|&i| clips[i].duration_s).sum();
        for (&i, text) in members.iter().zip(texts) {
            run.hyps[i] = text?;
            run.secs[i] = wall * clips[i].duration_s / audio.max(1e-9);
        }
    }
    Ok(run)
}

/// Where each clip of a call sits: (clip index, track, start ms, end ms).
type Placement = Vec<(usize, StreamTrack, u64, u64)>;

/// Streams `clips` (indices into `all`) as one call at real time, turns
/// alternating between caller and agent, and returns what the live path
/// made of each clip.
async fn live_call(
    addr: std::net::SocketAddr,
    store: &Store,
    tenant: &str,
    clip_frames: &[Vec<String>],
    clips: &[usize],
) -> anyhow::Result<Vec<(usize, String)>> {
    let silence = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
    let mut placement: Placement = Vec::new();
    let mut at = LEAD_MS;
    for (k, &c) in clips.iter().enumerate() {
        let track = if k % 2 == 0 {
            StreamTrack::Inbound
        } else {
            StreamTrack::Outbound
        };
        let len = clip_frames[c].len() as u64 * 20;
        placement.push((c, track, at, at + len));
        at += len + TURN_GAP_MS;
    }
    let total_frames = (at / 20) as usize;
    let frame_at = |track: StreamTrack, i: usize| -> &str {
        let t = i as u64 * 20;
        placement
            .iter()
            .find(|(_, tr, s, e)| *tr == track && (*s..*e).contains(&t))
            .map_or(silence.as_str(), |(c, _, s, _)| {
                clip_frames[*c][((t - s) / 20) as usize].as_str()
            })
    };

    let url = format!("ws://{addr}/v1/providers/twilio/stream");
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "X-Twilio-Signature",
        signature::compute(AUTH_TOKEN, &url, &[]).parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let stream_sid = format!("MZ{:032x}", rand::random::<u128>());
    let call_sid = format!("CA{:032x}", rand::random::<u128>());
    let tracks = [StreamTrack::Inbound, StreamTrack::Outbound];
    let mut seq = 1;
    ws.send(Message::text(frames::start(&frames::StartInfo {
        sequence_number: seq,
        account_sid: ACCOUNT_SID,
        stream_sid: &stream_sid,
        call_sid: &call_sid,
        tracks: &tracks,
        custom_parameters: &[],
        encoding: "audio/x-mulaw",
        sample_rate: 8000,
        channels: 1,
    })))
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut text = String::new();
    for i in 0..total_frames {
        tick.tick().await;
        for track in tracks {
            seq += 1;
            text.clear();
            frames::media(
                &mut text,
                &stream_sid,
                seq,
                track,
                i as u64 + 1,
                i as u64 * 20,
                frame_at(track, i),
            );
            ws.feed(Message::text(text.clone())).await?;
        }
        ws.flush().await?;
    }
    seq += 1;
    ws.send(Message::text(frames::stop(
        &stream_sid,
        seq,
        ACCOUNT_SID,
        &call_sid,
    )))
    .await?;
    while let Some(Ok(msg)) = ws.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }

    // The stored finals, once the call's transcript is complete.
    let deadline = Instant::now() + Duration::from_secs(300);
    let segments = loop {
        if Instant::now() > deadline {
            bail!("the live transcript of {call_sid} did not complete");
        }
        let call = store
            .find_call_by_external_id(tenant, "twilio", &call_sid)
            .await?;
        if let Some(t) = call.and_then(|c| c.transcript_id) {
            if store.get_transcript(tenant, &t).await?.status == TranscriptStatus::Completed {
                break store.list_transcript_segments(tenant, &t).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each final goes to the clip on its track nearest its middle.
    let mut texts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for s in segments {
        let track = if s.track == "agent" {
            StreamTrack::Outbound
        } else {
            StreamTrack::Inbound
        };
        let mid = (s.start_ms + s.end_ms).max(0) as u64 / 2;
        let nearest = placement
            .iter()
            .filter(|(_, tr, _, _)| *tr == track)
            .min_by_key(|(_, _, st, en)| {
                if mid < *st {
                    st - mid
                } else {
                    mid.saturating_sub(*en)
                }
            });
        if let Some((c, ..)) = nearest {
            texts.entry(*c).or_default().push(s.text);
        }
    }
    Ok(placement
        .iter()
        .map(|(c, ..)| (*c, texts.remove(c).unwrap_or_default().join(" ")))
        .collect())
}

/// The live path on a gateway assembled as `serve` assembles it, `calls`
/// calls at once.
async fn live_path(
    model: &Path,
    clip_frames: &[Vec<String>],
    calls: usize,
    min_audio_ctx: Option<u32>,
) -> anyhow::Result<PathRun> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut cfg = Config::local(addr, dir.path())?;
    cfg.asr.model_path = model.to_path_buf();
    cfg.recording.enabled = false;
    cfg.jobs.enabled = false;
    // The clips stream as invented calls; no Twilio API to look them up.
    cfg.stream.accept_unannounced_calls = true;
    if let Some(n) = min_audio_ctx {
        cfg.asr.min_audio_ctx = n;
    }
    let store = callstream::open_store(&cfg).await?;
    let tenant = store
        .create_tenant("eval", Some((ACCOUNT_SID, &Secret::new(AUTH_TOKEN))))
        .await?;
    let engine_cfg = cfg.asr.engine();
    let engine = tokio::task::spawn_blocking(move || AsrEngine::load(engine_cfg)).await??;
    let gateway = callstream::Gateway::build(cfg, store.clone(), Some(Arc::new(engine))).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callstream::serve(listener, gateway, async move {
        let _ = stop_rx.await;
    }));

    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); calls];
    for c in 0..clip_frames.len() {
        groups[c % calls].push(c);
    }
    let runs = groups.iter().filter(|g| !g.is_empty()).map(|g| {
        let (store, tenant) = (store.clone(), tenant.id.clone());
        async move { live_call(addr, &store, &tenant, clip_frames, g).await }
    });
    let mut hyps = vec![String::new(); clip_frames.len()];
    for result in futures::future::join_all(runs).await {
        for (c, text) in result? {
            hyps[c] = text;
        }
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(PathRun {
        hyps,
        secs: Vec::new(),
    })
}

fn score(clips: &[Clip], run: &PathRun, subset: Option<&str>) -> Score {
    let mut s = Score::default();
    for (i, (clip, hyp)) in clips.iter().zip(&run.hyps).enumerate() {
        if subset.is_none_or(|name| clip.subset == name) {
            let secs = run.secs.get(i).copied().unwrap_or(0.0);
            s.add(&clip.reference, hyp, clip.duration_s, secs);
        }
    }
    s
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let all = Clip::load_manifest(&args.set)?;
    let clips = Clip::slice(&all, args.per_subset);
    let mut subsets: Vec<String> = clips.iter().map(|c| c.subset.clone()).collect();
    subsets.sort();
    subsets.dedup();
    let audio_s: f64 = clips.iter().map(|c| c.duration_s).sum();
    eprintln!(
        "{} clips, {:.1} min of audio, subsets {:?}",
        clips.len(),
        audio_s / 60.0,
        subsets
    );
    let clip_frames: Vec<Vec<String>> = clips
        .iter()
        .map(|c| callstream::loadgen::mulaw_frames(&c.path))
        .collect::<anyhow::Result<_>>()?;
    let phone: Vec<Vec<f32>> = clip_frames
        .iter()
        .map(|f| phone_audio(f))
        .collect::<anyhow::Result<_>>()?;

    let mut report = Vec::new();
    let mut failures = Vec::new();
    println!(
        "| model | subset | clips | words | reference WER | batch WER | batch ÷ ref | phone reference WER | live WER | live ÷ ref | repeats (batch/live) | batch ×RT | reference ×RT |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for model in &args.models {
        let path = callstream::asr::engine::resolve_model(
            model,
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        );
        if !path.exists() {
            bail!(
                "{} is missing: run scripts/install-model.sh {model}",
                path.display()
            );
        }
        let cfg = engine_config(model, &clips, args.min_audio_ctx);
        let engine = tokio::task::spawn_blocking(move || AsrEngine::load(cfg)).await??;
        let (batch, reference, phone_ref) = batch_paths(&engine, &clips, &phone).await?;
        drop(engine);
        let live = if args.live {
            Some(live_path(&path, &clip_frames, args.live_calls, args.min_audio_ctx).await?)
        } else {
            None
        };
        let mut names: Vec<Option<&str>> = subsets.iter().map(|s| Some(s.as_str())).collect();
        names.push(None);
        for subset in names {
            let r = score(&clips, &reference, subset);
            let b = score(&clips, &batch, subset);
            let p = score(&clips, &phone_ref, subset);
            let l = live.as_ref().map(|run| score(&clips, run, subset));
            let ratio = |x: f64, y: f64| {
                if y > 0.0 {
                    x / y
                } else if x > 0.0 {
                    f64::INFINITY
                } else {
                    1.0
                }
            };
            let pct = |x: f64| format!("{:.1} %", x * 100.0);
            let (live_wer, live_ratio, live_repeats) = match &l {
                Some(l) => (
                    pct(l.wer()),
                    format!("{:.2}", ratio(l.wer(), p.wer())),
                    l.repeats.to_string(),
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            let name = subset.unwrap_or("all");
            println!(
                "| {model} | {name} | {} | {} | {} | {} | {:.2} | {} | {live_wer} | {live_ratio} | {}/{live_repeats} | {:.1} | {:.1} |",
                r.clips,
                r.stats.reference_words,
                pct(r.wer()),
                pct(b.wer()),
                ratio(b.wer(), r.wer()),
                pct(p.wer()),
                b.repeats,
                b.real_time_factor(),
                r.real_time_factor(),
            );
            if !meets(&b, &r) {
                failures.push(format!("{model} {name}: batch {b:?} vs reference {r:?}"));
            }
            if let Some(l) = &l {
                if !meets(l, &p) {
                    failures.push(format!(
                        "{model} {name}: live {l:?} vs phone reference {p:?}"
                    ));
                }
            }
            report.push(serde_json::json!({
                "model": model,
                "subset": name,
                "clips": r.clips,
                "words": r.stats.reference_words,
                "reference_wer": r.wer(),
                "batch_wer": b.wer(),
                "phone_reference_wer": p.wer(),
                "live_wer": l.as_ref().map(Score::wer),
                "batch_repeats": b.repeats,
                "live_repeats": l.as_ref().map(|l| l.repeats),
                "batch_real_time": b.real_time_factor(),
                "reference_real_time": r.real_time_factor(),
            }));
        }
        // The worst clips, for reading.
        for (i, clip) in clips.iter().enumerate() {
            if args.show {
                eprintln!(
                    "{} | ref {:?} | reference {:?} | batch {:?} | phone {:?} | live {:?}",
                    clip.path.display(),
                    clip.reference,
                    reference.hyps[i],
                    batch.hyps[i],
                    phone_ref.hyps[i],
                    live.as_ref().map(|l| l.hyps[i].as_str())
                );
            }
            let bad = has_new_repeat(&clip.reference, &batch.hyps[i])
                || live
                    .as_ref()
                    .is_some_and(|l| has_new_repeat(&clip.reference, &l.hyps[i]));
            if bad {
                eprintln!(
                    "repeat in {}: ref {:?} | batch {:?} | live {:?}",
                    clip.path.display(),
                    clip.reference,
                    batch.hyps[i],
                    live.as_ref().map(|l| l.hyps[i].as_str())
                );
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if args.check && !failures.is_empty() {
        bail!("targets missed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The targets: errors within 1.05 × the reference's (or one more word),
/// and no repeats.
fn meets(path: &Score, reference: &Score) -> bool {
    let (e, r) = (path.stats.errors() as f64, reference.stats.errors() as f64);
    path.repeats == 0 && (e <= 1.05 * r || e <= r + 1.0)
}
