//! Property tests for everything that reads what a client or a file sends
//! us: Twilio frames and their base64 audio, `start` validation, webhook
//! signatures, stream tokens, signed recording links, `Range` headers,
//! G.711/L16 codecs and the resampler, audio files (WAV, FLAC, MP3, Ogg
//! Vorbis, Ogg Opus), WAV headers, live-call spools and finished encrypted
//! recordings.
//!
//! Each property holds for any input proptest can find: no panic, a typed
//! answer, and memory bounded by the input. Memory is measured, not
//! assumed: this binary's allocator counts the bytes each thread holds, so
//! every parse is checked against a peak proportional to what it was given
//! (a length field read from the input must never become an allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;

use callstream::api::recordings::{parse_range, ByteRange};
use callstream::audio::{decode_bytes, DecodeError, StreamResampler};
use callstream::media::{encode_alaw, encode_mulaw, Codec};
use callstream::providers::twilio::stream::{self, frames, StreamEvent, StreamTrack};
use callstream::providers::twilio::{signature, token, validate};
use callstream::recording::crypt::{self, WavReader};
use callstream::recording::signing::{LinkParams, UrlSigner};
use callstream::recording::spool::{SpoolReader, SpoolWriter};
use callstream::recording::storage::{LocalStorage, Storage};
use callstream::recording::wav;

// ---------------------------------------------------------------------------
// A counting allocator: bytes held by the current thread, and their peak.

struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: allocations during thread teardown are simply not counted.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only sizes are
// recorded, in thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes this thread held at
/// once above what it held before (the result's own bytes included).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - base).unwrap_or(0))
}

/// `n` cases per property; failures are printed with their minimal input
/// rather than saved to a file beside the test.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

// ---------------------------------------------------------------------------
// Inputs.

const ACC: &str = "AC0123456789abcdef0123456789abcdef";
const CALL: &str = "CA0123456789abcdef0123456789abcdef";
const SID: &str = "MZ0123456789abcdef0123456789abcdef";

/// Valid frames of every kind, as Twilio sends them.
fn seed_frames() -> Vec<String> {
    let mut media = String::new();
    frames::media(&mut media, SID, 3, StreamTrack::Inbound, 2, 40, "/////w==");
    vec![
        frames::connected(),
        frames::start(&frames::StartInfo {
            sequence_number: 1,
            account_sid: ACC,
            stream_sid: SID,
            call_sid: CALL,
            tracks: &[StreamTrack::Inbound, StreamTrack::Outbound],
            custom_parameters: &[("token", "v1.t.CA.1.x"), ("from", "+14155550100")],
            encoding: "audio/x-mulaw",
            sample_rate: 8000,
            channels: 1,
        }),
        media,
        frames::dtmf(SID, 4, StreamTrack::Inbound, '5'),
        frames::mark(SID, 5, "greeting-done"),
        frames::stop(SID, 6, ACC, CALL),
    ]
}

/// Byte-level damage: overwrite, insert, delete or cut at random places.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..max)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Set(i, b) => {
                if !bytes.is_empty() {
                    let at = i % bytes.len();
                    bytes[at] = *b;
                }
            }
            Edit::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

/// Headers are where parsers go wrong: aim a third of the damage at the
/// first 64 bytes.
fn header_heavy(bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    let aimed: Vec<Edit> = edits
        .iter()
        .enumerate()
        .map(|(k, e)| match (k % 3, e) {
            (0, Edit::Set(i, b)) => Edit::Set(i % 64, *b),
            (0, Edit::Insert(i, b)) => Edit::Insert(i % 64, b.clone()),
            _ => e.clone(),
        })
        .collect();
    apply(bytes, &aimed)
}

