//! Transcript export: plain text, JSON, WebVTT and SRT.
//!
//! Calls have two parties, so each segment may carry the [`Track`] it was
//! heard on; WebVTT shows it as a voice span (`<v Caller>`), SRT and text as a
//! `Caller:` prefix. Segments of a plain file carry none.

use std::fmt::Write as _;

use serde::Serialize;

use crate::asr::engine::Segment;
use crate::media::Track;

/// A segment and, for calls, who spoke it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledSegment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    #[serde(flatten)]
    pub segment: Segment,
}

impl From<Segment> for LabelledSegment {
    fn from(segment: Segment) -> Self {
        Self {
            track: None,
            segment,
        }
    }
}

/// Output formats of `callstream transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One line per segment.
    #[default]
    Txt,
    /// `{"text", "segments": [{start_ms, end_ms, text, track?, confidence, no_speech_prob}]}`.
    Json,
    /// WebVTT captions.
    Vtt,
    /// SubRip captions.
    Srt,
}

/// Renders `segments` in `format`; JSON is pretty-printed.
pub fn render(format: Format, segments: &[LabelledSegment]) -> String {
    match format {
        Format::Txt => to_txt(segments),
        Format::Json => {
            // Serialising plain structs of strings and numbers cannot fail.
            serde_json::to_string_pretty(&to_json(segments)).unwrap_or_default() + "\n"
        }
        Format::Vtt => to_vtt(segments),
        Format::Srt => to_srt(segments),
    }
}

/// Display name of a track in captions.
pub fn speaker(track: Track) -> &'static str {
    match track {
        Track::Caller => "Caller",
        Track::Agent => "Agent",
    }
}

/// Segment text on one line: captions and text lines must not break inside a cue.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Plain text, one segment per line, `Caller: ` prefixed on calls.
pub fn to_txt(segments: &[LabelledSegment]) -> String {
    let mut out = String::new();
    for s in segments {
        let text = one_line(&s.segment.text);
        if text.is_empty() {
            continue;
        }
        if let Some(track) = s.track {
            let _ = write!(out, "{}: ", speaker(track));
        }
        out.push_str(&text);
        out.push('\n');
    }
    out
}

/// The whole transcript as one JSON object: `text` (segments joined by
/// spaces) and `segments`.
pub fn to_json(segments: &[LabelledSegment]) -> serde_json::Value {
    let text = segments
        .iter()
        .map(|s| one_line(&s.segment.text))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({ "text": text, "segments": segments })
}

/// Cue times: never negative, and the end strictly after the start (WebVTT
/// parsers drop cues whose end is not after their start; Whisper can emit
/// zero-length segments).
fn cue_times(s: &Segment) -> (u64, u64) {
    let start = s.start_ms.max(0) as u64;
    let end = (s.end_ms.max(0) as u64).max(start + 1);
    (start, end)
}

/// `HH:MM:SS<sep>mmm`; hours grow past two digits rather than wrap.
fn timestamp(ms: u64, sep: char) -> String {
    let (h, m, s, f) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000,
    );
    format!("{h:02}:{m:02}:{s:02}{sep}{f:03}")
}

/// Escapes cue text for WebVTT: `&`, `<` and `>` are markup there, and
/// `-->` would read as a timing line.
fn vtt_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// WebVTT: `WEBVTT` header, then one cue per segment with `<v Speaker>` on calls.
pub fn to_vtt(segments: &[LabelledSegment]) -> String {
    let mut out = String::from("WEBVTT\n");
    for s in segments {
        let text = one_line(&s.segment.text);
        if text.is_empty() {
            continue;
        }
        let (start, end) = cue_times(&s.segment);
        let _ = write!(
            out,
            "\n{} --> {}\n",
            timestamp(start, '.'),
            timestamp(end, '.')
        );
        if let Some(track) = s.track {
            let _ = write!(out, "<v {}>", speaker(track));
        }
        out.push_str(&vtt_escape(&text));
        out.push('\n');
    }
    out
}

