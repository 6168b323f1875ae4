//! Checks on what a Media Streams `start` claims, before any of it reaches
//! the database or a media session.
//!
//! The parser ([`super::stream`]) accepts any well-formed frame; this module
//! decides whether its identifiers and parameters are plausible Twilio ones:
//! - SIDs are two letters (`AC` account, `CA` call, `MZ` stream) followed by
//!   32 hex digits, nothing else;
//! - `customParameters` are bounded in count and size ([`ParamLimits`]);
//! - `from` / `to` are kept only when they are E.164 numbers (anything else,
//!   HTML included, is dropped, not stored);
//! - the media format is one the media core can decode: a known encoding, a
//!   supported sample rate, mono, one or two distinct tracks.
//!
//! Errors name the field at fault and never echo its value.

use crate::media::codec::Codec;
use crate::phone::E164;

use super::stream::Start;

/// Hex digits after the two-letter prefix of a Twilio SID.
pub const SID_HEX_DIGITS: usize = 32;

/// Sample rates the media core decodes (Twilio sends 8000).
pub const SAMPLE_RATES: &[u32] = &[8_000, 16_000, 24_000, 32_000, 44_100, 48_000];

/// Why a `start` was refused. Carries field names only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("start.{0} is not a Twilio SID")]
    BadSid(&'static str),
    #[error("start.customParameters has too many entries")]
    TooManyParameters,
    #[error("start.customParameters has a name or value that is too long")]
    ParameterTooLong,
    #[error("unsupported media encoding")]
    Encoding,
    #[error("unsupported sample rate")]
    SampleRate,
    #[error("only mono media is supported")]
    Channels,
    #[error("start.tracks must name one or two distinct tracks")]
    Tracks,
}

/// Bounds on `start.customParameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLimits {
    /// Most parameters.
    pub max_count: usize,
    /// Longest name or value, in bytes.
    pub max_bytes: usize,
}

/// A `start` that passed every check: what may be stored and used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidStart {
    pub codec: Codec,
    pub sample_rate: u32,
    /// `from`, when it is an E.164 number.
    pub from: Option<E164>,
    /// `to`, when it is an E.164 number.
    pub to: Option<E164>,
}

/// Whether `s` is `prefix` followed by 32 hex digits.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + SID_HEX_DIGITS
        && s.starts_with(prefix)
        && s.as_bytes()[prefix.len()..]
            .iter()
            .all(u8::is_ascii_hexdigit)
}

