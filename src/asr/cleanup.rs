//! Clean-up of Whisper's output after each run: Whisper hallucinates on
//! silence and loops on short or noisy windows, and these guards catch
//! both without a model, so they are tested on text alone.
//!
//! Segments that are probably not speech are dropped (high no-speech
//! probability with low token confidence, or only a bracketed annotation
//! such as `[BLANK_AUDIO]`); any n-gram repeated three or more times in a
//! row is collapsed (within a segment, and identical consecutive segments);
//! and [`looks_degenerate`] tells the engine when a shrunk-window decode
//! must be redone with the full window.

use crate::asr::engine::Segment;

/// A segment is dropped as "not speech" when Whisper's no-speech probability
/// is above this...
pub const NO_SPEECH_THRESHOLD: f32 = 0.6;
/// ...and its mean token probability is below this.
pub const LOW_CONFIDENCE: f32 = 0.5;
/// Consecutive repeats of the same n-gram that count as a decoding loop.
pub const REPEAT_LIMIT: usize = 3;

/// Whether a decode of `audio_ms` of audio looks like a loop rather than
/// speech: it ran into its token cap, or says a phrase three times over
/// (any order: "front, left, left, front, left, front"), or more words
/// than anyone says in that time, or words with little variety.
pub fn looks_degenerate(text: &str, audio_ms: u64, hit_token_cap: bool) -> bool {
    if hit_token_cap {
        return true;
    }
    let words = words_key(text, Blanks::Skip);
    if words.len() < 3 {
        return false;
    }
    // Fast speech is about 4 words a second; digits read out about 3.
    let per_second = words.len() as f64 * 1000.0 / audio_ms.max(1) as f64;
    if words.len() >= 6 && per_second > 6.0 {
        return true;
    }
    // Collapsing changed the words: a loop. (A lone "—" or "..." is no
    // word on either side, so it costs no full-window retry.)
    if words_key(&collapse_repeats(text), Blanks::Skip) != words {
        return true;
    }
    let mut distinct = words.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // Short stretches of real speech rarely reuse most of their words.
    (words.len() >= 6 && distinct.len() * 5 < words.len() * 2)
        || (words.len() < 12 && distinct.len() * 2 < words.len())
}

/// Applies the guards described on the module: drops non-speech, collapses
/// repetition loops within segments, then runs of [`REPEAT_LIMIT`] or more
/// identical consecutive segments into one spanning them all.
pub fn clean_segments(segments: Vec<Segment>) -> Vec<Segment> {
    let kept: Vec<Segment> = segments
        .into_iter()
        .filter(|s| !is_probably_not_speech(s))
        .map(|mut s| {
            let collapsed = collapse_repeats(&s.text);
            if collapsed != s.text {
                // The words no longer match the text: better none.
                s.words.clear();
            }
            s.text = collapsed;
            s
        })
        .filter(|s| !s.text.is_empty())
        .collect();
    let mut out = Vec::with_capacity(kept.len());
    let mut rest = kept.into_iter().peekable();
    while let Some(first) = rest.next() {
        let key = words_key(&first.text, Blanks::Keep);
        let mut run = vec![first];
        while let Some(next) = rest.next_if(|s| words_key(&s.text, Blanks::Keep) == key) {
            run.push(next);
        }
        // A whole sentence said twice in a row is almost always Whisper
        // looping on a short window (seen with shrunk encoders); a short word
        // ("no. no.") may really be repeated.
        let limit = if key.len() >= 3 { 2 } else { REPEAT_LIMIT };
        if run.len() >= limit {
            let end_ms = run.iter().map(|s| s.end_ms).max().unwrap_or_default();
            let mut one = run.swap_remove(0);
            one.end_ms = one.end_ms.max(end_ms);
            out.push(one);
        } else {
            out.extend(run);
        }
    }
    out
}

/// Hallucination over silence or noise: nothing but annotations such as
/// `[BLANK_AUDIO]`, `(music)` or `♪`, or a likely no-speech window decoded
/// with low confidence.
fn is_probably_not_speech(seg: &Segment) -> bool {
    let mut depth = 0usize;
    let mut spoken = false;
    for c in seg.text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            c if depth == 0 && c.is_alphanumeric() => spoken = true,
            _ => {}
        }
    }
    !spoken
        || (seg.no_speech_prob > NO_SPEECH_THRESHOLD
            && seg.confidence.unwrap_or(0.0) < LOW_CONFIDENCE)
}

/// A word compared case- and punctuation-insensitively ("Anna." and "anna"
/// are one key; a word with no letter or digit, such as "—", has the empty
/// key). The one normaliser the engine's guards and the live policy share.
pub(crate) fn word_key(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// What [`words_key`] does with words whose key is empty ("—", "...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blanks {
    /// Keep their empty keys: texts match only with the same tokens in the
    /// same places (the engine's segment and loop checks).
    Keep,
    /// Drop them: texts match when they say the same words (live
    /// agreement, and the word counts of [`looks_degenerate`]).
    Skip,
}

