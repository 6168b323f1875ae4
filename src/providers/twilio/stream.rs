//! The Twilio Media Streams wire protocol: text frames in, typed events out.
//!
//! Twilio sends `connected`, then `start`, then a `media` frame about every
//! 20 ms per track (plus `dtmf`, `mark` echoes), then `stop`. Parsing is the
//! hot path (~100 000 media frames/s per node), so a media frame is parsed in
//! one pass without allocating: strings borrow from the frame unless JSON
//! escapes force a copy.
//!
//! Quirks handled here rather than by callers:
//! - every numeric field except `mediaFormat.sampleRate/channels` arrives as
//!   a string (`"sequenceNumber":"3"`); numbers are accepted everywhere too;
//! - media tracks are `inbound`/`outbound`, DTMF tracks `inbound_track`;
//! - events we do not know become [`StreamEvent::Unknown`], so a Twilio
//!   protocol addition is logged and ignored instead of killing the call.
//!
//! Errors never echo frame contents: a frame may carry the per-call token
//! (in `start.customParameters`), caller audio or DTMF digits.
//!
//! [`outbound`] writes what we send back on a bidirectional stream; [`frames`]
//! is the other side of the socket (what Twilio sends), for the load generator
//! and tests.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::media::Track;

/// Why a received frame was rejected. Messages name the field at fault and
/// never include frame contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("frame is truncated JSON")]
    Truncated,
    #[error("frame has a value of the wrong type (line {line}, column {column})")]
    WrongType { line: usize, column: usize },
    #[error("`{event}` frame is missing `{field}`")]
    MissingField {
        event: &'static str,
        field: &'static str,
    },
    #[error("`{event}` frame: `{field}` is not an integer in range")]
    BadNumber {
        event: &'static str,
        field: &'static str,
    },
    #[error("`{event}` frame: unknown track")]
    UnknownTrack { event: &'static str },
    #[error("`dtmf` frame: digit is not one of 0-9 * # A-D")]
    BadDigit,
    #[error("media payload is not valid base64")]
    BadBase64,
}

impl From<serde_json::Error> for ProtocolError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        // serde's own messages can quote the offending value, so only the
        // category and position survive.
        match e.classify() {
            Category::Eof => ProtocolError::Truncated,
            Category::Data => ProtocolError::WrongType { line, column },
            Category::Syntax | Category::Io => ProtocolError::Syntax { line, column },
        }
    }
}

/// A Media Streams track as Twilio names it: `inbound` is audio from the
/// phone into Twilio (the remote party), `outbound` is what Twilio plays to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamTrack {
    Inbound,
    Outbound,
}

impl StreamTrack {
    /// The spelling used in `media.track` and `start.tracks`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamTrack::Inbound => "inbound",
            StreamTrack::Outbound => "outbound",
        }
    }

    /// The spelling used in `dtmf.track`.
    pub fn dtmf_str(self) -> &'static str {
        match self {
            StreamTrack::Inbound => "inbound_track",
            StreamTrack::Outbound => "outbound_track",
        }
    }

    /// Accepts both spellings: Twilio uses `inbound` for media and
    /// `inbound_track` for DTMF (and in TwiML's `track` attribute).
    pub fn from_wire(s: &str) -> Option<Self> {
        match s {
            "inbound" | "inbound_track" => Some(StreamTrack::Inbound),
            "outbound" | "outbound_track" => Some(StreamTrack::Outbound),
            _ => None,
        }
    }
}

impl From<StreamTrack> for Track {
    fn from(t: StreamTrack) -> Self {
        match t {
            StreamTrack::Inbound => Track::Caller,
            StreamTrack::Outbound => Track::Agent,
        }
    }
}

/// One frame received from Twilio, borrowing from the frame text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    Connected(Connected<'a>),
    Start(Start<'a>),
    Media(Media<'a>),
    Dtmf(Dtmf<'a>),
    Mark(Mark<'a>),
    Stop(Stop<'a>),
    /// An event this version does not know; log it and carry on.
    Unknown {
        event: Cow<'a, str>,
    },
}

/// First frame of every stream; describes the protocol that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected<'a> {
    /// `"Call"`.
    pub protocol: Cow<'a, str>,
    /// Protocol version, `"1.0.0"` today.
    pub version: Cow<'a, str>,
}

/// Stream metadata, sent once right after `connected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start<'a> {
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub account_sid: Cow<'a, str>,
    pub call_sid: Cow<'a, str>,
    /// Tracks that will follow; `["inbound"]` for one-way `inbound_track`.
    pub tracks: Vec<StreamTrack>,
    /// `<Parameter name value/>` children of the TwiML `<Stream>`.
    pub custom_parameters: CustomParameters<'a>,
    pub media_format: MediaFormat<'a>,
}

/// The `<Parameter>`s of the TwiML `<Stream>`. They carry our per-call token
/// and may carry phone numbers, so `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomParameters<'a>(BTreeMap<Cow<'a, str>, Cow<'a, str>>);

impl CustomParameters<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(AsRef::as_ref)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Name/value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

impl fmt::Debug for CustomParameters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// Audio format of the stream; `audio/x-mulaw`, 8000 Hz, mono on Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFormat<'a> {
    pub encoding: Cow<'a, str>,
    pub sample_rate: u32,
    pub channels: u16,
}

/// About 20 ms of audio on one track.
#[derive(Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// Counts every message of the stream (all kinds), from 1.
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub track: StreamTrack,
    /// Counts media messages, from 1. Place audio by `timestamp_ms`, not this.
    pub chunk: u64,
    /// Milliseconds since the stream started: the key for placing audio,
    /// filling gaps and aligning tracks (frames may arrive bunched).
    pub timestamp_ms: u64,
    /// Base64 of the raw audio; decode with [`decode_payload`].
    pub payload: Cow<'a, str>,
}

