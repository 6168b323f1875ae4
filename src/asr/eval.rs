//! The real-speech evaluation set (`media-fixtures/eval`) and its scoring:
//! what `benches/asr_eval.rs` and the short-utterance regression test
//! share. Scoring is [`crate::transcript::wer`]'s (numbers and punctuation
//! normalised); a repeat is a word or phrase said three or more times in a
//! row that the reference does not repeat so, the mark of a decoding loop.

use std::path::{Path, PathBuf};

use crate::transcript::wer::{normalize, word_errors, WerStats};

/// One clip of the set, as its manifest row describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub path: PathBuf,
    /// `short` (0.5–3 s) or `long`.
    pub subset: String,
    pub speaker: String,
    pub duration_s: f64,
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl Clip {
    /// Reads `dir/manifest.tsv` (columns named in its header row; `path`,
    /// `subset`, `speaker`, `duration_s`, `reference` are used).
    pub fn load_manifest(dir: &Path) -> Result<Vec<Clip>, EvalError> {
        let path = dir.join("manifest.tsv");
        let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Read {
            path: path.clone(),
            source,
        })?;
        let bad = |line: usize, reason: String| EvalError::Manifest {
            path: path.clone(),
            line,
            reason,
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| bad(1, format!("no `{name}` column")))
        };
        let (p, sub, spk, dur, rf) = (
            col("path")?,
            col("subset")?,
            col("speaker")?,
            col("duration_s")?,
            col("reference")?,
        );
        let mut clips = Vec::new();
        for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let get = |k: usize| {
                f.get(k)
                    .copied()
                    .ok_or_else(|| bad(i + 2, format!("{} fields, column {k} missing", f.len())))
            };
            clips.push(Clip {
                path: dir.join(get(p)?),
                subset: get(sub)?.to_string(),
                speaker: get(spk)?.to_string(),
                duration_s: get(dur)?
                    .parse()
                    .map_err(|_| bad(i + 2, "duration_s is not a number".into()))?,
                reference: get(rf)?.to_string(),
            });
        }
        Ok(clips)
    }

    /// `per_subset` clips of each subset, evenly spread over the manifest's
    /// order (which groups sources and speakers), so a slice keeps the
    /// set's mix; 0 takes every clip.
    pub fn slice(clips: &[Clip], per_subset: usize) -> Vec<Clip> {
        if per_subset == 0 {
            return clips.to_vec();
        }
        let mut subsets: Vec<&str> = clips.iter().map(|c| c.subset.as_str()).collect();
        subsets.sort_unstable();
        subsets.dedup();
        let mut out = Vec::new();
        for s in subsets {
            let of: Vec<&Clip> = clips.iter().filter(|c| c.subset == s).collect();
            let n = per_subset.min(of.len());
            for k in 0..n {
                out.push(of[k * of.len() / n].clone());
            }
        }
        out
    }
}

/// WER over many clips: edits and reference words summed (not a mean of
/// per-clip rates, which would let one-word clips dominate).
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub clips: usize,
    pub stats: WerStats,
    /// Clips whose hypothesis has a repeat the reference lacks.
    pub repeats: usize,
    pub audio_s: f64,
    /// Decoding time, where the path has one to measure.
    pub elapsed_s: f64,
}

impl Score {
    pub fn add(&mut self, reference: &str, hypothesis: &str, audio_s: f64, elapsed_s: f64) {
        let s = word_errors(reference, hypothesis);
        self.clips += 1;
        self.stats.substitutions += s.substitutions;
        self.stats.deletions += s.deletions;
        self.stats.insertions += s.insertions;
        self.stats.reference_words += s.reference_words;
        self.repeats += usize::from(has_new_repeat(reference, hypothesis));
        self.audio_s += audio_s;
        self.elapsed_s += elapsed_s;
    }

    pub fn wer(&self) -> f64 {
        self.stats.wer()
    }

    /// Audio seconds per second of decoding.
    pub fn real_time_factor(&self) -> f64 {
        self.audio_s / self.elapsed_s.max(1e-9)
    }
}

/// The longest phrase looked for in repeats.
const MAX_REPEAT_WORDS: usize = 4;

/// Whether `hypothesis` says a word or phrase (up to four words) three or
/// more times where `reference` says it fewer times — at least two fewer,
/// so one misheard extra "the" in a long read is not a loop. Catches loops
/// in any order ("front, left, left, front, left, front…"), not only
/// back-to-back ones.
pub fn has_new_repeat(reference: &str, hypothesis: &str) -> bool {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    let (r, h) = (counts(&r), counts(&h));
    h.iter()
        .any(|(phrase, &n)| n >= 3 && n >= r.get(phrase).copied().unwrap_or(0) + 2)
}

/// How often each phrase of one to [`MAX_REPEAT_WORDS`] words occurs.
fn counts(text: &str) -> std::collections::HashMap<Vec<&str>, usize> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = std::collections::HashMap::new();
    for n in 1..=MAX_REPEAT_WORDS {
        for w in words.windows(n) {
            *out.entry(w.to_vec()).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_repeats_the_reference_lacks() {
        // The loop users saw, in no back-to-back order.
        assert!(has_new_repeat(
            "front left",
            "Front, left, left, front, left, front, left, left, front, left,"
        ));
        assert!(has_new_repeat("yes", "yes yes yes"));
        assert!(!has_new_repeat("yes", "yes yes"));
        // Digits read out: the reference says them as often.
        assert!(!has_new_repeat("five five five one two", "555-12"));
        assert!(has_new_repeat("five one two", "5 5 5 5 1 2"));
        // Ordinary speech repeats its little words; one extra is no loop.
        let read = "the cat and the dog saw the bird";
        assert!(!has_new_repeat(
            read,
            "the cat and the dog saw the the bird"
        ));
        assert!(!has_new_repeat("", ""));
    }

    #[test]
    fn scores_sum_words_not_rates() {
        let mut s = Score::default();
        s.add("one two three four", "one two three four", 2.0, 0.5);
        s.add("yes", "no", 1.0, 0.5);
        assert_eq!(
            (s.clips, s.stats.errors(), s.stats.reference_words),
            (2, 1, 5)
        );
        assert!((s.wer() - 0.2).abs() < 1e-12);
        assert!((s.real_time_factor() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_manifest_loads_and_slices_keep_each_subset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("media-fixtures/eval");
        let clips = Clip::load_manifest(&dir).unwrap();
        assert!(clips.len() >= 100, "{}", clips.len());
        assert!(clips
            .iter()
            .all(|c| c.path.exists() && !c.reference.is_empty()));
        let minutes: f64 = clips.iter().map(|c| c.duration_s).sum::<f64>() / 60.0;
        assert!(minutes >= 10.0, "{minutes:.1} min");
        let mut speakers: Vec<&str> = clips.iter().map(|c| c.speaker.as_str()).collect();
        speakers.sort_unstable();
        speakers.dedup();
        assert!(speakers.len() >= 10, "{speakers:?}");
        let slice = Clip::slice(&clips, 5);
        assert_eq!(slice.iter().filter(|c| c.subset == "short").count(), 5);
        assert_eq!(slice.iter().filter(|c| c.subset == "long").count(), 5);
        assert_eq!(Clip::slice(&clips, 0).len(), clips.len());
    }
}