/// The [`word_key`]s of `text`'s whitespace-separated words.
pub(crate) fn words_key(text: &str, blanks: Blanks) -> Vec<String> {
    text.split_whitespace()
        .map(word_key)
        .filter(|k| blanks == Blanks::Keep || !k.is_empty())
        .collect()
}

/// Replaces any n-gram repeated [`REPEAT_LIMIT`] or more times in a row by
/// one copy ("thank you thank you thank you" → "thank you"). Shorter n-grams
/// are tried first, so "no no no no" becomes "no".
pub fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let mut advanced = false;
        for n in 1..=(words.len() - i) / REPEAT_LIMIT {
            let gram = &keys[i..i + n];
            if gram.iter().all(String::is_empty) {
                continue;
            }
            let mut copies = 1;
            while i + (copies + 1) * n <= words.len()
                && keys[i + copies * n..i + (copies + 1) * n] == *gram
            {
                copies += 1;
            }
            if copies >= REPEAT_LIMIT {
                out.extend_from_slice(&words[i..i + n]);
                i += copies * n;
                advanced = true;
                break;
            }
        }
        if !advanced {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str, no_speech_prob: f32, confidence: Option<f32>) -> Segment {
        Segment {
            start_ms: 0,
            end_ms: 1_000,
            text: text.into(),
            confidence,
            no_speech_prob,
            words: Vec::new(),
        }
    }

    #[test]
    fn word_keys_ignore_case_and_punctuation() {
        assert_eq!(word_key("Anna."), "anna");
        assert_eq!(
            words_key("Hello — there.", Blanks::Keep),
            ["hello", "", "there"]
        );
        assert_eq!(
            words_key("Hello — there.", Blanks::Skip),
            ["hello", "there"]
        );
    }

    #[test]
    fn loops_look_degenerate_and_speech_does_not() {
        let users_saw = "Front, left, left, front, left, front, left, left, front, left,";
        assert!(looks_degenerate(users_saw, 1_500, false));
        assert!(looks_degenerate(
            "thank you thank you thank you",
            3_000,
            false
        ));
        // Far more words than 1.2 s can hold.
        assert!(looks_degenerate("a b c d e f g h i j", 1_200, false));
        assert!(
            looks_degenerate("Yes.", 800, true),
            "ran into the token cap"
        );
        assert!(!looks_degenerate("Front left.", 1_500, false));
        // A dash or an ellipsis is punctuation, not a changed word.
        assert!(!looks_degenerate(
            "Your call is important — please hold ... thank you.",
            4_000,
            false
        ));
        assert!(!looks_degenerate(
            "Please check the number and dial again.",
            2_600,
            false
        ));
        assert!(!looks_degenerate(
            "And so my fellow Americans, ask not what your country can do for you",
            8_000,
            false
        ));
    }

    #[test]
    fn repetition_loops_collapse() {
        assert_eq!(
            collapse_repeats("thank you thank you thank you"),
            "thank you"
        );
        assert_eq!(
            collapse_repeats("I said no, no, no, no to that"),
            "I said no, to that"
        );
        assert_eq!(
            collapse_repeats("Okay. Okay. Okay. Okay. Okay. Bye."),
            "Okay. Bye."
        );
        // Two copies are speech, not a loop.
        assert_eq!(collapse_repeats("very very good"), "very very good");
        assert_eq!(
            collapse_repeats("ask not what your country can do for you, ask what you can do"),
            "ask not what your country can do for you, ask what you can do"
        );
        assert_eq!(collapse_repeats("a b c a b c a b c d"), "a b c d");
        assert_eq!(collapse_repeats(""), "");
    }

    #[test]
    fn non_speech_and_segment_loops_are_dropped() {
        let cleaned = clean_segments(vec![
            seg("Hello there.", 0.01, Some(0.9)),
            seg("Thank you.", 0.9, Some(0.3)),
            seg("[BLANK_AUDIO]", 0.1, Some(0.9)),
            seg("(music) [applause]", 0.1, Some(0.9)),
            // Confident speech survives a high no-speech probability.
            seg("Loud and clear.", 0.8, Some(0.95)),
            seg("Subscribe now.", 0.1, Some(0.7)),
            seg("Subscribe now.", 0.1, Some(0.7)),
            seg("subscribe now", 0.1, Some(0.7)),
            seg("Subscribe now!", 0.1, Some(0.7)),
            seg("Goodbye.", 0.1, Some(0.9)),
            seg("♪ ♪", 0.1, Some(0.9)),
        ]);
        let texts: Vec<&str> = cleaned.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Hello there.",
                "Loud and clear.",
                "Subscribe now.",
                "Goodbye."
            ]
        );
    }
}