impl fmt::Debug for Media<'_> {
    /// Audio is call content: show its size, not the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Media")
            .field("sequence_number", &self.sequence_number)
            .field("stream_sid", &self.stream_sid)
            .field("track", &self.track)
            .field("chunk", &self.chunk)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_b64_len", &self.payload.len())
            .finish()
    }
}

/// A key press detected by Twilio (sent on bidirectional streams only).
#[derive(Clone, PartialEq, Eq)]
pub struct Dtmf<'a> {
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub track: StreamTrack,
    /// One of `0-9 * # A-D`.
    pub digit: char,
}

impl fmt::Debug for Dtmf<'_> {
    /// Digits may be a card number or PIN; keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dtmf")
            .field("sequence_number", &self.sequence_number)
            .field("stream_sid", &self.stream_sid)
            .field("track", &self.track)
            .field("digit", &"<redacted>")
            .finish()
    }
}

/// Twilio's echo of a mark we sent: the audio queued before it has played,
/// or was dropped by `clear`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark<'a> {
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub name: Cow<'a, str>,
}

/// The stream ended (call hung up, `<Stop>`, or REST stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop<'a> {
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub account_sid: Cow<'a, str>,
    pub call_sid: Cow<'a, str>,
}

const KNOWN_EVENTS: [&str; 6] = ["connected", "start", "media", "dtmf", "mark", "stop"];

/// Parses one text frame received from Twilio.
pub fn parse(text: &str) -> Result<StreamEvent<'_>, ProtocolError> {
    match serde_json::from_str::<wire::Envelope<'_>>(text) {
        Ok(env) => env.into_event(),
        Err(err) => {
            // An unknown event may use any shape, including field names that
            // clash with known ones; only then is the frame read twice.
            match serde_json::from_str::<wire::EventOnly<'_>>(text) {
                Ok(wire::EventOnly {
                    event: Some(wire::Str(event)),
                }) if !KNOWN_EVENTS.contains(&event.as_ref()) => Ok(StreamEvent::Unknown { event }),
                _ => Err(err.into()),
            }
        }
    }
}

/// Decodes a media payload into `out`, replacing its contents and reusing
/// its allocation. On error `out` is left empty.
pub fn decode_payload(b64: &str, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.clear();
    if STANDARD.decode_vec(b64, out).is_err() {
        out.clear();
        return Err(ProtocolError::BadBase64);
    }
    Ok(())
}

/// The JSON shapes. Every field is optional and checked after parsing, so a
/// missing one becomes a typed [`ProtocolError::MissingField`] instead of a
/// serde message (serde's messages can quote values, so none are passed on).
mod wire {
    use super::*;