fn track() -> impl Strategy<Value = StreamTrack> {
    prop_oneof![Just(StreamTrack::Inbound), Just(StreamTrack::Outbound)]
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/media-fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------
// Twilio frames.

proptest! {
    #![proptest_config(cases(2_000))]

    /// Any text: a typed answer, and at most a few times its size held.
    #[test]
    fn any_text_frame_is_answered_within_its_size(text in ".{0,600}") {
        let (_, peak) = peak_of(|| {
            if let Ok(StreamEvent::Media(m)) = stream::parse(&text) {
                let mut audio = Vec::new();
                let _ = stream::decode_payload(&m.payload, &mut audio);
            }
        });
        prop_assert!(peak <= 4 * text.len() + 4 * KIB, "{} bytes held for {} of input", peak, text.len());
    }

    /// Damaged real frames: a typed answer, bounded memory.
    #[test]
    fn damaged_frames_are_answered_within_their_size(
        which in 0usize..6,
        damage in edits(8),
    ) {
        let frame = seed_frames().swap_remove(which);
        let bytes = apply(frame.into_bytes(), &damage);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (_, peak) = peak_of(|| {
            let parsed = stream::parse(&text);
            if let Ok(StreamEvent::Start(start)) = &parsed {
                let _ = validate::check_start(start, validate::ParamLimits { max_count: 32, max_bytes: 512 });
            }
            let _ = frames::parse_command(&text);
        });
        prop_assert!(peak <= 4 * text.len() + 4 * KIB, "{} bytes held for {} of input", peak, text.len());
    }

    /// A media frame carries any audio, sequence numbers, timestamps and
    /// (escaped) stream SID through unchanged.
    #[test]
    fn media_frames_round_trip(
        seq in any::<u64>(),
        chunk in any::<u64>(),
        ts in any::<u64>(),
        track in track(),
        sid in "\\PC{0,40}",
        audio in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut frame = String::new();
        frames::media(&mut frame, &sid, seq, track, chunk, ts, &STANDARD.encode(&audio));
        let Ok(StreamEvent::Media(m)) = stream::parse(&frame) else {
            return Err(TestCaseError::fail(format!("not a media frame: {frame}")));
        };
        prop_assert_eq!((m.sequence_number, m.chunk, m.timestamp_ms, m.track), (seq, chunk, ts, track));
        prop_assert_eq!(&*m.stream_sid, sid.as_str());
        let mut decoded = Vec::new();
        prop_assert!(stream::decode_payload(&m.payload, &mut decoded).is_ok());
        prop_assert_eq!(decoded, audio);
    }

    /// Base64 of any text: accepted output is never larger than 3/4 of it,
    /// and a refusal leaves nothing behind.
    #[test]
    fn payload_decoding_is_bounded(b64 in "[A-Za-z0-9+/=\\-_ ]{0,300}") {
        let mut out = vec![1u8; 7];
        match stream::decode_payload(&b64, &mut out) {
            Ok(()) => prop_assert!(out.len() <= b64.len() * 3 / 4 + 3),
            Err(_) => prop_assert!(out.is_empty()),
        }
    }

    /// A `start` accepted by validation has well-formed SIDs, a codec we
    /// decode and a sane rate, whatever the frame said.
    #[test]
    fn accepted_starts_are_well_formed(
        account in prop_oneof![Just(ACC.to_owned()), "\\PC{0,40}"],
        call in prop_oneof![Just(CALL.to_owned()), "AC[0-9a-f]{32}", "CA[0-9a-fA-F]{30,34}", "\\PC{0,40}"],
        encoding in prop_oneof![Just("audio/x-mulaw".to_owned()), "\\PC{0,20}"],
        rate in prop_oneof![Just(8000u32), any::<u32>()],
        channels in prop_oneof![Just(1u16), any::<u16>()],
        params in prop::collection::vec(("\\PC{0,12}", "\\PC{0,40}"), 0..40),
    ) {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let frame = frames::start(&frames::StartInfo {
            sequence_number: 1,
            account_sid: &account,
            stream_sid: SID,
            call_sid: &call,
            tracks: &[StreamTrack::Inbound],
            custom_parameters: &params,
            encoding: &encoding,
            sample_rate: rate,
            channels,
        });
        let Ok(StreamEvent::Start(start)) = stream::parse(&frame) else {
            return Ok(()); // refused at parse (e.g. a duplicate parameter name)
        };
        let limits = validate::ParamLimits { max_count: 32, max_bytes: 512 };
        if let Ok(ok) = validate::check_start(&start, limits) {
            prop_assert!(validate::is_sid(&start.call_sid, "CA"), "{}", start.call_sid);
            prop_assert!(validate::is_sid(&start.account_sid, "AC"));
            prop_assert!(start.custom_parameters.len() <= limits.max_count);
            prop_assert!((1_000..=48_000).contains(&ok.sample_rate), "{}", ok.sample_rate);
        }
    }
}

// ---------------------------------------------------------------------------
// Signatures, tokens and signed links.

proptest! {
    #![proptest_config(cases(1_000))]

    /// A webhook signature verifies only for the exact token, URL and
    /// parameters it was made over.
    #[test]
    fn webhook_signatures_bind_token_url_and_parameters(
        auth in "[0-9a-f]{32}",
        url in "https://[a-z]{1,12}\\.example/[ -~]{0,40}",
        params in prop::collection::vec(("[A-Za-z]{1,10}", "\\PC{0,30}"), 0..8),
        other in "[ -~]{1,30}",
        header in "[A-Za-z0-9+/=]{0,60}",
    ) {
        let params: Vec<(String, String)> = params;
        let good = signature::compute(&auth, &url, &params);
        prop_assert!(signature::validate(&auth, &url, &params, &good));
        prop_assert_eq!(signature::validate(&auth, &url, &params, &header), header == good);
        let mut url2 = url.clone();
        url2.push_str(&other);
        prop_assert!(!signature::validate(&auth, &url2, &params, &good));
        let mut more = params.clone();
        more.push(("Extra".into(), other.clone()));
        prop_assert!(!signature::validate(&auth, &url, &more, &good));
        let other_token = format!("{auth}0");
        prop_assert!(!signature::validate(&other_token, &url, &params, &good));
    }

    /// JSON-bodied webhooks and stream URLs: any bytes, a typed answer.
    #[test]
    fn any_signature_input_is_answered(
        body in prop::collection::vec(any::<u8>(), 0..300),
        url in "\\PC{0,80}",
        header in "\\PC{0,80}",
    ) {
        let (_, peak) = peak_of(|| {
            let _ = signature::validate_json_body("token", &url, &body, &header);
            let _ = signature::stream_url(&url, &header);
        });
        prop_assert!(peak <= 8 * (body.len() + url.len() + header.len()) + 4 * KIB);
    }

    /// A stream token verifies as issued, and any damage to it is refused
    /// (never accepted with other claims).
    #[test]
    fn stream_tokens_are_unforgeable(
        secret in prop::collection::vec(any::<u8>(), 32),
        tenant in "[a-z0-9_-]{1,40}",
        call in "CA[0-9a-f]{32}",
        expires in 1_000_000i64..4_000_000_000,
        damage in edits(4),
    ) {
        let t = token::issue(&secret, &tenant, &call, expires);
        let claims = token::verify(&secret, &t, expires - 1);
        prop_assert!(claims.is_ok(), "{:?}", claims);
        let claims = claims.unwrap();
        prop_assert_eq!((&*claims.tenant_id, &*claims.call_sid), (tenant.as_str(), call.as_str()));
        prop_assert_eq!(token::verify(&secret, &t, expires + 1), Err(token::TokenError::Expired));
        let damaged = String::from_utf8_lossy(&apply(t.clone().into_bytes(), &damage)).into_owned();
        if damaged != t {
            prop_assert!(token::verify(&secret, &damaged, expires - 1).is_err(), "{} accepted", damaged);
        }
    }

    /// Any string as a token: refused, within its size.
    #[test]
    fn any_token_string_is_refused(text in "\\PC{0,400}") {
        let (r, peak) = peak_of(|| token::verify(&[7u8; 32], &text, 0));
        prop_assert!(r.is_err());
        prop_assert!(peak <= 2 * text.len() + 2 * KIB, "{}", peak);
    }

    /// A recording link survives its query string and verifies only for
    /// its own method, path, tenant and expiry.
    #[test]
    fn signed_links_round_trip_and_bind_everything(
        tenant in "[a-z0-9_-]{1,40}",
        path in "/v1/recordings/[a-zA-Z0-9_-]{1,30}/download",
        expires in 0i64..4_000_000_000,
        edit in any::<(usize, u8)>(),
        junk in "\\PC{0,200}",
    ) {
        let signer = UrlSigner::ephemeral();
        let link = signer.sign("GET", &path, &tenant, expires);
        let back = LinkParams::parse(Some(&link.query()));
        prop_assert_eq!(back.as_ref(), Some(&link));
        prop_assert!(signer.verify("GET", &path, &link, expires).is_ok());
        prop_assert!(signer.verify("GET", &path, &link, expires + 1).is_err());
        prop_assert!(signer.verify("DELETE", &path, &link, expires).is_err());
        let other_path = format!("{path}x");
        prop_assert!(signer.verify("GET", &other_path, &link, expires).is_err());
        let mut other = link.clone();
        other.expires += 1;
        prop_assert!(signer.verify("GET", &path, &other, 0).is_err());
        let mut sig = link.signature.clone().into_bytes();
        let at = edit.0 % sig.len();
        // Hex is read in either case: only a different digit is damage.
        if !sig[at].eq_ignore_ascii_case(&edit.1) {
            sig[at] = edit.1;
            other = link.clone();
            other.signature = String::from_utf8_lossy(&sig).into_owned();
            prop_assert!(signer.verify("GET", &path, &other, 0).is_err());
        }
        // Any query at all: parsed or refused, never a panic.
        if let Some(p) = LinkParams::parse(Some(&junk)) {
            prop_assert!(signer.verify("GET", &path, &p, 0).is_err());
        }
    }
}

// ---------------------------------------------------------------------------
// `Range`.

proptest! {
    #![proptest_config(cases(2_000))]

    /// Whatever the header, a partial answer lies inside the body.
    #[test]
    fn any_range_header_stays_inside_the_body(header in "\\PC{0,40}", len in any::<u64>()) {
        if let ByteRange::Part { first, last } = parse_range(Some(&header), len) {
            prop_assert!(first <= last && last < len, "{} -> {}..={} of {}", header, first, last, len);
        }
    }

    /// The three forms of RFC 9110 §14.1.2, on any body.
    #[test]
    fn range_forms_follow_rfc_9110(a in 0u64..1 << 40, n in 1u64..1 << 40, len in 0u64..1 << 40) {
        let b = a + n - 1;
        let expect = if a >= len { ByteRange::Unsatisfiable } else { ByteRange::Part { first: a, last: b.min(len - 1) } };
        prop_assert_eq!(parse_range(Some(&format!("bytes={a}-{b}")), len), expect);
        let expect = if a >= len { ByteRange::Unsatisfiable } else { ByteRange::Part { first: a, last: len - 1 } };
        prop_assert_eq!(parse_range(Some(&format!("bytes={a}-")), len), expect);
        let expect = if len == 0 { ByteRange::Unsatisfiable } else { ByteRange::Part { first: len.saturating_sub(n), last: len - 1 } };
        prop_assert_eq!(parse_range(Some(&format!("bytes=-{n}")), len), expect);
        // Several ranges, other units, reversed bounds: the whole body.
        prop_assert_eq!(parse_range(Some(&format!("bytes={a}-{b},0-1")), len), ByteRange::Full);
        prop_assert_eq!(parse_range(Some(&format!("items={a}-{b}")), len), ByteRange::Full);
        if n > 1 {
            prop_assert_eq!(parse_range(Some(&format!("bytes={b}-{a}")), len), ByteRange::Full);
        }
    }
}

// ---------------------------------------------------------------------------
// Codecs and resampling.

proptest! {
    #![proptest_config(cases(1_000))]

    /// Every payload decodes to one sample per byte (G.711) or per pair
    /// (L16); a torn L16 sample is refused with nothing appended.
    #[test]
    fn codecs_decode_any_payload_exactly(payload in prop::collection::vec(any::<u8>(), 0..600)) {
        for codec in [Codec::Mulaw, Codec::Alaw, Codec::L16 { big_endian: true }, Codec::L16 { big_endian: false }] {
            let mut out = vec![0i16; 3];
            match codec.decode_into(&payload, &mut out) {
                Ok(()) => prop_assert_eq!(out.len(), 3 + codec.samples_in(payload.len())),
                Err(_) => {
                    let torn = matches!(codec, Codec::L16 { .. }) && payload.len() % 2 == 1;
                    prop_assert!(torn);
                    prop_assert_eq!(out.len(), 3);
                }
            }
        }
    }

    /// G.711 keeps a sample within its segment's step: |error| ≤ |x|/16 + 16
    /// below the clip level, and encoding a decoded code is the identity on
    /// what it sounds like.
    #[test]
    fn g711_round_trips_within_its_step(x in any::<i16>(), code in any::<u8>()) {
        for (encode, codec, clip) in [(encode_mulaw as fn(i16) -> u8, Codec::Mulaw, 32_124i32), (encode_alaw, Codec::Alaw, 32_256)] {
            let mut out = Vec::new();
            codec.decode_into(&[encode(x)], &mut out).unwrap();
            let (x32, y) = (i32::from(x), i32::from(out[0]));
            let err = (x32.clamp(-clip, clip) - y).abs();
            prop_assert!(err <= x32.abs() / 16 + 16, "{:?} {} -> {} (error {})", codec, x, y, err);
            let mut first = Vec::new();
            codec.decode_into(&[code], &mut first).unwrap();
            let mut again = Vec::new();
            codec.decode_into(&[encode(first[0])], &mut again).unwrap();
            prop_assert_eq!(first, again);
        }
    }

    /// The 8 → 16 kHz stream resampler turns any chunking of n samples into
    /// 2n samples (after its flush), never more, whatever the values.
    #[test]
    fn the_resampler_doubles_any_chunking(
        chunks in prop::collection::vec(prop::collection::vec(-1.5f32..1.5, 0..700), 0..12),
    ) {
        let mut r = StreamResampler::new(8_000, 16_000).unwrap();
        let mut out = Vec::new();
        let mut n = 0;
        for c in &chunks {
            r.process(c, &mut out);
            n += c.len();
            prop_assert!(out.len() <= 2 * n);
        }
        r.flush(&mut out);
        prop_assert_eq!(out.len(), 2 * n);
        prop_assert!(out.iter().all(|s| s.is_finite()));
    }

    /// WAV headers: any prefix gives a typed answer; ours parse back.
    #[test]
    fn wav_headers_parse_or_refuse(
        prefix in prop::collection::vec(any::<u8>(), 0..200),
        channels in 1u16..=16,
        rate in 1_000u32..=384_000,
        data in 0u32..1 << 30,
    ) {
        let _ = wav::parse(&prefix, prefix.len() as u64);
        let header = wav::pcm16_header(channels, rate, data);
        let info = wav::parse(&header, header.len() as u64 + u64::from(data));
        prop_assert!(info.is_ok(), "{:?}", info);
        let info = info.unwrap();
        // A torn last sample frame is not audio.
        let whole = u64::from(data) - u64::from(data) % (2 * u64::from(channels));
        prop_assert_eq!((info.channels, info.sample_rate, info.data_len), (channels, rate, whole));
    }
}

// ---------------------------------------------------------------------------
// Audio files.

/// Decoding damaged audio may find nothing, or fewer samples than the
/// original, but never panics, and holds no more than a fixed working set
/// plus its output (which is bounded by the duration cap).
fn check_decode(bytes: Vec<u8>, ext: &str) -> Result<(), TestCaseError> {
    let len = bytes.len();
    let (result, peak) = peak_of(|| decode_bytes(bytes, Some(ext)));
    let output = match &result {
        Ok(audio) => {
            prop_assert!(audio.samples.iter().all(|s| s.is_finite()));
            audio.samples.capacity() * 4
        }
        Err(DecodeError::Io(_) | DecodeError::Unsupported(_) | DecodeError::Corrupt(_)) => 0,
        Err(DecodeError::Empty | DecodeError::TooLong) => 0,
    };
    prop_assert!(
        peak <= 2 * len + 3 * output + 16 * MIB,
        "{} held decoding {} bytes of {} ({} of output)",
        peak,
        len,
        ext,
        output
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn damaged_wav_files_decode_or_refuse(damage in edits(12)) {
        check_decode(header_heavy(fixture("jfk.wav"), &damage), "wav")?;
        check_decode(header_heavy(fixture("jfk-8k-ulaw.wav"), &damage), "wav")?;
    }

    #[test]
    fn damaged_flac_files_decode_or_refuse(damage in edits(12)) {
        check_decode(header_heavy(fixture("jfk.flac"), &damage), "flac")?;
    }

    #[test]
    fn damaged_mp3_files_decode_or_refuse(damage in edits(12)) {
        check_decode(header_heavy(fixture("jfk.mp3"), &damage), "mp3")?;
    }

    #[test]
    fn damaged_ogg_files_decode_or_refuse(damage in edits(12)) {
        check_decode(header_heavy(fixture("jfk.ogg"), &damage), "ogg")?;
        check_decode(header_heavy(fixture("jfk.opus"), &damage), "opus")?;
    }

    /// Bytes that only start like a known format.
    #[test]
    fn random_bytes_behind_a_magic_decode_or_refuse(
        magic in prop_oneof![Just(&b"RIFF"[..]), Just(&b"OggS"[..]), Just(&b"fLaC"[..]), Just(&[0xffu8, 0xfb][..]), Just(&b"ID3"[..])],
        rest in prop::collection::vec(any::<u8>(), 0..4_000),
    ) {
        check_decode([magic, &rest].concat(), "wav")?;
    }
}

/// A WAV header that claims far more than it holds: huge sizes, channel
/// counts and rates must not turn into allocations.
#[test]
fn wav_headers_that_lie_about_sizes_cost_nothing() {
    let pcm = fixture("jfk.wav");
    for (channels, rate, bits, data_len) in [
        (1u16, 16_000u32, 16u16, u32::MAX),
        (u16::MAX, 16_000, 16, u32::MAX),
        (2, u32::MAX, 16, 1 << 31),
        (1, 1, 16, u32::MAX),
        (1, 16_000, u16::MAX, u32::MAX),
        (0, 16_000, 16, 1_000),
    ] {
        let mut b = pcm.clone();
        b[22..24].copy_from_slice(&channels.to_le_bytes());
        b[24..28].copy_from_slice(&rate.to_le_bytes());
        b[34..36].copy_from_slice(&bits.to_le_bytes());
        b[40..44].copy_from_slice(&data_len.to_le_bytes());
        b.truncate(4_096);
        check_decode(b, "wav").unwrap();
    }
}

// ---------------------------------------------------------------------------
// Recordings at rest: spools and finished objects.

/// The one file under `dir` (storage keeps its own layout).
fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                found.push(p)
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

fn tenant_key() -> (age::x25519::Identity, age::x25519::Recipient) {
    let id = age::x25519::Identity::generate();
    let r = id.to_public();
    (id, r)
}

proptest! {
    #![proptest_config(cases(64))]

    /// A damaged spool gives back a prefix of what was written (a torn end
    /// is a clean end) or an error: never altered audio, never a panic.
    #[test]
    fn damaged_spools_yield_a_prefix_or_an_error(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..12),
        record in 16usize..400,
        damage in edits(6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let (id, recipient) = tenant_key();
        let mut w = SpoolWriter::create(&storage, "t/s", &recipient, record).unwrap();
        for p in &pieces {
            w.write(p).unwrap();
            w.seal().unwrap();
        }
        w.finish().unwrap();
        let plain = pieces.concat();
        let path = only_file(dir.path());
        let damaged = apply(std::fs::read(&path).unwrap(), &damage);
        std::fs::write(&path, &damaged).unwrap();
        let (got, peak) = peak_of(|| -> Result<Option<Vec<u8>>, String> {
            let Some(mut r) = SpoolReader::open(storage.open_partial("t/s").map_err(|e| e.to_string())?, &id)
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let mut out = Vec::new();
            r.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(Some(out))
        });
        if let Ok(Some(out)) = got {
            prop_assert!(plain.starts_with(&out), "{} bytes that are not a prefix", out.len());
        }
        prop_assert!(peak <= 4 * damaged.len() + 256 * KIB, "{}", peak);
    }

    /// A damaged finished recording opens to exactly its WAV or not at all.
    #[test]
    fn damaged_recordings_open_whole_or_not_at_all(
        seconds in 0.05f32..3.0,
        damage in edits(4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let (id, recipient) = tenant_key();
        let samples = (seconds * 8_000.0) as u32;
        let mut wav_bytes = wav::pcm16_header(1, 8_000, samples * 2).to_vec();
        wav_bytes.extend((0..samples).flat_map(|i| ((i * 37 % 2_000) as i16).to_le_bytes()));
        crypt::store_wav(&storage, "t/r.wav.age", &recipient, wav_bytes.as_slice()).unwrap();
        let path = storage.path_of("t/r.wav.age").unwrap();
        let original = std::fs::read(&path).unwrap();
        let damaged = apply(original.clone(), &damage);
        std::fs::write(&path, &damaged).unwrap();
        let read = WavReader::open(storage.open("t/r.wav.age").unwrap(), &id).and_then(|mut r| {
            let mut out = Vec::new();
            r.read_to_end(&mut out).map_err(|e| callstream::recording::RecordingError::Corrupt(e.to_string()))?;
            Ok(out)
        });
        match read {
            Ok(out) => prop_assert_eq!(out, wav_bytes),
            Err(_) => prop_assert!(damaged != original),
        }
    }
}

/// The bounds above mean something only if the allocator sees what a
/// parse holds, including memory freed again before it returns.
#[test]
fn the_counting_allocator_sees_every_byte_held() {
    let (_, peak) = peak_of(|| {
        let big = vec![1u8; 3 * MIB];
        std::hint::black_box(&big);
        drop(big);
        vec![0u8; KIB]
    });
    assert!((3 * MIB..4 * MIB).contains(&peak), "{peak}");
    // A parse that reads a length and allocates it is caught.
    let (_, peak) = peak_of(|| {
        let claimed = u32::from_le_bytes([0, 0, 0x40, 0]) as usize;
        std::hint::black_box(Vec::<u8>::with_capacity(claimed));
    });
    assert!(peak >= 4 * MIB, "{peak}");
}
