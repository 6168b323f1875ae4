//! Extractive call summary, computed locally from a call's final segments
//! when the call ends.
//!
//! Extractive and rule-based on purpose: it needs no model or network, the
//! same finals always give the same summary (so it can be stored and
//! re-derived after a batch re-transcription), and every line it shows was
//! actually said on the call, so it cannot invent a commitment.
//!
//! - **reason**: the caller's first sentence that states intent ("I'm calling
//!   about…", "I need…", "my router isn't…"), else the caller's first
//!   substantive sentence;
//! - **key sentences**: TF-IDF-like salience (sentences as documents, the
//!   call as corpus) with length, position and confidence priors; up to
//!   [`MAX_KEY_SENTENCES`], no near-duplicates, in call order;
//! - **action items**: commitments and requests ("I'll…", "please…", "can
//!   you…", "call back", "send", "schedule"), minus the phatic ones ("can
//!   you hear me", "please hold", "let me check");
//! - **keywords**: frequent content words, and content bigrams said at least
//!   twice ("duplicate charge"), stopwords and fillers removed.
//!
//! Whisper output is taken as it comes: with or without punctuation, with
//! repeated words, hallucinated loops ("Thank you. Thank you.") and
//! bracketed tags (`[BLANK_AUDIO]`, or `[CARD]` from redaction), which are
//! kept in the text but never scored. Ordered collections only (`BTreeMap`,
//! sorts with tie-breaks), so the output never depends on hash order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::asr::live::FinalSegment;
use crate::media::Track;
use crate::transcript::words;

/// Most key sentences in a summary (fewer for short calls).
pub const MAX_KEY_SENTENCES: usize = 5;
/// Most keywords in a summary.
pub const MAX_KEYWORDS: usize = 10;
/// Most action items in a summary (a runaway call should not flood it).
pub const MAX_ACTION_ITEMS: usize = 10;
/// Longest sentence text kept in a summary; an unpunctuated Whisper segment
/// can be one very long "sentence".
const MAX_TEXT_CHARS: usize = 300;
/// Two key sentences sharing this much of their content words say the same.
const NEAR_DUPLICATE: f64 = 0.6;

/// A salient sentence, with who said it and when (call time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySentence {
    pub track: Track,
    pub start_ms: u64,
    pub text: String,
}

/// A commitment or request, as the whole sentence that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionItem {
    pub track: Track,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    /// Why the caller called, as they said it.
    pub reason: Option<String>,
    pub key_sentences: Vec<KeySentence>,
    pub action_items: Vec<ActionItem>,
    /// Lowercase content words and bigrams, most salient first.
    pub keywords: Vec<String>,
    pub caller_words: usize,
    pub agent_words: usize,
    /// End of the last speech in call time (the timeline starts at 0). The
    /// media layer knows the full call length; this is what was transcribed.
    pub duration_ms: u64,
}

impl CallSummary {
    /// A plain-text rendering for agents and CRM notes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Reason: {}",
            self.reason.as_deref().unwrap_or("not stated")
        );
        if !self.key_sentences.is_empty() {
            out.push_str("Key points:\n");
            for k in &self.key_sentences {
                let _ = writeln!(
                    out,
                    "  [{} {}] {}",
                    clock(k.start_ms),
                    k.track.as_str(),
                    k.text
                );
            }
        }
        if !self.action_items.is_empty() {
            out.push_str("Action items:\n");
            for a in &self.action_items {
                let _ = writeln!(out, "  - ({}) {}", a.track.as_str(), a.text);
            }
        }
        if !self.keywords.is_empty() {
            let _ = writeln!(out, "Keywords: {}", self.keywords.join(", "));
        }
        let _ = writeln!(
            out,
            "Talk: caller {} words, agent {} words; duration {}",
            self.caller_words,
            self.agent_words,
            clock(self.duration_ms)
        );
        out
    }
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// [`summarize`] as the JSON stored with a transcript; every path that
/// stores a transcript stores this.
pub fn summary_json(segments: &[FinalSegment]) -> serde_json::Value {
    serde_json::to_value(summarize(segments)).unwrap_or(serde_json::Value::Null)
}

/// Summarizes a call from its final segments (any order; both tracks).
pub fn summarize(segments: &[FinalSegment]) -> CallSummary {
    let lex = lexicon();
    // Call order; full tie-breaks so the input order never matters.
    let mut order: Vec<&FinalSegment> = segments.iter().collect();
    order.sort_by(|a, b| {
        (a.start_ms, a.track, a.end_ms)
            .cmp(&(b.start_ms, b.track, b.end_ms))
            .then_with(|| a.text.cmp(&b.text))
    });

    let mut summary = CallSummary::default();
    let mut sentences: Vec<Sentence> = Vec::new();
    // Whisper loops on silence ("Thank you. Thank you."): a sentence equal to
    // the same track's previous one is dropped.
    let mut last_key: [Option<String>; 2] = [None, None];
    for seg in order {
        summary.duration_ms = summary.duration_ms.max(seg.end_ms.max(seg.start_ms));
        let words = seg
            .text
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        match seg.track {
            Track::Caller => summary.caller_words += words,
            Track::Agent => summary.agent_words += words,
        }
        let total_chars = seg.text.chars().count().max(1);
        let span = seg.end_ms.saturating_sub(seg.start_ms);
        for (offset, raw) in split_sentences(&seg.text) {
            // Sentences inside a segment are placed by their share of its text.
            let into = (u128::from(span) * offset as u128 / total_chars as u128) as u64;
            let Some(s) = Sentence::new(lex, seg.track, seg.start_ms + into, raw, seg.confidence)
            else {
                continue;
            };
            let last = &mut last_key[seg.track.index()];
            if last.as_deref() == Some(s.key.as_str()) {
                continue;
            }
            *last = Some(s.key.clone());
            sentences.push(s);
        }
    }

    summary.reason = sentences
        .iter()
        .filter(|s| s.track == Track::Caller)
        .find(|s| states_intent(&s.norm))
        .or_else(|| {
            sentences
                .iter()
                .find(|s| s.track == Track::Caller && is_substantive(s))
        })
        .map(|s| clip(&s.text));
    summary.key_sentences = key_sentences(lex, &sentences);
    summary.action_items = action_items(&sentences);
    summary.keywords = keywords(lex, &sentences);
    summary
}