    /// A string that borrows from the frame when it has no escapes.
    /// (`Option<Cow<str>>` would always copy: serde only borrows a `Cow`
    /// field directly marked `#[serde(borrow)]`.)
    #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(transparent)]
    pub(super) struct Str<'a>(#[serde(borrow)] pub(super) Cow<'a, str>);

    #[derive(Deserialize)]
    pub(super) struct EventOnly<'a> {
        #[serde(borrow)]
        pub(super) event: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Envelope<'a> {
        #[serde(borrow)]
        pub(super) event: Option<Str<'a>>,
        pub(super) sequence_number: Option<Num>,
        #[serde(borrow)]
        pub(super) stream_sid: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) protocol: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) version: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) start: Option<StartBody<'a>>,
        #[serde(borrow)]
        pub(super) media: Option<MediaBody<'a>>,
        #[serde(borrow)]
        pub(super) dtmf: Option<DtmfBody<'a>>,
        #[serde(borrow)]
        pub(super) mark: Option<MarkBody<'a>>,
        #[serde(borrow)]
        pub(super) stop: Option<StopBody<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct StartBody<'a> {
        #[serde(borrow)]
        pub(super) account_sid: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) stream_sid: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) call_sid: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) tracks: Option<Vec<Str<'a>>>,
        #[serde(borrow)]
        pub(super) custom_parameters: Option<BTreeMap<Str<'a>, Str<'a>>>,
        #[serde(borrow)]
        pub(super) media_format: Option<MediaFormatBody<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct MediaFormatBody<'a> {
        #[serde(borrow)]
        pub(super) encoding: Option<Str<'a>>,
        pub(super) sample_rate: Option<Num>,
        pub(super) channels: Option<Num>,
    }

    #[derive(Deserialize)]
    pub(super) struct MediaBody<'a> {
        #[serde(borrow)]
        pub(super) track: Option<Str<'a>>,
        pub(super) chunk: Option<Num>,
        pub(super) timestamp: Option<Num>,
        #[serde(borrow)]
        pub(super) payload: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct DtmfBody<'a> {
        #[serde(borrow)]
        pub(super) track: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) digit: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct MarkBody<'a> {
        #[serde(borrow)]
        pub(super) name: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct StopBody<'a> {
        #[serde(borrow)]
        pub(super) account_sid: Option<Str<'a>>,
        #[serde(borrow)]
        pub(super) call_sid: Option<Str<'a>>,
    }

    /// A non-negative integer sent as a string or a number. Anything else is
    /// kept as `Invalid` rather than failing inside serde, so the error can
    /// name the field.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Num {
        Int(u64),
        Invalid,
    }

    impl<'de> Deserialize<'de> for Num {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(NumVisitor)
        }
    }

    struct NumVisitor;

    impl<'de> Visitor<'de> for NumVisitor {
        type Value = Num;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer, as a string or a number")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
            Ok(Num::Int(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
            Ok(u64::try_from(v).map_or(Num::Invalid, Num::Int))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Num, E> {
            Ok(Num::Invalid)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
            // Digits only: `str::parse` would also take a leading `+`.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(Num::Invalid);
            }
            Ok(v.parse().map_or(Num::Invalid, Num::Int))
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
            Ok(Num::Invalid)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
            Ok(Num::Invalid)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Num::Invalid)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Num::Invalid)
        }
    }

    fn req<T>(v: Option<T>, event: &'static str, field: &'static str) -> Result<T, ProtocolError> {
        v.ok_or(ProtocolError::MissingField { event, field })
    }

    fn text<'a>(
        v: Option<Str<'a>>,
        event: &'static str,
        field: &'static str,
    ) -> Result<Cow<'a, str>, ProtocolError> {
        req(v, event, field).map(|s| s.0)
    }

    fn num(v: Option<Num>, event: &'static str, field: &'static str) -> Result<u64, ProtocolError> {
        match req(v, event, field)? {
            Num::Int(n) => Ok(n),
            Num::Invalid => Err(ProtocolError::BadNumber { event, field }),
        }
    }

    fn small<T: TryFrom<u64>>(
        v: Option<Num>,
        event: &'static str,
        field: &'static str,
    ) -> Result<T, ProtocolError> {
        T::try_from(num(v, event, field)?).map_err(|_| ProtocolError::BadNumber { event, field })
    }

    fn track(
        v: Option<Str<'_>>,
        event: &'static str,
        field: &'static str,
    ) -> Result<StreamTrack, ProtocolError> {
        StreamTrack::from_wire(&req(v, event, field)?.0)
            .ok_or(ProtocolError::UnknownTrack { event })
    }

    fn digit(s: &str) -> Result<char, ProtocolError> {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => Ok(c),
            _ => Err(ProtocolError::BadDigit),
        }
    }

    impl<'a> Envelope<'a> {
        pub(super) fn into_event(self) -> Result<StreamEvent<'a>, ProtocolError> {
            let event = text(self.event, "frame", "event")?;
            Ok(match event.as_ref() {
                "connected" => StreamEvent::Connected(Connected {
                    protocol: text(self.protocol, "connected", "protocol")?,
                    version: text(self.version, "connected", "version")?,
                }),
                "start" => {
                    const E: &str = "start";
                    let b = req(self.start, E, "start")?;
                    let f = req(b.media_format, E, "start.mediaFormat")?;
                    let tracks = req(b.tracks, E, "start.tracks")?
                        .into_iter()
                        .map(|t| track(Some(t), E, "start.tracks"))
                        .collect::<Result<_, _>>()?;
                    StreamEvent::Start(Start {
                        sequence_number: num(self.sequence_number, E, "sequenceNumber")?,
                        stream_sid: text(b.stream_sid, E, "start.streamSid")?,
                        account_sid: text(b.account_sid, E, "start.accountSid")?,
                        call_sid: text(b.call_sid, E, "start.callSid")?,
                        tracks,
                        // Absent when the TwiML has no <Parameter>.
                        custom_parameters: CustomParameters(
                            b.custom_parameters
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k.0, v.0))
                                .collect(),
                        ),
                        media_format: MediaFormat {
                            encoding: text(f.encoding, E, "start.mediaFormat.encoding")?,
                            sample_rate: small(f.sample_rate, E, "start.mediaFormat.sampleRate")?,
                            channels: small(f.channels, E, "start.mediaFormat.channels")?,
                        },
                    })
                }
                "media" => {
                    const E: &str = "media";
                    let b = req(self.media, E, "media")?;
                    StreamEvent::Media(Media {
                        sequence_number: num(self.sequence_number, E, "sequenceNumber")?,
                        stream_sid: text(self.stream_sid, E, "streamSid")?,
                        track: track(b.track, E, "media.track")?,
                        chunk: num(b.chunk, E, "media.chunk")?,
                        timestamp_ms: num(b.timestamp, E, "media.timestamp")?,
                        payload: text(b.payload, E, "media.payload")?,
                    })
                }
                "dtmf" => {
                    const E: &str = "dtmf";
                    let b = req(self.dtmf, E, "dtmf")?;
                    StreamEvent::Dtmf(Dtmf {
                        sequence_number: num(self.sequence_number, E, "sequenceNumber")?,
                        stream_sid: text(self.stream_sid, E, "streamSid")?,
                        track: track(b.track, E, "dtmf.track")?,
                        digit: digit(&text(b.digit, E, "dtmf.digit")?)?,
                    })
                }
                "mark" => {
                    const E: &str = "mark";
                    let b = req(self.mark, E, "mark")?;
                    StreamEvent::Mark(Mark {
                        sequence_number: num(self.sequence_number, E, "sequenceNumber")?,
                        stream_sid: text(self.stream_sid, E, "streamSid")?,
                        name: text(b.name, E, "mark.name")?,
                    })
                }
                "stop" => {
                    const E: &str = "stop";
                    let b = req(self.stop, E, "stop")?;
                    StreamEvent::Stop(Stop {
                        sequence_number: num(self.sequence_number, E, "sequenceNumber")?,
                        stream_sid: text(self.stream_sid, E, "streamSid")?,
                        account_sid: text(b.account_sid, E, "stop.accountSid")?,
                        call_sid: text(b.call_sid, E, "stop.callSid")?,
                    })
                }
                _ => StreamEvent::Unknown { event },
            })
        }
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Appends `n` as a JSON string, the way Twilio sends its numbers.
fn push_num_str(out: &mut String, n: u64) {
    use fmt::Write as _;
    out.push('"');
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
    out.push('"');
}