/// Checks everything in `start` before anything is allocated for it.
pub fn check_start(start: &Start<'_>, limits: ParamLimits) -> Result<ValidStart, StartError> {
    for (value, prefix, field) in [
        (&start.account_sid, "AC", "accountSid"),
        (&start.call_sid, "CA", "callSid"),
        (&start.stream_sid, "MZ", "streamSid"),
    ] {
        if !is_sid(value, prefix) {
            return Err(StartError::BadSid(field));
        }
    }
    let params = &start.custom_parameters;
    if params.len() > limits.max_count {
        return Err(StartError::TooManyParameters);
    }
    if params
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > limits.max_bytes || v.len() > limits.max_bytes)
    {
        return Err(StartError::ParameterTooLong);
    }
    let f = &start.media_format;
    let codec = Codec::from_mime(&f.encoding).map_err(|_| StartError::Encoding)?;
    if !SAMPLE_RATES.contains(&f.sample_rate) {
        return Err(StartError::SampleRate);
    }
    if f.channels != 1 {
        return Err(StartError::Channels);
    }
    let distinct = match start.tracks.as_slice() {
        [_] => true,
        [a, b] => a != b,
        _ => false,
    };
    if !distinct {
        return Err(StartError::Tracks);
    }
    let number = |name| params.get(name).and_then(|v| E164::parse(v).ok());
    Ok(ValidStart {
        codec,
        sample_rate: f.sample_rate,
        from: number("from"),
        to: number("to"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::twilio::stream::{frames, parse, StreamEvent, StreamTrack};

    const LIMITS: ParamLimits = ParamLimits {
        max_count: 4,
        max_bytes: 32,
    };
    const ACC: &str = "AC0123456789abcdef0123456789abcdef";
    const CALL: &str = "CA0123456789abcdef0123456789ABCDEF";
    const SID: &str = "MZ0123456789abcdef0123456789abcdef";

    fn start_text(
        account: &str,
        call: &str,
        stream: &str,
        params: &[(&str, &str)],
        rate: u32,
    ) -> String {
        frames::start(&frames::StartInfo {
            sequence_number: 1,
            account_sid: account,
            stream_sid: stream,
            call_sid: call,
            tracks: &[StreamTrack::Inbound, StreamTrack::Outbound],
            custom_parameters: params,
            encoding: "audio/x-mulaw",
            sample_rate: rate,
            channels: 1,
        })
    }

    fn check(text: &str) -> Result<ValidStart, StartError> {
        match parse(text).unwrap() {
            StreamEvent::Start(s) => check_start(&s, LIMITS),
            other => panic!("not a start: {other:?}"),
        }
    }

    #[test]
    fn sids_are_two_letters_and_32_hex_digits() {
        assert!(is_sid(ACC, "AC"));
        assert!(is_sid(CALL, "CA"));
        for bad in [
            "",
            "CA",
            "CAother",
            &CALL[..33],
            &format!("{CALL}0"),
            &CALL.replace("CA", "MZ"),
            &CALL.replacen('0', "g", 1),
            &CALL.replacen('0', "é", 1),
            &"CA".repeat(10_000),
        ] {
            assert!(!is_sid(bad, "CA"), "{bad:?}");
        }
    }

    #[test]
    fn a_real_start_passes_and_keeps_e164_numbers_only() {
        let ok = check(&start_text(
            ACC,
            CALL,
            SID,
            &[("from", "+14155550100"), ("to", "<b>hi</b>")],
            8000,
        ))
        .unwrap();
        assert_eq!(ok.codec, Codec::Mulaw);
        assert_eq!(ok.from.as_ref().map(E164::as_str), Some("+14155550100"));
        assert_eq!(ok.to, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        let long_call = format!("CA{}", "a".repeat(20_000));
        let long_value = "v".repeat(33);
        let many: Vec<(String, String)> = (0..5).map(|i| (format!("p{i}"), "x".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
        let cases = [
            (
                start_text(ACC, &long_call, SID, &[], 8000),
                StartError::BadSid("callSid"),
            ),
            (
                start_text("ACx", CALL, SID, &[], 8000),
                StartError::BadSid("accountSid"),
            ),
            (
                start_text(ACC, CALL, "MZ1", &[], 8000),
                StartError::BadSid("streamSid"),
            ),
            (
                start_text(ACC, CALL, SID, &many, 8000),
                StartError::TooManyParameters,
            ),
            (
                start_text(ACC, CALL, SID, &[("from", &long_value)], 8000),
                StartError::ParameterTooLong,
            ),
            (start_text(ACC, CALL, SID, &[], 0), StartError::SampleRate),
            (
                start_text(ACC, CALL, SID, &[], 7_999),
                StartError::SampleRate,
            ),
            (
                start_text(ACC, CALL, SID, &[], 8000).replace("audio/x-mulaw", "audio/ogg"),
                StartError::Encoding,
            ),
            (
                start_text(ACC, CALL, SID, &[], 8000).replace(r#""channels":1"#, r#""channels":2"#),
                StartError::Channels,
            ),
            (
                start_text(ACC, CALL, SID, &[], 8000).replace(r#"["inbound","outbound"]"#, "[]"),
                StartError::Tracks,
            ),
            (
                start_text(ACC, CALL, SID, &[], 8000)
                    .replace(r#"["inbound","outbound"]"#, r#"["inbound","inbound"]"#),
                StartError::Tracks,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(check(&text), Err(want), "{text:.200}");
            assert!(!want.to_string().contains(&long_value));
        }
    }
}