// ---- sentences ----------------------------------------------------------

/// One content word: its stem (for counting), as said (for display), and
/// where it sits in `Sentence::norm` (for bigrams).
#[derive(Debug, Clone)]
struct Content {
    stem: String,
    surface: String,
    pos: usize,
}

#[derive(Debug, Clone)]
struct Sentence {
    track: Track,
    start_ms: u64,
    /// As said, whitespace normalised.
    text: String,
    /// Lowercase words joined, for duplicate checks.
    key: String,
    /// Lowercase words, contractions expanded, fillers dropped, repeats
    /// collapsed: what the phrase patterns match on.
    norm: Vec<String>,
    content: Vec<Content>,
    words: usize,
    question: bool,
    confidence: f64,
    /// How much the sentence's words count towards keywords and salience:
    /// nothing for greeting boilerplate ("thank you for calling Acme, my
    /// name is Sarah"), half for backchannel-length lines ("Hi Sarah.").
    weight: f64,
}

impl Sentence {
    fn new(
        lex: &Lexicon,
        track: Track,
        start_ms: u64,
        raw: &str,
        confidence: Option<f32>,
    ) -> Option<Self> {
        let raw_words = words(raw);
        if raw_words.is_empty() {
            return None;
        }
        let norm = expand(&raw_words);
        let mut content: Vec<Content> = Vec::new();
        for (pos, w) in norm.iter().enumerate() {
            if !lex.is_content(w) {
                continue;
            }
            let stem = stem(w);
            if lex.stop.contains(stem.as_str()) || content.last().is_some_and(|c| c.stem == stem) {
                continue;
            }
            content.push(Content {
                stem,
                surface: w.clone(),
                pos,
            });
        }
        let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        let question = text
            .trim_end_matches(|c: char| is_closer(c) || c == '.' || c == '!')
            .ends_with(['?', '？']);
        let confidence = confidence
            .map(f64::from)
            .filter(|c| c.is_finite())
            .map_or(1.0, |c| c.clamp(0.0, 1.0));
        let words = text
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        let weight = if is_introduction(&norm) && !states_intent(&norm) {
            0.0
        } else if words < 4 {
            0.5
        } else {
            1.0
        };
        Some(Self {
            track,
            start_ms,
            words,
            weight,
            key: raw_words.join(" "),
            text,
            norm,
            content,
            question,
            confidence,
        })
    }

    fn stems(&self) -> BTreeSet<&str> {
        self.content.iter().map(|c| c.stem.as_str()).collect()
    }
}

fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | '…' | '。' | '？' | '！')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»')
}

/// Abbreviations whose '.' does not end a sentence.
static ABBREVIATIONS: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/abbreviations.txt")).collect());

/// Splits text into sentences at `.` `?` `!` (and `…` `。` `？` `！`) followed
/// by a space or the end. A '.' followed by a lowercase word, or after a
/// known abbreviation, does not split: Whisper capitalises sentence starts,
/// so "a.m. and", "e.g. this", "3.5", "john.smith" stay whole. Returns each
/// sentence with its char offset in `text`.
fn split_sentences(text: &str) -> Vec<(usize, &str)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let (mut start_byte, mut start_char) = (0, 0);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if !is_terminal(c) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < chars.len() && (is_terminal(chars[j].1) || is_closer(chars[j].1)) {
            j += 1;
        }
        let run = &chars[i..j];
        let mut split = j == chars.len()
            || chars[j].1.is_whitespace()
            || run.iter().any(|&(_, c)| matches!(c, '。' | '？' | '！'));
        let dots_only = run
            .iter()
            .all(|&(_, c)| !matches!(c, '?' | '!' | '？' | '！'));
        if split && dots_only && j < chars.len() {
            let next = chars[j..]
                .iter()
                .map(|&(_, c)| c)
                .find(|c| !c.is_whitespace());
            if next.is_some_and(char::is_lowercase) || abbreviation_before(&chars, i) {
                split = false;
            }
        }
        if split {
            let end = chars.get(j).map_or(text.len(), |&(b, _)| b);
            out.push((start_char, &text[start_byte..end]));
            start_byte = end;
            start_char = j;
        }
        i = j;
    }
    if start_byte < text.len() {
        out.push((start_char, &text[start_byte..]));
    }
    out
}

fn abbreviation_before(chars: &[(usize, char)], dot: usize) -> bool {
    let mut word: Vec<char> = chars[..dot]
        .iter()
        .rev()
        .map(|&(_, c)| c)
        .take_while(|c| c.is_alphanumeric() || *c == '.')
        .take(8)
        .collect();
    word.reverse();
    let word: String = word.into_iter().collect::<String>().to_lowercase();
    ABBREVIATIONS.contains(&word.as_str())
}

/// Lowercase words (letters, digits, inner apostrophes). Bracketed tags
/// (`[BLANK_AUDIO]`, `[CARD]`) are skipped: they are markup, not speech.
fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '[' {
            if let Some(len) = chars[i + 1..].iter().take(40).position(|&d| d == ']') {
                flush(&mut cur, &mut out);
                i += len + 2;
                continue;
            }
        }
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if matches!(c, '\'' | '’')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|d| d.is_alphanumeric())
        {
            cur.push('\'');
        } else {
            flush(&mut cur, &mut out);
        }
        i += 1;
    }
    flush(&mut cur, &mut out);
    out
}

fn flush(cur: &mut String, out: &mut Vec<String>) {
    if !cur.is_empty() {
        out.push(std::mem::take(cur));
    }
}

/// Fillers that carry nothing and get between the words of a pattern
/// ("I just really need…").
static FILLERS: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/fillers.txt")).collect());