/// Messages we send to Twilio on a bidirectional (`<Connect><Stream>`) stream.
/// Each function appends one frame to `out`.
pub mod outbound {
    use super::*;

    /// Audio to play to the caller; `payload_b64` is base64 μ-law 8 kHz mono.
    pub fn media(out: &mut String, stream_sid: &str, payload_b64: &str) {
        media_start(out, stream_sid);
        push_json_str(out, payload_b64);
        out.push_str("}}");
    }

    /// Like [`media`], base64-encoding `audio` straight into `out`.
    pub fn media_audio(out: &mut String, stream_sid: &str, audio: &[u8]) {
        media_start(out, stream_sid);
        out.push('"');
        STANDARD.encode_string(audio, out);
        out.push_str("\"}}");
    }

    fn media_start(out: &mut String, stream_sid: &str) {
        out.push_str(r#"{"event":"media","streamSid":"#);
        push_json_str(out, stream_sid);
        out.push_str(r#","media":{"payload":"#);
    }

    /// Asks Twilio to echo a `mark` named `name` once the audio sent before
    /// it has played (or has been dropped by `clear`).
    pub fn mark(out: &mut String, stream_sid: &str, name: &str) {
        out.push_str(r#"{"event":"mark","streamSid":"#);
        push_json_str(out, stream_sid);
        out.push_str(r#","mark":{"name":"#);
        push_json_str(out, name);
        out.push_str("}}");
    }

    /// Barge-in: drops audio queued for playback; pending marks come back.
    pub fn clear(out: &mut String, stream_sid: &str) {
        out.push_str(r#"{"event":"clear","streamSid":"#);
        push_json_str(out, stream_sid);
        out.push('}');
    }
}

/// Twilio's side of the socket: frames exactly as Twilio sends them (numbers
/// as strings, Twilio's field order), and a parser for what we send back.
/// For the load generator and tests.
pub mod frames {
    use super::*;

    /// What a `start` frame says. `Debug` hides parameter values (they
    /// carry the stream token).
    #[derive(Clone)]
    pub struct StartInfo<'a> {
        pub sequence_number: u64,
        pub account_sid: &'a str,
        pub stream_sid: &'a str,
        pub call_sid: &'a str,
        pub tracks: &'a [StreamTrack],
        pub custom_parameters: &'a [(&'a str, &'a str)],
        pub encoding: &'a str,
        pub sample_rate: u32,
        pub channels: u16,
    }

    impl fmt::Debug for StartInfo<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let names: Vec<&str> = self.custom_parameters.iter().map(|(k, _)| *k).collect();
            f.debug_struct("StartInfo")
                .field("sequence_number", &self.sequence_number)
                .field("account_sid", &self.account_sid)
                .field("stream_sid", &self.stream_sid)
                .field("call_sid", &self.call_sid)
                .field("tracks", &self.tracks)
                .field("custom_parameter_names", &names)
                .field("encoding", &self.encoding)
                .field("sample_rate", &self.sample_rate)
                .field("channels", &self.channels)
                .finish()
        }
    }

    pub fn connected() -> String {
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
    }

    pub fn start(info: &StartInfo<'_>) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(256);
        out.push_str(r#"{"event":"start","sequenceNumber":"#);
        push_num_str(&mut out, info.sequence_number);
        out.push_str(r#","start":{"accountSid":"#);
        push_json_str(&mut out, info.account_sid);
        out.push_str(r#","streamSid":"#);
        push_json_str(&mut out, info.stream_sid);
        out.push_str(r#","callSid":"#);
        push_json_str(&mut out, info.call_sid);
        out.push_str(r#","tracks":["#);
        for (i, t) in info.tracks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, t.as_str());
        }
        out.push_str(r#"],"customParameters":{"#);
        for (i, (k, v)) in info.custom_parameters.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push(':');
            push_json_str(&mut out, v);
        }
        out.push_str(r#"},"mediaFormat":{"encoding":"#);
        push_json_str(&mut out, info.encoding);
        // The only numbers Twilio sends as JSON numbers.
        let _ = write!(
            out,
            r#","sampleRate":{},"channels":{}}}}},"streamSid":"#,
            info.sample_rate, info.channels
        );
        push_json_str(&mut out, info.stream_sid);
        out.push('}');
        out
    }

    /// Appends one media frame to `out` (clear it first to reuse it).
    pub fn media(
        out: &mut String,
        stream_sid: &str,
        sequence_number: u64,
        track: StreamTrack,
        chunk: u64,
        timestamp_ms: u64,
        payload_b64: &str,
    ) {
        out.push_str(r#"{"event":"media","sequenceNumber":"#);
        push_num_str(out, sequence_number);
        out.push_str(r#","media":{"track":""#);
        out.push_str(track.as_str());
        out.push_str(r#"","chunk":"#);
        push_num_str(out, chunk);
        out.push_str(r#","timestamp":"#);
        push_num_str(out, timestamp_ms);
        out.push_str(r#","payload":"#);
        push_json_str(out, payload_b64);
        out.push_str(r#"},"streamSid":"#);
        push_json_str(out, stream_sid);
        out.push('}');
    }

    pub fn dtmf(stream_sid: &str, sequence_number: u64, track: StreamTrack, digit: char) -> String {
        let mut out = String::with_capacity(128);
        out.push_str(r#"{"event":"dtmf","streamSid":"#);
        push_json_str(&mut out, stream_sid);
        out.push_str(r#","sequenceNumber":"#);
        push_num_str(&mut out, sequence_number);
        out.push_str(r#","dtmf":{"track":""#);
        out.push_str(track.dtmf_str());
        out.push_str(r#"","digit":"#);
        push_json_str(&mut out, digit.encode_utf8(&mut [0; 4]));
        out.push_str("}}");
        out
    }

    pub fn mark(stream_sid: &str, sequence_number: u64, name: &str) -> String {
        let mut out = String::with_capacity(128);
        out.push_str(r#"{"event":"mark","sequenceNumber":"#);
        push_num_str(&mut out, sequence_number);
        out.push_str(r#","streamSid":"#);
        push_json_str(&mut out, stream_sid);
        out.push_str(r#","mark":{"name":"#);
        push_json_str(&mut out, name);
        out.push_str("}}");
        out
    }

    pub fn stop(
        stream_sid: &str,
        sequence_number: u64,
        account_sid: &str,
        call_sid: &str,
    ) -> String {
        let mut out = String::with_capacity(160);
        out.push_str(r#"{"event":"stop","sequenceNumber":"#);
        push_num_str(&mut out, sequence_number);
        out.push_str(r#","stop":{"accountSid":"#);
        push_json_str(&mut out, account_sid);
        out.push_str(r#","callSid":"#);
        push_json_str(&mut out, call_sid);
        out.push_str(r#"},"streamSid":"#);
        push_json_str(&mut out, stream_sid);
        out.push('}');
        out
    }

    /// A message sent to Twilio (see [`outbound`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Command<'a> {
        Media {
            stream_sid: Cow<'a, str>,
            payload: Cow<'a, str>,
        },
        Mark {
            stream_sid: Cow<'a, str>,
            name: Cow<'a, str>,
        },
        Clear {
            stream_sid: Cow<'a, str>,
        },
        Unknown {
            event: Cow<'a, str>,
        },
    }

    /// Parses what the gateway sends, as a fake Twilio would.
    pub fn parse_command(text: &str) -> Result<Command<'_>, ProtocolError> {
        let env: wire::Envelope<'_> = serde_json::from_str(text)?;
        let event = env
            .event
            .ok_or(ProtocolError::MissingField {
                event: "frame",
                field: "event",
            })?
            .0;
        let sid = |e| {
            env.stream_sid
                .map(|s| s.0)
                .ok_or(ProtocolError::MissingField {
                    event: e,
                    field: "streamSid",
                })
        };
        Ok(match event.as_ref() {
            "media" => {
                let payload = env.media.and_then(|m| m.payload).map(|p| p.0);
                Command::Media {
                    stream_sid: sid("media")?,
                    payload: payload.ok_or(ProtocolError::MissingField {
                        event: "media",
                        field: "media.payload",
                    })?,
                }
            }
            "mark" => {
                let name = env.mark.and_then(|m| m.name).map(|n| n.0);
                Command::Mark {
                    stream_sid: sid("mark")?,
                    name: name.ok_or(ProtocolError::MissingField {
                        event: "mark",
                        field: "mark.name",
                    })?,
                }
            }
            "clear" => Command::Clear {
                stream_sid: sid("clear")?,
            },
            _ => Command::Unknown { event },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::frames::{self, Command, StartInfo};
    use super::*;

    const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    const ACC: &str = "AC4d2e6c7bb9b2b8f0d1e1f2a3b4c5d6e7";
    const CALL: &str = "CA8f2b7a3c1d9e4f5a6b7c8d9e0f1a2b3c";

    fn media(ev: StreamEvent<'_>) -> Media<'_> {
        match ev {
            StreamEvent::Media(m) => m,
            other => panic!("not media: {other:?}"),
        }
    }

    // Shapes as in Twilio's "Media Streams - WebSocket Messages" page
    // (twilio.com/docs/voice/media-streams/websocket-messages), pretty-printed
    // like its examples; SIDs and payloads are our own.

    #[test]
    fn parses_connected() {
        let f = r#"{ "event": "connected", "protocol": "Call", "version": "1.0.0" }"#;
        assert_eq!(
            parse(f),
            Ok(StreamEvent::Connected(Connected {
                protocol: "Call".into(),
                version: "1.0.0".into()
            }))
        );
    }

    #[test]
    fn parses_start() {
        let f = format!(
            r#"{{
  "event": "start",
  "sequenceNumber": "1",
  "start": {{
    "accountSid": "{ACC}",
    "streamSid": "{SID}",
    "callSid": "{CALL}",
    "tracks": [ "inbound", "outbound" ],
    "mediaFormat": {{ "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }},
    "customParameters": {{ "FirstName": "Jane", "token": "v1.secret-token" }}
  }},
  "streamSid": "{SID}"
}}"#
        );
        let StreamEvent::Start(s) = parse(&f).unwrap() else {
            panic!("not start")
        };
        assert_eq!(s.sequence_number, 1);
        assert_eq!(
            (&*s.stream_sid, &*s.account_sid, &*s.call_sid),
            (SID, ACC, CALL)
        );
        assert_eq!(s.tracks, [StreamTrack::Inbound, StreamTrack::Outbound]);
        assert_eq!(
            s.media_format,
            MediaFormat {
                encoding: "audio/x-mulaw".into(),
                sample_rate: 8000,
                channels: 1
            }
        );
        assert_eq!(s.custom_parameters.get("token"), Some("v1.secret-token"));
        assert_eq!(s.custom_parameters.get("FirstName"), Some("Jane"));
        assert_eq!(s.custom_parameters.len(), 2);
        // Parameter values (the token, phone numbers) stay out of Debug.
        let shown = format!("{s:?}");
        assert!(
            shown.contains("token") && !shown.contains("secret-token") && !shown.contains("Jane")
        );
    }

    #[test]
    fn start_without_custom_parameters() {
        let f = format!(
            r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"{ACC}","streamSid":"{SID}","callSid":"{CALL}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}},"streamSid":"{SID}"}}"#
        );
        let StreamEvent::Start(s) = parse(&f).unwrap() else {
            panic!("not start")
        };
        assert!(s.custom_parameters.is_empty());
    }

    #[test]
    fn parses_media_without_copying() {
        let f = format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"outbound","chunk":"1","timestamp":"5","payload":"/////w=="}},"streamSid":"{SID}"}}"#
        );
        let m = media(parse(&f).unwrap());
        assert_eq!(
            (m.sequence_number, m.track, m.chunk, m.timestamp_ms),
            (3, StreamTrack::Outbound, 1, 5)
        );
        assert!(matches!(m.payload, Cow::Borrowed("/////w==")));
        assert!(matches!(m.stream_sid, Cow::Borrowed(SID)));
        let mut audio = Vec::new();
        decode_payload(&m.payload, &mut audio).unwrap();
        assert_eq!(audio, [0xff; 4]);
        assert!(!format!("{m:?}").contains("/////w=="));
    }

    #[test]
    fn parses_dtmf_mark_stop() {
        let dtmf = format!(
            r#"{{"event":"dtmf","streamSid":"{SID}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
        );
        let StreamEvent::Dtmf(d) = parse(&dtmf).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.sequence_number, d.track, d.digit),
            (5, StreamTrack::Inbound, '1')
        );
        assert!(!format!("{d:?}").contains("'1'"));

        let mark = format!(
            r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{SID}","mark":{{"name":"my label"}}}}"#
        );
        assert_eq!(
            parse(&mark),
            Ok(StreamEvent::Mark(Mark {
                sequence_number: 4,
                stream_sid: SID.into(),
                name: "my label".into()
            }))
        );

        let stop = format!(
            r#"{{"event":"stop","sequenceNumber":"5","stop":{{"accountSid":"{ACC}","callSid":"{CALL}"}},"streamSid":"{SID}"}}"#
        );
        assert_eq!(
            parse(&stop),
            Ok(StreamEvent::Stop(Stop {
                sequence_number: 5,
                stream_sid: SID.into(),
                account_sid: ACC.into(),
                call_sid: CALL.into()
            }))
        );
    }

    #[test]
    fn numbers_as_strings_or_numbers() {
        let f = r#"{"event":"media","sequenceNumber":3,"media":{"track":"inbound","chunk":"2","timestamp":40,"payload":""},"streamSid":"MZ"}"#;
        let m = media(parse(f).unwrap());
        assert_eq!((m.sequence_number, m.chunk, m.timestamp_ms), (3, 2, 40));
        // And the reverse for mediaFormat.
        let s = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC","streamSid":"MZ","callSid":"CA","tracks":[],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":"1"}},"streamSid":"MZ"}"#;
        let StreamEvent::Start(s) = parse(s).unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.media_format.sample_rate, s.media_format.channels),
            (8000, 1)
        );
    }

    #[test]
    fn bad_and_huge_numbers() {
        let frame = |ts: &str| {
            format!(
                r#"{{"event":"media","sequenceNumber":"1","media":{{"track":"inbound","chunk":"1","timestamp":{ts},"payload":""}},"streamSid":"MZ"}}"#
            )
        };
        let bad = ProtocolError::BadNumber {
            event: "media",
            field: "media.timestamp",
        };
        for ts in [
            r#""18446744073709551616""#,
            "18446744073709551616",
            "1e30",
            "1.5",
            "-1",
            r#""-1""#,
            r#""+1""#,
            r#""""#,
            r#"" 1""#,
            r#""1e3""#,
            r#""abc""#,
            "true",
            "[1]",
            r#"{"a":1}"#,
        ] {
            assert_eq!(parse(&frame(ts)), Err(bad.clone()), "{ts}");
        }
        // `null` reads as absent.
        assert!(matches!(
            parse(&frame("null")),
            Err(ProtocolError::MissingField { .. })
        ));
        let max = frame(r#""18446744073709551615""#);
        let max = media(parse(&max).unwrap());
        assert_eq!(max.timestamp_ms, u64::MAX);

        let channels = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC","streamSid":"MZ","callSid":"CA","tracks":[],"mediaFormat":{"encoding":"x","sampleRate":8000,"channels":65536}},"streamSid":"MZ"}"#;
        assert_eq!(
            parse(channels),
            Err(ProtocolError::BadNumber {
                event: "start",
                field: "start.mediaFormat.channels"
            })
        );
    }

    #[test]
    fn unknown_events_are_not_errors() {
        for f in [
            r#"{"event":"transcription","sequenceNumber":"9","streamSid":"MZ"}"#,
            // Clashing shapes must not turn an unknown event into an error.
            r#"{"event":"transcription","media":"text","start":5,"sequenceNumber":{}}"#,
            r#"{"media":[1,2],"event":"future"}"#,
        ] {
            assert!(
                matches!(parse(f), Ok(StreamEvent::Unknown { ref event }) if event != "media"),
                "{f}"
            );
        }
    }

    #[test]
    fn malformed_json() {
        assert!(matches!(
            parse("not json"),
            Err(ProtocolError::Syntax { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"media",}"#),
            Err(ProtocolError::Syntax { .. })
        ));
        assert_eq!(parse(r#"{"event":"media","#), Err(ProtocolError::Truncated));
        assert_eq!(parse(""), Err(ProtocolError::Truncated));
        assert!(matches!(parse("[]"), Err(ProtocolError::WrongType { .. })));
        assert!(matches!(
            parse(r#"{"event":5}"#),
            Err(ProtocolError::WrongType { .. })
        ));
        assert_eq!(
            parse("{}"),
            Err(ProtocolError::MissingField {
                event: "frame",
                field: "event"
            })
        );
    }

    #[test]
    fn missing_fields() {
        let cases = [
            (
                r#"{"event":"media","sequenceNumber":"1","streamSid":"MZ"}"#,
                "media",
            ),
            (
                r#"{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1","timestamp":"1"},"streamSid":"MZ"}"#,
                "media.payload",
            ),
            (
                r#"{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1","timestamp":"1","payload":""}}"#,
                "streamSid",
            ),
            (
                r#"{"event":"media","media":{"track":"inbound","chunk":"1","timestamp":"1","payload":""},"streamSid":"MZ"}"#,
                "sequenceNumber",
            ),
            (r#"{"event":"connected","protocol":"Call"}"#, "version"),
            (
                r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC","streamSid":"MZ","tracks":[],"mediaFormat":{"encoding":"x","sampleRate":8000,"channels":1}}}"#,
                "start.callSid",
            ),
            (
                r#"{"event":"dtmf","sequenceNumber":"1","streamSid":"MZ","dtmf":{"track":"inbound_track"}}"#,
                "dtmf.digit",
            ),
            (
                r#"{"event":"mark","sequenceNumber":"1","streamSid":"MZ","mark":{}}"#,
                "mark.name",
            ),
            (
                r#"{"event":"stop","sequenceNumber":"1","streamSid":"MZ","stop":{"callSid":"CA"}}"#,
                "stop.accountSid",
            ),
        ];
        for (f, field) in cases {
            match parse(f) {
                Err(ProtocolError::MissingField { field: got, .. }) => {
                    assert_eq!(got, field, "{f}")
                }
                other => panic!("{f}: {other:?}"),
            }
        }
    }

    #[test]
    fn tracks_and_digits_are_checked() {
        let m = r#"{"event":"media","sequenceNumber":"1","media":{"track":"sideways","chunk":"1","timestamp":"1","payload":""},"streamSid":"MZ"}"#;
        assert_eq!(
            parse(m),
            Err(ProtocolError::UnknownTrack { event: "media" })
        );
        for digit in ["", "12", "E", "x", "٣"] {
            let d = format!(
                r#"{{"event":"dtmf","sequenceNumber":"1","streamSid":"MZ","dtmf":{{"track":"inbound_track","digit":"{digit}"}}}}"#
            );
            assert_eq!(parse(&d), Err(ProtocolError::BadDigit), "{digit}");
        }
        assert_eq!(Track::from(StreamTrack::Inbound), Track::Caller);
        assert_eq!(Track::from(StreamTrack::Outbound), Track::Agent);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        // Some JSON encoders escape `/`; the payload must still decode.
        let f = r#"{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1","timestamp":"1","payload":"\/\/\/\/\/w=="},"streamSid":"M\u005a"}"#;
        let m = media(parse(f).unwrap());
        assert_eq!(m.payload, "/////w==");
        assert_eq!(m.stream_sid, "MZ");
    }

    #[test]
    fn errors_never_echo_frame_contents() {
        let secret = "SECRETVALUE";
        let frames = [
            format!(r#"{{"event":"media","sequenceNumber":"{secret}"}}"#),
            format!(r#"{{"event":"media","media":"{secret}"}}"#),
            format!(
                r#"{{"event":"start","start":{{"customParameters":{{"token":["{secret}"]}}}}}}"#
            ),
            format!(r#"{{"event":"start","start":{{"tracks":["{secret}"]}}}}"#),
            format!(r#"{{"event":"{secret}","media":{{"track":5}}}}x"#),
            format!(
                r#"{{"event":"dtmf","sequenceNumber":"1","streamSid":"MZ","dtmf":{{"track":"{secret}","digit":"1"}}}}"#
            ),
        ];
        for f in &frames {
            let e = parse(f).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
        let mut out = Vec::new();
        let e = decode_payload(secret, &mut out).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(secret));
    }

    #[test]
    fn decode_payload_reuses_and_rejects() {
        let mut out = Vec::with_capacity(256);
        let cap = out.capacity();
        decode_payload("AAEC", &mut out).unwrap();
        assert_eq!(out, [0, 1, 2]);
        decode_payload("/w==", &mut out).unwrap();
        assert_eq!(out, [0xff]);
        assert_eq!(out.capacity(), cap);
        for bad in ["A", "AA=", "AAE", "!!!!", "AAEC\n", "_w==", "/w"] {
            assert_eq!(
                decode_payload(bad, &mut out),
                Err(ProtocolError::BadBase64),
                "{bad}"
            );
            assert!(out.is_empty());
        }
        decode_payload("", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn builders_round_trip_through_the_parser() {
        assert!(matches!(
            parse(&frames::connected()),
            Ok(StreamEvent::Connected(_))
        ));

        let params = [("token", "v1.a.b.1.x"), ("odd \"name\"\n", "välue\\\u{1}")];
        let info = StartInfo {
            sequence_number: 1,
            account_sid: ACC,
            stream_sid: SID,
            call_sid: CALL,
            tracks: &[StreamTrack::Inbound, StreamTrack::Outbound],
            custom_parameters: &params,
            encoding: "audio/x-mulaw",
            sample_rate: 8000,
            channels: 1,
        };
        assert!(!format!("{info:?}").contains("v1.a.b"));
        let text = frames::start(&info);
        let StreamEvent::Start(s) = parse(&text).unwrap() else {
            panic!()
        };
        assert_eq!(
            (&*s.stream_sid, &*s.account_sid, &*s.call_sid),
            (SID, ACC, CALL)
        );
        assert_eq!(s.tracks, info.tracks);
        assert_eq!(s.custom_parameters.iter().collect::<Vec<_>>().len(), 2);
        for (k, v) in params {
            assert_eq!(s.custom_parameters.get(k), Some(v));
        }
        assert_eq!(
            (s.media_format.sample_rate, s.media_format.channels),
            (8000, 1)
        );

        let mut buf = String::new();
        frames::media(&mut buf, SID, 7, StreamTrack::Outbound, 3, 40, "AAEC");
        assert_eq!(
            buf,
            format!(
                r#"{{"event":"media","sequenceNumber":"7","media":{{"track":"outbound","chunk":"3","timestamp":"40","payload":"AAEC"}},"streamSid":"{SID}"}}"#
            )
        );
        let m = media(parse(&buf).unwrap());
        assert_eq!(
            (m.sequence_number, m.track, m.chunk, m.timestamp_ms),
            (7, StreamTrack::Outbound, 3, 40)
        );

        let dtmf = frames::dtmf(SID, 8, StreamTrack::Inbound, '#');
        let StreamEvent::Dtmf(d) = parse(&dtmf).unwrap() else {
            panic!()
        };
        assert_eq!((d.sequence_number, d.digit), (8, '#'));
        assert_eq!(
            parse(&frames::mark(SID, 9, "m\"1")),
            Ok(StreamEvent::Mark(Mark {
                sequence_number: 9,
                stream_sid: SID.into(),
                name: "m\"1".into()
            }))
        );
        assert_eq!(
            parse(&frames::stop(SID, 10, ACC, CALL)),
            Ok(StreamEvent::Stop(Stop {
                sequence_number: 10,
                stream_sid: SID.into(),
                account_sid: ACC.into(),
                call_sid: CALL.into()
            }))
        );
    }

    #[test]
    fn outbound_messages_match_twilio_shapes() {
        let mut out = String::new();
        outbound::media(&mut out, SID, "AAEC");
        assert_eq!(
            out,
            format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"AAEC"}}}}"#)
        );
        out.clear();
        outbound::media_audio(&mut out, SID, &[0, 1, 2]);
        assert_eq!(
            out,
            format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"AAEC"}}}}"#)
        );
        out.clear();
        outbound::mark(&mut out, SID, "utterance-1");
        assert_eq!(
            out,
            format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":"utterance-1"}}}}"#)
        );
        out.clear();
        outbound::clear(&mut out, SID);
        assert_eq!(out, format!(r#"{{"event":"clear","streamSid":"{SID}"}}"#));

        let name = "tab\there \"quoted\" \\ \u{7}\u{2028}😀";
        out.clear();
        outbound::mark(&mut out, SID, name);
        assert_eq!(
            frames::parse_command(&out),
            Ok(Command::Mark {
                stream_sid: SID.into(),
                name: name.into()
            })
        );
        out.clear();
        outbound::media_audio(&mut out, SID, &[0xff; 160]);
        let Ok(Command::Media { payload, .. }) = frames::parse_command(&out) else {
            panic!()
        };
        let mut audio = Vec::new();
        decode_payload(&payload, &mut audio).unwrap();
        assert_eq!(audio, [0xff; 160]);
        out.clear();
        outbound::clear(&mut out, SID);
        assert_eq!(
            frames::parse_command(&out),
            Ok(Command::Clear {
                stream_sid: SID.into()
            })
        );
    }

    #[test]
    fn json_escaping_round_trips_any_string() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut out = String::new();
        for _ in 0..5_000 {
            let s: String = (0..rng.gen_range(0..24))
                .map(|_| match rng.gen_range(0..4) {
                    0 => char::from(rng.gen_range(0u8..0x20)),
                    1 => ['"', '\\', '/', '\u{7f}', '\u{2028}'][rng.gen_range(0..5)],
                    2 => rng.gen::<char>(),
                    _ => char::from(rng.gen_range(0x20u8..0x7f)),
                })
                .collect();
            out.clear();
            push_json_str(&mut out, &s);
            assert_eq!(
                serde_json::from_str::<String>(&out).ok().as_deref(),
                Some(&*s)
            );
        }
    }

    /// Nothing reachable from a frame may panic: random bytes, and valid
    /// frames with random damage.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut media_frame = String::new();
        frames::media(
            &mut media_frame,
            SID,
            3,
            StreamTrack::Inbound,
            2,
            5,
            "/////w==",
        );
        let seeds = [
            frames::connected(),
            frames::start(&StartInfo {
                sequence_number: 1,
                account_sid: ACC,
                stream_sid: SID,
                call_sid: CALL,
                tracks: &[StreamTrack::Inbound],
                custom_parameters: &[("token", "t")],
                encoding: "audio/x-mulaw",
                sample_rate: 8000,
                channels: 1,
            }),
            media_frame,
            frames::dtmf(SID, 4, StreamTrack::Inbound, '5'),
            frames::mark(SID, 5, "m"),
            frames::stop(SID, 6, ACC, CALL),
        ];
        let mut audio = Vec::new();
        let junk: &[u8] = b"{}[]\":,\\0123456789-+.eEtrufalsn ";
        for i in 0..40_000 {
            let bytes: Vec<u8> = if i % 4 == 0 {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            } else {
                let mut b = seeds[rng.gen_range(0..seeds.len())].clone().into_bytes();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..b.len());
                    match rng.gen_range(0..3) {
                        0 => b[at] = junk[rng.gen_range(0..junk.len())],
                        1 => b[at] = rng.gen(),
                        _ => b.truncate(at),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(StreamEvent::Media(m)) = parse(&text) {
                let _ = decode_payload(&m.payload, &mut audio);
            }
            let _ = frames::parse_command(&text);
            let _ = decode_payload(&text, &mut audio);
        }
    }
}