/// SubRip: numbered cues from 1, `HH:MM:SS,mmm`, `Speaker: ` prefix on calls.
pub fn to_srt(segments: &[LabelledSegment]) -> String {
    let mut out = String::new();
    let cues = segments
        .iter()
        .map(|s| (s, one_line(&s.segment.text)))
        .filter(|(_, text)| !text.is_empty());
    for (n, (s, text)) in cues.enumerate() {
        let (start, end) = cue_times(&s.segment);
        if n > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}\n{} --> {}",
            n + 1,
            timestamp(start, ','),
            timestamp(end, ',')
        );
        if let Some(track) = s.track {
            let _ = write!(out, "{}: ", speaker(track));
        }
        // A blank line ends an SRT cue; `one_line` guarantees there is none.
        out.push_str(&text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, end_ms: i64, text: &str, track: Option<Track>) -> LabelledSegment {
        LabelledSegment {
            track,
            segment: Segment {
                start_ms,
                end_ms,
                text: text.into(),
                confidence: Some(0.9),
                no_speech_prob: 0.01,
                words: Vec::new(),
            },
        }
    }

    fn call() -> Vec<LabelledSegment> {
        vec![
            seg(0, 2_500, " Hello, thanks for calling.", Some(Track::Agent)),
            seg(
                2_600,
                4_000,
                "Hi <there> & bye --> now",
                Some(Track::Caller),
            ),
            seg(3_725_042, 3_725_042, "late\n\nline", Some(Track::Caller)),
            seg(5_000, 6_000, "   ", None),
        ]
    }

    /// Checks the WebVTT structure: header, blank-line separated cues, each a
    /// well-formed timing line with end > start, then non-empty payload lines
    /// that contain no `-->`.
    fn assert_valid_vtt(vtt: &str) -> usize {
        let mut blocks = vtt.split("\n\n");
        assert_eq!(blocks.next(), Some("WEBVTT"));
        let mut cues = 0;
        for block in blocks.filter(|b| !b.trim().is_empty()) {
            let mut lines = block.lines();
            let timing = lines.next().unwrap();
            let (start, end) = timing.split_once(" --> ").expect("timing line");
            let parse = |t: &str| {
                let (hms, ms) = t.split_once('.').unwrap();
                let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
                assert_eq!(parts.len(), 3, "{t}");
                assert!(parts[1] < 60 && parts[2] < 60 && ms.len() == 3);
                ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + ms.parse::<u64>().unwrap()
            };
            assert!(parse(end) > parse(start), "{timing}");
            let payload: Vec<&str> = lines.collect();
            assert!(!payload.is_empty());
            assert!(payload.iter().all(|l| !l.is_empty() && !l.contains("-->")));
            cues += 1;
        }
        assert!(vtt.ends_with('\n'));
        cues
    }

    #[test]
    fn vtt_is_valid_with_voices_and_escapes() {
        let vtt = to_vtt(&call());
        assert_eq!(assert_valid_vtt(&vtt), 3);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n<v Agent>Hello, thanks"));
        assert!(vtt.contains("<v Caller>Hi &lt;there&gt; &amp; bye --&gt; now\n"));
        // 1 h 2 min 5.042 s; zero length stretched to 1 ms; newlines folded.
        assert!(vtt.contains("01:02:05.042 --> 01:02:05.043\n<v Caller>late line\n"));
    }

    #[test]
    fn vtt_without_tracks_has_no_voice_spans() {
        let vtt = to_vtt(&[seg(0, 1_000, "plain file", None)]);
        assert_eq!(vtt, "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nplain file\n");
        assert_eq!(to_vtt(&[]), "WEBVTT\n");
    }

    #[test]
    fn srt_numbers_cues_from_one_with_commas() {
        let srt = to_srt(&call());
        let expected = "1\n00:00:00,000 --> 00:00:02,500\nAgent: Hello, thanks for calling.\n\n\
                        2\n00:00:02,600 --> 00:00:04,000\nCaller: Hi <there> & bye --> now\n\n\
                        3\n01:02:05,042 --> 01:02:05,043\nCaller: late line\n";
        assert_eq!(srt, expected);
        for (n, block) in srt.split("\n\n").enumerate() {
            let mut lines = block.lines();
            assert_eq!(lines.next(), Some((n + 1).to_string().as_str()));
            let timing = lines.next().unwrap();
            assert_eq!(timing.len(), "00:00:00,000 --> 00:00:00,000".len());
        }
    }

    #[test]
    fn txt_and_json() {
        assert_eq!(
            to_txt(&call()),
            "Agent: Hello, thanks for calling.\nCaller: Hi <there> & bye --> now\nCaller: late line\n"
        );
        assert_eq!(to_txt(&[seg(0, 1, " just text ", None)]), "just text\n");
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &call())).unwrap();
        assert_eq!(
            json["text"],
            "Hello, thanks for calling. Hi <there> & bye --> now late line"
        );
        let first = &json["segments"][0];
        assert_eq!(first["track"], "agent");
        assert_eq!(first["start_ms"], 0);
        assert_eq!(first["end_ms"], 2_500);
        let plain = to_json(&[seg(0, 1, "x", None)]);
        assert!(plain["segments"][0].get("track").is_none());
    }

    #[test]
    fn negative_times_clamp_to_zero() {
        let vtt = to_vtt(&[seg(-50, -10, "early", None)]);
        assert!(vtt.contains("00:00:00.000 --> 00:00:00.001\n"));
    }
}