/// Expands contractions so patterns see "i am", "can not", "will"; drops
/// fillers; collapses Whisper's repeated words ("my my my").
fn expand(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(words.len() + 4);
    let mut push = |w: &str| {
        if FILLERS.contains(&w) || out.last().is_some_and(|l| l == w) {
            return;
        }
        out.push(w.to_string());
    };
    for w in words {
        let w = w.as_str();
        let fixed: Option<&[&str]> = match w {
            "im" | "i'm" => Some(&["i", "am"]),
            "gonna" => Some(&["going", "to"]),
            "wanna" => Some(&["want", "to"]),
            "gotta" => Some(&["got", "to"]),
            "cannot" | "can't" | "cant" => Some(&["can", "not"]),
            "won't" | "wont" => Some(&["will", "not"]),
            // Whisper sometimes drops apostrophes; only the unambiguous
            // ones are expanded ("its", "were", "well", "id" are words).
            "ill" => Some(&["i", "will"]),
            "ive" => Some(&["i", "have"]),
            "youre" => Some(&["you", "are"]),
            "youll" => Some(&["you", "will"]),
            "youve" => Some(&["you", "have"]),
            "weve" => Some(&["we", "have"]),
            "theyre" => Some(&["they", "are"]),
            "theyll" => Some(&["they", "will"]),
            "thats" => Some(&["that", "is"]),
            "theres" => Some(&["there", "is"]),
            "whats" => Some(&["what", "is"]),
            "dont" => Some(&["do", "not"]),
            "didnt" => Some(&["did", "not"]),
            "doesnt" => Some(&["does", "not"]),
            "isnt" => Some(&["is", "not"]),
            "arent" => Some(&["are", "not"]),
            "wasnt" => Some(&["was", "not"]),
            "werent" => Some(&["were", "not"]),
            "hasnt" => Some(&["has", "not"]),
            "havent" => Some(&["have", "not"]),
            "couldnt" => Some(&["could", "not"]),
            "wouldnt" => Some(&["would", "not"]),
            "shouldnt" => Some(&["should", "not"]),
            "let's" => Some(&["let", "us"]),
            _ => None,
        };
        if let Some(parts) = fixed {
            parts.iter().for_each(|p| push(p));
            continue;
        }
        let suffixes: [(&str, &str); 6] = [
            ("n't", "not"),
            ("'ll", "will"),
            ("'re", "are"),
            ("'ve", "have"),
            ("'m", "am"),
            ("'d", "would"),
        ];
        if let Some((stem, full)) = suffixes
            .iter()
            .find_map(|(suf, full)| w.strip_suffix(suf).map(|s| (s, *full)))
            .filter(|(s, _)| !s.is_empty())
        {
            push(stem);
            push(full);
        } else if let Some(stem) = w.strip_suffix("'s").filter(|s| !s.is_empty()) {
            // "it's" is "it is"; "customer's" is a possessive.
            push(stem);
            if matches!(
                stem,
                "it" | "that" | "there" | "here" | "what" | "he" | "she" | "who" | "where"
            ) {
                push("is");
            }
        } else {
            push(w);
        }
    }
    out
}

/// Folds plurals so "charge" and "charges" count together.
fn stem(w: &str) -> String {
    if w.chars().count() > 4 {
        if let Some(s) = w.strip_suffix("ies") {
            return format!("{s}y");
        }
        // "fixes", "addresses", "batches": the "es" goes too.
        if let Some(s) = w.strip_suffix("es") {
            if ["s", "x", "z", "ch", "sh"].iter().any(|e| s.ends_with(e)) {
                return s.to_string();
            }
        }
    }
    if w.chars().count() > 3
        && w.ends_with('s')
        && !["ss", "us", "is", "os"].iter().any(|s| w.ends_with(s))
    {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX_TEXT_CHARS).collect();
    // Back to a word boundary when there is one nearby.
    let cut = match cut.rfind(' ') {
        Some(i) if i > MAX_TEXT_CHARS / 2 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}

// ---- phrase patterns ----------------------------------------------------

/// Whether `seq` occurs in `n` at `at` (entries with `|` are alternatives).
fn seq_at(n: &[String], at: usize, seq: &[&str]) -> bool {
    seq.len() <= n.len().saturating_sub(at)
        && seq
            .iter()
            .zip(&n[at..])
            .all(|(pat, w)| pat.split('|').any(|alt| alt == w))
}

fn positions<'a>(n: &'a [String], seq: &'a [&'a str]) -> impl Iterator<Item = usize> + 'a {
    (0..n.len()).filter(move |&i| seq_at(n, i, seq))
}

fn has(n: &[String], seq: &[&str]) -> bool {
    positions(n, seq).next().is_some()
}

/// The words of `trouble.txt` as one `a|b|…` slot of a phrase.
static TROUBLE: LazyLock<String> = LazyLock::new(|| {
    words::list(include_str!("words/trouble.txt"))
        .collect::<Vec<_>>()
        .join("|")
});

/// A phrase file's phrases, as [`seq_at`] matches them; a `TROUBLE` slot is
/// any word of `trouble.txt`.
fn phrases(text: &'static str) -> Vec<Vec<&'static str>> {
    words::list(text)
        .map(|phrase| {
            phrase
                .split_whitespace()
                .map(|slot| {
                    if slot == "TROUBLE" {
                        TROUBLE.as_str()
                    } else {
                        slot
                    }
                })
                .collect()
        })
        .collect()
}

/// "I'm calling about…", "I need…", "my X isn't…", "I have a problem…".
fn states_intent(n: &[String]) -> bool {
    static SUBJECT_PHRASES: LazyLock<Vec<Vec<&str>>> =
        LazyLock::new(|| phrases(include_str!("words/intent_after_subject.txt")));
    static PHRASES: LazyLock<Vec<Vec<&str>>> =
        LazyLock::new(|| phrases(include_str!("words/intent_phrases.txt")));
    static ABOUT: LazyLock<Vec<&str>> =
        LazyLock::new(|| words::list(include_str!("words/calling_about.txt")).collect());
    // "The reason I'm calling is…"
    let reason = n.iter().position(|w| w == "reason");
    for (i, w) in n.iter().enumerate() {
        let hit = match w.as_str() {
            "calling" | "called" => {
                let next = n.get(i + 1).map_or("", String::as_str);
                ABOUT.contains(&next) || reason.is_some_and(|r| r < i)
            }
            "i" | "we" => SUBJECT_PHRASES.iter().any(|p| seq_at(n, i + 1, p)),
            "my" | "our" => my_thing_is(n, i),
            _ => false,
        };
        if hit {
            return true;
        }
    }
    PHRASES.iter().any(|p| has(n, p))
}

/// Words after "my" that introduce identification, not a problem ("my name
/// is…", "my account number is…").
static IDENTITY: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/identity.txt")).collect());

/// "my <thing> is/isn't/has/keeps/stopped…" with a non-identity thing.
fn my_thing_is(n: &[String], my: usize) -> bool {
    static VERBS: LazyLock<Vec<&str>> =
        LazyLock::new(|| words::list(include_str!("words/my_thing_verbs.txt")).collect());
    let lex = lexicon();
    for k in 1..=3 {
        let Some(w) = n.get(my + k) else { return false };
        if VERBS.contains(&w.as_str()) {
            return k > 1;
        }
        if IDENTITY.contains(&w.as_str()) || !lex.is_content(w) {
            return false;
        }
    }
    false
}

/// Greeting and identification boilerplate: "Thank you for calling Acme,
/// my name is Sarah", "Hi, this is John Smith".
fn is_introduction(n: &[String]) -> bool {
    static GREETING: LazyLock<Vec<&str>> =
        LazyLock::new(|| words::list(include_str!("words/greetings.txt")).collect());
    let from = n
        .iter()
        .position(|w| !GREETING.contains(&w.as_str()))
        .unwrap_or(n.len());
    seq_at(n, from, &["this", "is"])
        || (seq_at(n, from, &["it", "is"]) && n.len() - from <= 4)
        || has(n, &["my", "name", "is"])
        || has(n, &["thank|thanks", "you|for", "for|calling"])
}

/// At least four words, two of them content, and not an introduction.
fn is_substantive(s: &Sentence) -> bool {
    s.words >= 4 && s.stems().len() >= 2 && !is_introduction(&s.norm)
}

/// Commitments and requests that are worth following up. Phatic ones ("can
/// you hear me", "please hold", "let me check", "I'll be happy to help")
/// and questions about the past ("did you send it?") are left out.
fn is_action(s: &Sentence) -> bool {
    let n = &s.norm;
    if s.words < 3 {
        return false;
    }
    let next = |i: usize| n.get(i).map_or("", String::as_str);

    let commitment = positions(n, &["i|we|someone|somebody|technician", "will"])
        .any(|i| !seq_at(n, i + 2, &["be", "happy|glad|right|honest|here|with"]))
        || has(n, &["i|we", "am|are", "going", "to"])
        || positions(n, &["let", "me|us"]).any(|i| {
            !matches!(
                next(i + 2),
                "see" | "think" | "check" | "look" | "pull" | "ask" | "put" | "transfer" | "get"
            )
        });
    let please = positions(n, &["please"]).any(|i| !matches!(next(i + 1), "hold" | "wait"));
    let request = (please && !s.question)
        || positions(n, &["can|could|would|will", "you"]).any(|i| {
            let verb = if next(i + 2) == "please" {
                next(i + 3)
            } else {
                next(i + 2)
            };
            !matches!(
                verb,
                "hear"
                    | "repeat"
                    | "say"
                    | "spell"
                    | "hold"
                    | "tell"
                    | "confirm"
                    | "verify"
                    | "give"
                    | "read"
                    | "provide"
                    | "like"
                    | "see"
                    | ""
            )
        });
    let obligation = has(n, &["you", "need|have", "to"])
        || has(n, &["you", "must|should"])
        || has(n, &["you", "will", "need|have", "to"])
        || has(n, &["make", "sure"]);
    // Follow-up words count in statements that are not negated.
    static FOLLOW_UP: LazyLock<Vec<Vec<&str>>> =
        LazyLock::new(|| phrases(include_str!("words/follow_up.txt")));
    let follow_up = FOLLOW_UP.iter().flat_map(|p| positions(n, p)).any(|i| {
        !n[i.saturating_sub(2)..i]
            .iter()
            .any(|w| w == "not" || w == "never")
    }) && !s.question;
    commitment || request || obligation || follow_up
}

fn action_items(sentences: &[Sentence]) -> Vec<ActionItem> {
    let mut seen = BTreeSet::new();
    sentences
        .iter()
        .filter(|s| is_action(s))
        .filter(|s| seen.insert(s.key.clone()))
        .take(MAX_ACTION_ITEMS)
        .map(|s| ActionItem {
            track: s.track,
            text: clip(&s.text),
        })
        .collect()
}

// ---- salience -----------------------------------------------------------

fn key_sentences(lex: &Lexicon, sentences: &[Sentence]) -> Vec<KeySentence> {
    let n = sentences.len();
    let mut count: BTreeMap<&str, f64> = BTreeMap::new();
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    let stems: Vec<BTreeSet<&str>> = sentences
        .iter()
        .map(|s| {
            if s.weight > 0.0 {
                s.stems()
            } else {
                BTreeSet::new()
            }
        })
        .collect();
    for (s, set) in sentences.iter().zip(&stems) {
        for c in &s.content {
            *count.entry(c.stem.as_str()).or_default() += s.weight;
        }
        for stem in set {
            *df.entry(stem).or_default() += 1;
        }
    }
    // Frequent in the call (tf), but not in every sentence (idf).
    let weight = |stem: &str| {
        let tf = count.get(stem).copied().unwrap_or(0.0);
        let df = df.get(stem).copied().unwrap_or(1).max(1) as f64;
        (1.0 + tf).ln() * (1.0 + (n as f64 / df).ln()) * lex.weight(stem)
    };
    let mut scored: Vec<(f64, usize)> = Vec::new();
    for (i, (s, set)) in sentences.iter().zip(&stems).enumerate() {
        if set.is_empty() {
            continue;
        }
        let sum: f64 = set.iter().map(|st| weight(st)).sum();
        let base = sum / (set.len() as f64).sqrt();
        // Very short lines say little; very long ones are usually run-on
        // unpunctuated segments.
        let length = match s.words {
            0..=3 => 0.4,
            4..=5 => 0.75,
            6..=30 => 1.0,
            w => (30.0 / w as f64).sqrt(),
        };
        // The problem is stated early and the resolution late.
        let rel = if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            0.0
        };
        let position = if rel <= 0.2 {
            1.2
        } else if rel >= 0.8 {
            1.1
        } else {
            1.0
        };
        let question = if s.question { 0.8 } else { 1.0 };
        let confidence = 0.5 + 0.5 * s.confidence;
        scored.push((base * length * position * question * confidence, i));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let want = MAX_KEY_SENTENCES.min(scored.len().div_ceil(3).max(1));
    let mut picked: Vec<usize> = Vec::new();
    for &(_, i) in &scored {
        if picked.len() == want {
            break;
        }
        if picked
            .iter()
            .all(|&p| jaccard(&stems[p], &stems[i]) < NEAR_DUPLICATE)
        {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked
        .into_iter()
        .map(|i| KeySentence {
            track: sentences[i].track,
            start_ms: sentences[i].start_ms,
            text: clip(&sentences[i].text),
        })
        .collect()
}

fn jaccard(a: &BTreeSet<&str>, b: &BTreeSet<&str>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// Occurrences of a term and how it was said.
#[derive(Default)]
struct Term {
    /// Occurrences, each counted at its sentence's weight.
    count: f64,
    n: usize,
    first: usize,
    /// Surface form → (count, first position): the display form is the
    /// most frequent, earliest on ties.
    surfaces: BTreeMap<String, (usize, usize)>,
}

impl Term {
    fn add(&mut self, surface: String, at: usize, weight: f64) {
        if self.n == 0 {
            self.first = at;
        }
        self.n += 1;
        self.count += weight;
        self.surfaces.entry(surface).or_insert((0, at)).0 += 1;
    }

    fn display(&self) -> String {
        self.surfaces
            .iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
            .map(|(s, _)| s.clone())
            .unwrap_or_default()
    }
}

fn keywords(lex: &Lexicon, sentences: &[Sentence]) -> Vec<String> {
    let mut unigrams: BTreeMap<&str, Term> = BTreeMap::new();
    let mut bigrams: BTreeMap<(&str, &str), Term> = BTreeMap::new();
    let mut at = 0;
    for s in sentences.iter().filter(|s| s.weight > 0.0) {
        for (k, c) in s.content.iter().enumerate() {
            at += 1;
            unigrams
                .entry(c.stem.as_str())
                .or_default()
                .add(c.surface.clone(), at, s.weight);
            if k > 0 {
                let p = &s.content[k - 1];
                if p.pos + 1 == c.pos && p.stem != c.stem {
                    bigrams
                        .entry((p.stem.as_str(), c.stem.as_str()))
                        .or_default()
                        .add(format!("{} {}", p.surface, c.surface), at, s.weight);
                }
            }
        }
    }
    // (score, first position, text)
    let mut cands: Vec<(f64, usize, String)> = Vec::new();
    // Occurrences a repeated bigram already accounts for.
    let mut explained: BTreeMap<&str, f64> = BTreeMap::new();
    for (&(a, b), t) in &bigrams {
        if t.n < 2 {
            continue;
        }
        let w = lex.weight(a).max(lex.weight(b));
        cands.push((t.count * 1.5 * w, t.first, t.display()));
        *explained.entry(a).or_default() += t.count;
        *explained.entry(b).or_default() += t.count;
    }
    for (&stem, t) in &unigrams {
        let rest = t.count - explained.get(stem).copied().unwrap_or(0.0);
        if rest > 1e-9 {
            cands.push((rest * lex.weight(stem), t.first, t.display()));
        }
    }
    cands.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    let mut seen = BTreeSet::new();
    cands
        .into_iter()
        .filter(|c| seen.insert(c.2.clone()))
        .take(MAX_KEYWORDS)
        .map(|c| c.2)
        .collect()
}

// ---- lexicon ------------------------------------------------------------

struct Lexicon {
    stop: HashSet<&'static str>,
    generic: HashSet<&'static str>,
}

impl Lexicon {
    /// A word worth counting: not a stopword or filler, has a letter, no
    /// digits (numbers are amounts, times or PII, never topics).
    fn is_content(&self, w: &str) -> bool {
        w.chars().count() >= 2
            && w.chars().any(char::is_alphabetic)
            && !w.chars().any(|c| c.is_ascii_digit())
            && !self.stop.contains(w)
            && !FILLERS.contains(&w)
    }

    /// Generic call words (time, account…) count half: they are in every
    /// call and rarely what this one was about.
    fn weight(&self, stem: &str) -> f64 {
        if self.generic.contains(stem) {
            0.5
        } else {
            1.0
        }
    }
}

fn lexicon() -> &'static Lexicon {
    static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| Lexicon {
        stop: words::list(include_str!("words/stopwords.txt")).collect(),
        generic: words::list(include_str!("words/generic.txt")).collect(),
    });
    &LEXICON
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(track: Track, start_ms: u64, end_ms: u64, text: &str) -> FinalSegment {
        FinalSegment {
            track,
            start_ms,
            end_ms,
            text: text.into(),
            confidence: Some(0.9),
        }
    }

    /// Segments from (track, text) lines, 3 s apart.
    fn call(lines: &[(Track, &str)]) -> Vec<FinalSegment> {
        lines
            .iter()
            .enumerate()
            .map(|(i, (t, text))| seg(*t, i as u64 * 3000, i as u64 * 3000 + 2500, text))
            .collect()
    }

    fn sentence(track: Track, text: &str) -> Sentence {
        Sentence::new(lexicon(), track, 0, text, None).expect("has words")
    }

    fn intent(text: &str) -> bool {
        states_intent(&sentence(Track::Caller, text).norm)
    }

    fn action(text: &str) -> bool {
        is_action(&sentence(Track::Agent, text))
    }

    use Track::{Agent, Caller};

    #[test]
    fn the_internet_outage_call() {
        let segs = vec![
            seg(
                Caller,
                1_000,
                5_200,
                "Hi, I'm calling because my internet has been down since Monday.",
            ),
            seg(Agent, 5_800, 7_000, "I'm sorry to hear that."),
            seg(
                Agent,
                7_200,
                10_400,
                "I'll schedule a technician for tomorrow morning.",
            ),
        ];
        let s = summarize(&segs);
        assert_eq!(
            s.reason.as_deref(),
            Some("Hi, I'm calling because my internet has been down since Monday.")
        );
        assert_eq!(
            s.action_items,
            vec![ActionItem {
                track: Agent,
                text: "I'll schedule a technician for tomorrow morning.".into()
            }]
        );
        for k in ["internet", "technician", "monday", "schedule"] {
            assert!(s.keywords.contains(&k.to_string()), "{k}: {:?}", s.keywords);
        }
        for stop in ["i'm", "sorry", "hear", "calling", "hi", "the", "down"] {
            assert!(!s.keywords.contains(&stop.to_string()), "{stop}");
        }
        // Specific words outrank generic time words.
        let pos = |k: &str| s.keywords.iter().position(|x| x == k).unwrap();
        assert!(pos("technician") < pos("tomorrow"));
        assert_eq!(s.key_sentences.len(), 1);
        assert_eq!(s.caller_words, 11);
        assert_eq!(s.agent_words, 12);
        assert_eq!(s.duration_ms, 10_400);
    }

    fn billing_call() -> Vec<FinalSegment> {
        call(&[
            (Agent, "Thank you for calling Acme Telecom, my name is Sarah. How can I help you today?"),
            (Caller, "Hi Sarah. Yeah, so I was looking at my bill and I was charged twice for the same month."),
            (Agent, "I'm sorry about that. Can I have your account number please?"),
            (Caller, "Sure, it's 4 4 7 1 2 9."),
            (Agent, "Thank you. I can see the duplicate charge of $59.99 on your March bill."),
            (Agent, "I'll process a refund for the duplicate charge today."),
            (Caller, "How long will the refund take?"),
            (Agent, "The refund should appear on your card within five to seven business days."),
            (Agent, "I'll also send you a confirmation email with the refund details."),
            (Caller, "Great. Can you also make sure this doesn't happen again next month?"),
            (Agent, "Yes, I've added a note to your account and fixed the autopay settings."),
            (Agent, "If you see another duplicate charge, you should call back and mention ticket 5512."),
            (Caller, "Okay, thank you so much."),
            (Agent, "You're welcome. Is there anything else I can help you with?"),
            (Caller, "No, that's all. Bye."),
        ])
    }

    #[test]
    fn a_billing_call() {
        let s = summarize(&billing_call());
        assert_eq!(
            s.reason.as_deref(),
            Some("Yeah, so I was looking at my bill and I was charged twice for the same month.")
        );
        let actions: Vec<&str> = s.action_items.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "I'll process a refund for the duplicate charge today.",
                "I'll also send you a confirmation email with the refund details.",
                "Can you also make sure this doesn't happen again next month?",
                "If you see another duplicate charge, you should call back and mention ticket 5512.",
            ]
        );
        assert_eq!(s.action_items[2].track, Caller);
        assert_eq!(&s.keywords[..3], ["duplicate charge", "refund", "bill"]);
        // The agent's greeting ("…Acme Telecom, my name is Sarah") is not a topic.
        for name in ["acme", "telecom"] {
            assert!(!s.keywords.contains(&name.to_string()), "{:?}", s.keywords);
        }
        assert!(s.keywords.len() <= MAX_KEYWORDS);
        assert!(s
            .keywords
            .iter()
            .all(|k| !k.chars().any(|c| c.is_ascii_digit())));

        assert!(!s.key_sentences.is_empty() && s.key_sentences.len() <= MAX_KEY_SENTENCES);
        assert!(s
            .key_sentences
            .windows(2)
            .all(|w| w[0].start_ms < w[1].start_ms));
        let texts: Vec<&str> = s.key_sentences.iter().map(|k| k.text.as_str()).collect();
        assert!(texts.iter().any(|t| t.contains("refund")), "{texts:#?}");
        assert!(!texts.iter().any(|t| t.starts_with("Okay, thank you")));
        // Sentences of a multi-sentence segment are placed inside it.
        assert!(s.key_sentences.iter().all(|k| k.start_ms < 45_000));
    }

    #[test]
    fn deterministic_and_order_independent() {
        let segs = billing_call();
        let a = summarize(&segs);
        let mut rev = segs.clone();
        rev.reverse();
        assert_eq!(summarize(&rev), a);
        // Same start on the same track: still independent of input order.
        let tie = [
            seg(Caller, 0, 900, "My modem is broken."),
            seg(Caller, 0, 900, "My router is broken."),
        ];
        let swapped = [tie[1].clone(), tie[0].clone()];
        assert_eq!(summarize(&tie), summarize(&swapped));
        assert_eq!(summarize(&segs), a);
        assert_eq!(summarize(&segs).to_text(), a.to_text());
    }

    #[test]
    fn serializes() {
        let s = summarize(&billing_call());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["key_sentences"][0]["track"].is_string());
        assert_eq!(json["action_items"][0]["track"], "agent");
        assert_eq!(json["caller_words"], s.caller_words);
        let back: CallSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn whisper_without_punctuation() {
        let s = summarize(&call(&[
            (Agent, "thank you for calling how can i help"),
            (
                Caller,
                "yeah hi um im calling about my my my router it keeps dropping the wifi",
            ),
            (Agent, "okay let me check that"),
            (Agent, "ill send a replacement router to your address"),
            (Caller, "thank you thank you thank you"),
        ]));
        assert_eq!(
            s.reason.as_deref(),
            Some("yeah hi um im calling about my my my router it keeps dropping the wifi")
        );
        let actions: Vec<&str> = s.action_items.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(actions, ["ill send a replacement router to your address"]);
        assert_eq!(s.keywords[0], "router");
        assert!(!s
            .keywords
            .iter()
            .any(|k| k == "um" || k == "im" || k == "my"));
    }

    #[test]
    fn whisper_without_apostrophes() {
        let s = summarize(&call(&[
            (Agent, "thanks for calling northwind this is mike"),
            (
                Caller,
                "hi um yeah my order hasnt shown up it was supposed to arrive last tuesday",
            ),
            (
                Agent,
                "okay i see the package was returned because the address was incomplete",
            ),
            (
                Agent,
                "ill update the address and reship the package with express shipping",
            ),
            (Agent, "youll get a tracking email tonight"),
        ]));
        assert_eq!(
            s.reason.as_deref(),
            Some("hi um yeah my order hasnt shown up it was supposed to arrive last tuesday")
        );
        let actions: Vec<&str> = s.action_items.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(
            actions,
            ["ill update the address and reship the package with express shipping"]
        );
        assert_eq!(&s.keywords[..2], ["package", "address"]);
        for not in ["hasnt", "youll", "ill", "northwind", "mike"] {
            assert!(
                !s.keywords.contains(&not.to_string()),
                "{not}: {:?}",
                s.keywords
            );
        }
    }

    #[test]
    fn whisper_loops_and_tags_are_not_scored() {
        let s = summarize(&call(&[
            (Caller, "[BLANK_AUDIO]"),
            (Caller, "My card was declined at the store."),
            (Caller, "Thank you. Thank you. Thank you. Thank you."),
            (Agent, "I see the card ending [CARD] was flagged for fraud."),
            (Agent, "I'll remove the fraud flag now."),
            (Caller, ""),
            (Agent, "   "),
        ]));
        assert_eq!(
            s.reason.as_deref(),
            Some("My card was declined at the store.")
        );
        assert!(!s.keywords.iter().any(|k| k.contains("blank")));
        assert_eq!(&s.keywords[..2], ["card", "fraud"]);
        assert_eq!(s.action_items.len(), 1);
        assert_eq!(s.caller_words, 7 + 8 + 1);
    }

    #[test]
    fn reason_prefers_stated_intent_and_falls_back() {
        // Intent beats an earlier substantive sentence.
        let s = summarize(&call(&[
            (Caller, "Hello?"),
            (Caller, "I have been a customer for ten years now."),
            (Caller, "I'm calling because my bill doubled."),
        ]));
        assert_eq!(
            s.reason.as_deref(),
            Some("I'm calling because my bill doubled.")
        );
        // The agent's phrasing never counts as the caller's reason.
        let s = summarize(&call(&[
            (Agent, "I want to make sure I have the right account."),
            (Caller, "Hi, this is John Smith."),
            (Caller, "The modem light is blinking orange all night."),
        ]));
        assert_eq!(
            s.reason.as_deref(),
            Some("The modem light is blinking orange all night.")
        );
        let s = summarize(&call(&[
            (Caller, "Hello."),
            (Caller, "Yes."),
            (Agent, "Hi there, I need your account number."),
        ]));
        assert_eq!(s.reason, None);
    }

    #[test]
    fn intent_patterns() {
        for yes in [
            "I need to reset my password.",
            "I would like to cancel my subscription.",
            "I'd like to upgrade my plan.",
            "My package hasn't arrived yet.",
            "My internet isn't working.",
            "I have a question about my bill.",
            "I've got a problem with my router.",
            "I'm calling to cancel.",
            "I'm calling regarding an order.",
            "The reason I'm calling is my card was declined.",
            "I can't log in to the app.",
            "We were charged twice.",
            "I was wondering if you could help me.",
            "The app is not working on my phone.",
            "There's an issue with my order.",
            "I never received the refund.",
            "im trying to pay my bill",
        ] {
            assert!(intent(yes), "{yes}");
        }
        for no in [
            "My name is John Smith.",
            "My account number is 12345.",
            "My email address is on file.",
            "I'm doing well, thanks.",
            "Yeah, that's right.",
            "Hello, can you hear me?",
            "It was a long day.",
        ] {
            assert!(!intent(no), "{no}");
        }
    }

    #[test]
    fn action_patterns() {
        for yes in [
            "I'll email you the form tonight.",
            "We'll follow up next week.",
            "Let me know if that works for you.",
            "Please restart your router and wait five minutes.",
            "You need to bring a photo ID.",
            "You should receive it by Friday.",
            "Can you send me a copy of the invoice?",
            "Someone will call you back tomorrow.",
            "I'm going to escalate this to billing.",
            "We can schedule the install for Tuesday.",
            "Make sure the modem is plugged in.",
            "I will send the form.",
        ] {
            assert!(action(yes), "{yes}");
        }
        for no in [
            "Can you hear me?",
            "Please hold.",
            "Please hold while I look that up.",
            "Let me check.",
            "Let me see what I can do.",
            "I'll be happy to help you with that.",
            "Did you send the payment?",
            "I sent it yesterday.",
            "Would you like anything else?",
            "Thanks.",
            "Can I have your account number please?",
            "Can you confirm your address?",
            "You didn't send me anything.",
            "My internet has been down since Monday.",
        ] {
            assert!(!action(no), "{no}");
        }
    }

    #[test]
    fn key_sentences_are_capped_ordered_and_distinct() {
        let mut lines: Vec<(Track, String)> = Vec::new();
        let topics = [
            "router",
            "invoice",
            "refund",
            "password",
            "antenna",
            "voicemail",
            "roaming",
            "upgrade",
            "firmware",
            "warranty",
        ];
        for (i, t) in topics.iter().enumerate() {
            let track = if i % 2 == 0 { Caller } else { Agent };
            lines.push((
                track,
                format!("The {t} problem started when the {t} settings changed last week."),
            ));
            lines.push((
                track,
                format!("The {t} problem started when the {t} settings changed last week!"),
            ));
            lines.push((track, "Okay.".into()));
            lines.push((track, format!("So the {t} is the issue here.")));
        }
        let lines: Vec<(Track, &str)> = lines.iter().map(|(t, s)| (*t, s.as_str())).collect();
        let s = summarize(&call(&lines));
        assert_eq!(s.key_sentences.len(), MAX_KEY_SENTENCES);
        assert!(s
            .key_sentences
            .windows(2)
            .all(|w| w[0].start_ms < w[1].start_ms));
        for (i, a) in s.key_sentences.iter().enumerate() {
            for b in &s.key_sentences[i + 1..] {
                let (sa, sb) = (sentence(a.track, &a.text), sentence(b.track, &b.text));
                assert!(
                    jaccard(&sa.stems(), &sb.stems()) < NEAR_DUPLICATE,
                    "{} / {}",
                    a.text,
                    b.text
                );
            }
            assert_ne!(a.text, "Okay.");
        }
    }

    #[test]
    fn near_duplicates_collapse() {
        let s = summarize(&call(&[
            (Caller, "My router keeps rebooting every hour."),
            (Caller, "My router keeps rebooting every single hour."),
            (
                Caller,
                "My router keeps rebooting every hour, it's annoying.",
            ),
            (Agent, "A firmware update fixes the reboot loop."),
            (Agent, "I'll push the firmware update tonight."),
            (Agent, "The update takes ten minutes."),
        ]));
        let routers = s
            .key_sentences
            .iter()
            .filter(|k| k.text.contains("router"))
            .count();
        assert!(routers <= 1, "{:#?}", s.key_sentences);
        assert_eq!(s.key_sentences.len(), 2);
    }

    #[test]
    fn empty_and_degenerate_input() {
        let s = summarize(&[]);
        assert_eq!(s, CallSummary::default());
        assert_eq!(
            s.to_text(),
            "Reason: not stated\nTalk: caller 0 words, agent 0 words; duration 0:00\n"
        );
        let s = summarize(&[
            seg(Caller, 5_000, 1_000, ""),
            seg(Agent, u64::MAX - 5, u64::MAX, "... ??? !!!"),
            seg(Caller, 0, 0, "[BLANK_AUDIO]"),
        ]);
        assert_eq!(s.reason, None);
        assert!(s.key_sentences.is_empty() && s.action_items.is_empty() && s.keywords.is_empty());
        assert_eq!(s.duration_ms, u64::MAX);
        assert_eq!(s.caller_words, 1);
    }

    #[test]
    fn odd_unicode_and_huge_input_never_panic() {
        let weird = [
            "🙂🙂🙂 My 📦 never arrived!!! 😡",
            "Ça ne marche pas. Mon modem est en panne.",
            "لقد تم قطع الإنترنت. أحتاج المساعدة؟",
            "インターネットが使えません。助けてください！",
            "e\u{301}\u{301}\u{301} [ [[ ]] ] [unterminated",
            "\u{200b}\u{feff}\u{0}\t\n\r",
            "'''' ’’’ it’s my router’s fault’",
            "Dr. Who called at 3.5 p.m. e.g. today… OK?!",
            "a.b.c.d.e.f.g",
            "I'll I'll I'll I'll",
        ];
        let segs: Vec<FinalSegment> = weird
            .iter()
            .enumerate()
            .map(|(i, t)| {
                seg(
                    if i % 2 == 0 { Caller } else { Agent },
                    i as u64,
                    i as u64 + 1,
                    t,
                )
            })
            .collect();
        let s = summarize(&segs);
        let _ = s.to_text();
        let mut confidences = segs.clone();
        for (i, c) in confidences.iter_mut().enumerate() {
            c.confidence = [Some(f32::NAN), Some(-3.0), Some(f32::INFINITY), None][i % 4];
        }
        let _ = summarize(&confidences);

        // 200 kB unpunctuated: one long sentence, clipped for display.
        let huge = "my router keeps dropping the connection every night ".repeat(4_000);
        let s = summarize(&[
            seg(Caller, 0, 3_600_000, &huge),
            seg(Agent, 3_600_000, 3_700_000, &huge),
        ]);
        let reason = s.reason.clone().unwrap();
        assert!(reason.chars().count() <= MAX_TEXT_CHARS + 1);
        assert!(reason.ends_with('…'));
        assert_eq!(s.caller_words, 8 * 4_000);
        assert!(s.to_text().contains("duration 1:01:40"));
        // 20 000 sentences in one segment.
        let punctuated = "Router down. Modem up. ".repeat(10_000);
        let s = summarize(&[seg(Caller, 0, 1, &punctuated)]);
        assert_eq!(s.key_sentences.len(), 2);
    }

    #[test]
    fn sentence_splitting() {
        let split = |t: &str| -> Vec<String> {
            split_sentences(t)
                .into_iter()
                .map(|(_, s)| s.trim().to_string())
                .collect()
        };
        assert_eq!(
            split("Hello. How are you? Fine!"),
            ["Hello.", "How are you?", "Fine!"]
        );
        assert_eq!(split("It's 3.5 GB. Ok"), ["It's 3.5 GB.", "Ok"]);
        assert_eq!(
            split("Mail john.smith@x.com. Done"),
            ["Mail john.smith@x.com.", "Done"]
        );
        assert_eq!(
            split("Dr. Smith called. Then me"),
            ["Dr. Smith called.", "Then me"]
        );
        assert_eq!(
            split("at 10 a.m. and then. So"),
            ["at 10 a.m. and then.", "So"]
        );
        assert_eq!(
            split("Wait... what? Really?!"),
            ["Wait... what?", "Really?!"]
        );
        assert_eq!(
            split("He said \"stop.\" Then left"),
            ["He said \"stop.\"", "Then left"]
        );
        assert_eq!(split("no punctuation at all"), ["no punctuation at all"]);
        assert_eq!(split("助けて。お願い"), ["助けて。", "お願い"]);
        assert!(split("").is_empty());
        let offsets: Vec<usize> = split_sentences("Ab. Cd.")
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(offsets, [0, 3]);
    }

    #[test]
    fn words_and_contractions() {
        assert_eq!(
            words("I’m [CARD] here, it's John's"),
            ["i'm", "here", "it's", "john's"]
        );
        assert_eq!(
            expand(&words(
                "I'm gonna, um, just can't won't John's it's my my router"
            )),
            [
                "i", "am", "going", "to", "can", "not", "will", "not", "john", "it", "is", "my",
                "router"
            ]
        );
        assert_eq!(stem("charges"), "charge");
        assert_eq!(stem("batteries"), "battery");
        assert_eq!(stem("address"), "address");
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("fixes"), "fix");
        assert_eq!(stem("addresses"), "address");
    }

    #[test]
    fn to_text_renders_every_section() {
        let s = summarize(&billing_call());
        let text = s.to_text();
        assert!(text.starts_with("Reason: Yeah, so I was looking at my bill"));
        assert!(text.contains("\nKey points:\n  ["));
        assert!(text.contains("\nAction items:\n  - (agent) I'll process a refund"));
        assert!(text.contains("\nKeywords: duplicate charge, refund, bill"));
        assert!(text.ends_with("duration 0:44\n"), "{text}");
        assert_eq!(clock(61_000), "1:01");
        assert_eq!(clock(3_723_000), "1:02:03");
    }
}
